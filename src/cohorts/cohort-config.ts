/**
 * The cohort and trait sync settings (DESIGN.md "Cohort and trait sync"), read through the same
 * SettingsReader as every other setting, so they are validated, documented in the reference table,
 * and their secrets marked. Called from src/config/config.ts; defaults live here, next to the
 * reading code, as everywhere in the config.
 */
import type { SettingsReader } from '../config/reader.js';
import { COHORT_ID_SOURCES, DEFAULT_COHORT_IDENTIFIERS, type CohortIdRule } from './cohort-identifiers.js';

export type Cadence = 'once' | 'daily' | 'hourly' | 'realtime';
export const CADENCES: readonly Cadence[] = ['once', 'daily', 'hourly', 'realtime'];

export interface CohortSyncSpec {
  cohortId: string;
  cadence: Cadence;
  identifiers: CohortIdRule[];
}

export interface CohortSettings {
  syncs: CohortSyncSpec[];
  identifiers: CohortIdRule[];
  attribute: string;
  transport: 'track' | 'partner';
  partner?: { apiKey: string; dataImportKey: string; partnerName: string };
  downloadBudget: number;
  webhookToken?: string;
  webhookMaxBodyBytes: number;
  webhookMaxUsers: number;
  webhookAckTimeoutMs: number;
  pollBaseMs: number;
  pollMaxMs: number;
  pollTimeoutMs: number;
  downloadAttempts: number;
  apiTimeoutMs: number;
  brazeMaxRetries: number;
  brazeConcurrency: number;
  hourlyIntervalMs: number;
  dailyIntervalMs: number;
  reconcileIntervalMs: number;
  retryFailedRunMs: number;
  traits: {
    properties: string[];
    computations: string[];
    activeDays: number;
    profileApiUrl: string;
    profileRequestsPerMinute: number;
  };
}

export interface NotifySettings {
  webhookUrl?: string;
  smtpUrl?: string;
  emailTo: string[];
  emailFrom: string;
  timeoutMs: number;
  checkIntervalMs: number;
}

/** what readCohortSettings needs from config.ts */
export interface CohortReadDeps {
  /** the OUTBOUND_IDENTIFIERS parser, pointed at COHORT_IDENTIFIERS (config.ts readIdentifierRules) */
  readIdentifiers(spec: {
    env: string;
    path: string;
    yamlList: string;
    def: string;
    doc: string;
    sources: readonly string[];
    fallback: CohortIdRule[];
  }): CohortIdRule[];
  /** parses one YAML identifier list (per-sync identifiers, at YAML path `path`) with the same rules */
  parseIdentifierList(list: unknown[], path: string, sources: readonly string[], fallback: CohortIdRule[]): CohortIdRule[];
  /** the outbound Braze credentials are set */
  brazeOn: boolean;
}

/** `COHORT_ID:CADENCE,...` -> specs; problems reported by name */
export function parseCohortSyncs(text: string, identifiers: CohortIdRule[], problem: (msg: string) => void): CohortSyncSpec[] {
  const out: CohortSyncSpec[] = [];
  const seen = new Set<string>();
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = part.lastIndexOf(':');
    const id = (at === -1 ? part : part.slice(0, at)).trim();
    const cadence = (at === -1 ? 'daily' : part.slice(at + 1).trim().toLowerCase()) as Cadence;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      problem(`entry "${part}": the cohort id must be Amplitude's short id (letters, digits, - and _)`);
      continue;
    }
    if (!CADENCES.includes(cadence)) {
      problem(`entry "${part}": cadence must be one of ${CADENCES.join(', ')}`);
      continue;
    }
    if (seen.has(id)) {
      problem(`cohort ${id} is listed twice`);
      continue;
    }
    seen.add(id);
    out.push({ cohortId: id, cadence, identifiers });
  }
  return out;
}

export function readCohortSettings(r: SettingsReader, d: CohortReadDeps): CohortSettings | undefined {
  const syncsText = r.string('COHORT_SYNCS', {
    path: 'cohorts.syncsInline',
    doc: 'cohorts to keep in Braze: comma list of `COHORT_ID:CADENCE`, cadence once, daily, hourly or realtime (YAML `cohorts.syncs`: a list of `{cohort_id, cadence, identifiers}`); the sync is on when this and the Braze credentials are set',
  });
  const identifiers = d.readIdentifiers({
    env: 'COHORT_IDENTIFIERS',
    path: 'cohorts.identifiersInline',
    yamlList: 'cohorts.identifiers',
    def: 'user_id=external_id,device_id=user_alias:amplitude_device_id',
    doc: 'which Braze identifier a cohort member gets, up to three `source=target` entries in priority order; source `user_id`, `device_id`, `amplitude_id` or `property:NAME`; target as in OUTBOUND_IDENTIFIERS',
    sources: COHORT_ID_SOURCES,
    fallback: DEFAULT_COHORT_IDENTIFIERS,
  });
  const attribute = r.string('COHORT_ATTRIBUTE', { path: 'cohorts.attribute', default: 'amplitude_cohorts', doc: 'the Braze custom attribute (array of strings) that holds the ids of the cohorts a user is in' });
  if (!/^[^$.\s][^.\s]{0,254}$/.test(attribute)) r.problem('COHORT_ATTRIBUTE', 'must be a Braze custom attribute name (no spaces, no `.`, not starting with `$`)');
  const partnerApiKey = r.string('BRAZE_PARTNER_API_KEY', { path: 'cohorts.partner.apiKey', secret: true, doc: 'partner API key Braze issues to a partner; with BRAZE_DATA_IMPORT_KEY, cohorts go through the partner cohort API instead of /users/track' });
  const dataImportKey = r.string('BRAZE_DATA_IMPORT_KEY', { path: 'cohorts.partner.dataImportKey', secret: true, doc: 'the workspace\'s data import key (Partner Integrations > Technology Partners), the partner API\'s client_secret' });
  const partnerName = r.string('BRAZE_PARTNER_NAME', { path: 'cohorts.partner.name', default: 'amplitude', doc: 'path segment of the partner cohort API (`/partners/<name>/cohorts`)' });
  if ((partnerApiKey === undefined) !== (dataImportKey === undefined)) r.problem(partnerApiKey ? 'BRAZE_DATA_IMPORT_KEY' : 'BRAZE_PARTNER_API_KEY', 'the partner transport needs both BRAZE_PARTNER_API_KEY and BRAZE_DATA_IMPORT_KEY');
  const webhookToken = r.string('COHORT_WEBHOOK_TOKEN', { path: 'cohorts.webhookToken', secret: true, doc: 'Bearer token Amplitude\'s cohort webhook destination must send to POST /cohorts; the route is off without it' });
  const settings = {
    attribute,
    downloadBudget: r.int('COHORT_DOWNLOAD_BUDGET', { path: 'cohorts.downloadBudget', default: 500, min: 0, doc: 'cohort exports the gateway may request per calendar month (UTC) for the project (Amplitude: 500, shared by every tool using the key)' }),
    webhookMaxBodyBytes: r.int('COHORT_WEBHOOK_MAX_BODY_BYTES', { path: 'cohorts.webhookMaxBodyBytes', default: 5 * 1024 * 1024, min: 1024, doc: 'largest POST /cohorts body (413 above, refused from Content-Length before reading)' }),
    webhookMaxUsers: r.int('COHORT_WEBHOOK_MAX_USERS', { path: 'cohorts.webhookMaxUsers', default: 10_000, min: 1, doc: 'users in one POST /cohorts batch (413 above; Amplitude sends 1,000 by default)' }),
    webhookAckTimeoutMs: r.int('COHORT_WEBHOOK_ACK_TIMEOUT_MS', { path: 'cohorts.webhookAckTimeoutMs', default: 900, min: 50, doc: 'how long POST /cohorts waits for Kafka before answering 503 (Amplitude wants an answer within about a second)' }),
    pollBaseMs: r.int('COHORT_POLL_BASE_MS', { path: 'cohorts.poll.baseMs', default: 5_000, min: 1, doc: 'first wait between polls of an export job' }),
    pollMaxMs: r.int('COHORT_POLL_MAX_MS', { path: 'cohorts.poll.maxMs', default: 30_000, min: 1, doc: 'longest wait between polls of an export job' }),
    pollTimeoutMs: r.int('COHORT_POLL_TIMEOUT_MS', { path: 'cohorts.poll.timeoutMs', default: 15 * 60_000, min: 10, doc: 'a run whose export is not ready this long after the request fails (the request id is kept for the next run)' }),
    downloadAttempts: r.int('COHORT_DOWNLOAD_ATTEMPTS', { path: 'cohorts.downloadAttempts', default: 3, min: 1, max: 20, doc: 'fetches of an export file within one run before it fails (a re-fetch spends no quota)' }),
    apiTimeoutMs: r.int('COHORT_API_TIMEOUT_MS', { path: 'cohorts.apiTimeoutMs', default: 120_000, min: 100, doc: 'timeout of one Amplitude cohort API call (the file download: between two chunks)' }),
    brazeMaxRetries: r.int('COHORT_BRAZE_MAX_RETRIES', { path: 'cohorts.braze.maxRetries', default: 5, min: 0, doc: 'back-offs (429, 5xx, timeouts) one request may take within a run before the run fails' }),
    brazeConcurrency: r.int('COHORT_BRAZE_CONCURRENCY', { path: 'cohorts.braze.concurrency', default: 8, min: 1, max: 256, doc: 'cohort requests in flight at once (the shared Braze request budget still paces them)' }),
    hourlyIntervalMs: r.int('COHORT_HOURLY_INTERVAL_MS', { path: 'cohorts.hourlyIntervalMs', default: 3_600_000, min: 1_000, doc: 'how often an `hourly` sync without COHORT_WEBHOOK_TOKEN checks the cohort list (it downloads only when lastComputed moved, within the budget); with the webhook it pulls only to reconcile, every COHORT_RECONCILE_INTERVAL_MS' }),
    dailyIntervalMs: r.int('COHORT_DAILY_INTERVAL_MS', { path: 'cohorts.dailyIntervalMs', default: 86_400_000, min: 1_000, doc: 'how often a `daily` sync runs' }),
    reconcileIntervalMs: r.int('COHORT_RECONCILE_INTERVAL_MS', { path: 'cohorts.reconcileIntervalMs', default: 86_400_000, min: 1_000, doc: 'how often a `realtime` sync, and an `hourly` one fed by the webhook, is reconciled with a full export' }),
    retryFailedRunMs: r.int('COHORT_RETRY_FAILED_RUN_MS', { path: 'cohorts.retryFailedRunMs', default: 600_000, min: 100, doc: 'a failed scheduled run is tried again this soon (not waiting for its cadence)' }),
    traits: {
      properties: r.list('TRAIT_PROPERTIES', { path: 'traits.properties', default: [], doc: 'Amplitude user properties kept in Braze as custom attributes of the same name (by user id; sent only when changed)' }),
      computations: r.list('TRAIT_COMPUTATIONS', { path: 'traits.computations', default: [], doc: 'Amplitude computation ids kept in Braze as custom attributes of the same name, read from the User Profile API' }),
      activeDays: r.int('TRAIT_ACTIVE_DAYS', { path: 'traits.activeDays', default: 90, min: 1, doc: 'traits are kept for users active this many days (Amplitude syncs users active in the last 90 days)' }),
      profileApiUrl: r.url('AMPLITUDE_PROFILE_API_URL', { path: 'amplitude.profileApiUrl', default: 'https://profile-api.amplitude.com', doc: 'the User Profile API host (US only)' }) ?? 'https://profile-api.amplitude.com',
      profileRequestsPerMinute: r.int('AMPLITUDE_PROFILE_REQUESTS_PER_MINUTE', { path: 'amplitude.profileRequestsPerMinute', default: 600, min: 1, doc: 'User Profile API calls per minute (Amplitude: 600 per org)' }),
    },
  };
  const ids = settings.traits;
  for (const p of ids.properties) if (!/^[^$.\s][^.\s]{0,254}$/.test(p) || p === attribute) r.problem('TRAIT_PROPERTIES', `"${p}" cannot be a Braze custom attribute name here`);
  for (const c of ids.computations) if (!/^[A-Za-z0-9_-]{1,128}$/.test(c)) r.problem('TRAIT_COMPUTATIONS', `"${c}" is not a computation id`);

  let syncs: CohortSyncSpec[] = [];
  const yamlSyncs = r.yamlAt('cohorts.syncs');
  if (syncsText !== undefined) {
    syncs = parseCohortSyncs(syncsText, identifiers, (m) => r.problem('COHORT_SYNCS', m));
  } else if (Array.isArray(yamlSyncs)) {
    yamlSyncs.forEach((e: unknown, i) => {
      const where = `cohorts.syncs[${i}] (GATEWAY_CONFIG)`;
      const o = (e ?? {}) as Record<string, unknown>;
      const id = o.cohort_id ?? o.cohortId ?? o.id;
      const cadence = String(o.cadence ?? 'daily').toLowerCase() as Cadence;
      if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) return r.problem(where, 'needs cohort_id, Amplitude\'s short cohort id');
      if (!CADENCES.includes(cadence)) return r.problem(where, `cadence must be one of ${CADENCES.join(', ')}`);
      if (syncs.some((s) => s.cohortId === id)) return r.problem(where, `cohort ${id} is listed twice`);
      const own = Array.isArray(o.identifiers) ? d.parseIdentifierList(o.identifiers, `cohorts.syncs[${i}].identifiers`, COHORT_ID_SOURCES, identifiers) : identifiers;
      syncs.push({ cohortId: id, cadence, identifiers: own });
    });
  } else if (yamlSyncs !== undefined && yamlSyncs !== null) {
    r.problem('cohorts.syncs (GATEWAY_CONFIG)', 'must be a list of {cohort_id, cadence, identifiers}');
  }
  if (syncs.length === 0 || !d.brazeOn) return undefined;
  return {
    syncs,
    identifiers,
    transport: partnerApiKey && dataImportKey ? 'partner' : 'track',
    ...(partnerApiKey && dataImportKey ? { partner: { apiKey: partnerApiKey, dataImportKey, partnerName } } : {}),
    ...(webhookToken ? { webhookToken } : {}),
    ...settings,
  };
}

export function readNotifySettings(r: SettingsReader): NotifySettings {
  const webhookUrl = r.url('NOTIFY_WEBHOOK_URL', { path: 'notify.webhookUrl', secret: true, doc: 'URL that receives a JSON message (Slack-compatible `text`) for each scheduled cohort run, a realtime sync failing or recovering, and a connector turning failing or expired' });
  const smtpUrl = r.string('NOTIFY_SMTP_URL', { path: 'notify.smtpUrl', secret: true, doc: 'SMTP server for e-mail notifications, e.g. smtps://user:pass@smtp.example.com:465 (with NOTIFY_EMAIL_TO)' });
  const emailTo = r.list('NOTIFY_EMAIL_TO', { path: 'notify.emailTo', default: [], doc: 'addresses that receive the notifications by e-mail (with NOTIFY_SMTP_URL)' });
  const emailFrom = r.string('NOTIFY_EMAIL_FROM', { path: 'notify.emailFrom', default: 'amplitude-braze-gateway@localhost', doc: 'sender of the notification e-mails' });
  if (smtpUrl !== undefined) {
    try {
      const u = new URL(smtpUrl);
      if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:') throw new Error('scheme');
    } catch {
      r.problem('NOTIFY_SMTP_URL', 'must be an smtp:// or smtps:// URL');
    }
    if (emailTo.length === 0) r.problem('NOTIFY_EMAIL_TO', 'is required when NOTIFY_SMTP_URL is set');
  } else if (emailTo.length > 0) r.problem('NOTIFY_SMTP_URL', 'is required when NOTIFY_EMAIL_TO is set');
  return {
    ...(webhookUrl ? { webhookUrl } : {}),
    ...(smtpUrl ? { smtpUrl } : {}),
    emailTo,
    emailFrom,
    timeoutMs: r.int('NOTIFY_TIMEOUT_MS', { path: 'notify.timeoutMs', default: 10_000, min: 100, doc: 'how long one notification may take to send before it counts as failed' }),
    checkIntervalMs: r.int('NOTIFY_CHECK_INTERVAL_MS', { path: 'notify.checkIntervalMs', default: 15_000, min: 50, doc: 'how often connector states are checked for a turn to failing or expired' }),
  };
}
