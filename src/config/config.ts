import { hostname } from 'node:os';
import { ConfigError, SettingsReader, loadYamlFile, type Env, type SettingDoc } from './reader.js';
import {
  defaultOutboundMapping,
  type IdentifierRule,
  type IdentifierSource,
  type IdentifierTarget,
  type OutboundMappingConfig,
} from '../amplitude-to-braze/mapping-config.js';
import { isCurrencyCode } from '../amplitude-to-braze/map-to-braze.js';
import { readCohortSettings, readNotifySettings, type CohortSettings, type NotifySettings } from '../cohorts/cohort-config.js';
import type { CohortIdRule } from '../cohorts/cohort-identifiers.js';
import { readHttpSettings, type HttpSettings } from '../http/http-config.js';

export type SaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  groupId: string;
  ssl: boolean;
  sslCaFile?: string;
  sslRejectUnauthorized: boolean;
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
  fetchMaxWaitMs: number;
  sessionTimeoutMs: number;
  /** commit cadence: Braze does not deduplicate, so committing often keeps replays after a crash small */
  commitIntervalMs: number;
  /** the gateway's own Kafka writes (dead letters, parks, state): the back-off between tries and how long a try waits for acks */
  writes: { retryBaseMs: number; retryMaxMs: number; ackTimeoutMs: number };
}

export interface Topics {
  amplitudeEvents: string;
  brazeCurrents: string;
  deadLetter: string;
  retry: string;
  /** the long park tier: events over an id's daily quota, due up to a day later */
  retryQuota: string;
  /** per-partition snapshots of the Amplitude leg's daily counts per id (compacted) */
  limits: string;
  state: string;
  /** cohort snapshots, pending exports, the download budget, stored webhook batches (compacted) */
  cohorts: string;
  /** what the outbound leg last wrote to each Braze user's attributes (compacted) */
  attributeState: string;
}

export interface BrazeSettings {
  restEndpoint: string;
  apiKey: string;
  maxPerArray: number;
  /** cap across events + attributes + purchases; 0 means only the per-array cap applies */
  maxTotal: number;
  maxRequestBytes: number;
  lingerMs: number;
  rateLimitRequests: number;
  rateLimitWindowMs: number;
  concurrency: number;
  requestTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  authRetryMs: number;
  /** how many events may be buffered in the leg before consumption pauses */
  maxInFlightEvents: number;
  /** after an assignment, how long the attribute state waits for the previous owners' last writes before it reloads */
  attributeStateHandoverMs: number;
}

export interface AmplitudeSettings {
  apiKey?: string;
  secretKey?: string;
  region: 'US' | 'EU';
  /** the full URL events are posted to: `<host>/2/httpapi` or `<host>/batch` */
  httpApiUrl: string;
  /** which ingest API that URL is: the HTTP V2 API or the Batch API (same request and answers, larger limits) */
  endpoint: 'httpapi' | 'batch';
  apiUrl: string;
}

export interface CurrentsSettings {
  token: string;
  maxBodyBytes: number;
  maxEventsPerBatch: number;
  maxDepth: number;
  maxStringLength: number;
  /** events waiting for Kafka acks before new batches are refused with 429 */
  maxPendingEvents: number;
  ackTimeoutMs: number;
}

export interface InboundSettings {
  maxEventsPerRequest: number;
  maxRequestBytes: number;
  lingerMs: number;
  concurrency: number;
  requestTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  authRetryMs: number;
  maxInFlightEvents: number;
  throttleHoldMs: number;
  mapping: {
    minIdLength: number;
    eventNamePrefix: string;
    customEventPrefix: string;
    customPropertyPrefix: string;
    purchasePropertyPrefix: string;
    eventScope: 'connector' | 'all';
    nameOverrides: Record<string, string>;
  };
}

export interface LimitSettings {
  enabled: boolean;
  /** Amplitude's per-id limit; the pacing leaves headroom for batching jitter (see README) */
  eventsPerSecond: number;
  dailyQuota: number;
  /** the rolling window of the daily quota, and its bucket size */
  quotaWindowMs: number;
  quotaBucketMs: number;
  /** longest an event is held in memory for its id's rate before it is parked in the retry topic */
  maxDelayMs: number;
  /** what arrives between the limiter and Amplitude's clock: linger plus round trip */
  pacingJitterMs: number;
  quotaAction: 'park' | 'dead-letter';
  idleEvictMs: number;
  /** parked events held in memory until due before the retry consumer pauses */
  retryMaxHeld: number;
  /** quota parks held in memory until due per partition of the long tier, before that partition pauses */
  quotaParkMaxHeldPerPartition: number;
  /** how often the daily counts are saved to the limits topic */
  saveIntervalMs: number;
}

export interface HealthSettings {
  dropWindowMs: number;
  checkIntervalMs: number;
  saveIntervalMs: number;
  /** names this process's health records in the state topic (default: the host name, stable across restarts) */
  instanceId: string;
  /** another instance's record older than this no longer counts for state and pending in /connectors */
  instanceStaleMs: number;
  /** the recent window over which destination rejections are weighed against deliveries */
  rejectionWindowMs: number;
  /** at or above this share (percent) of rejected events in the window, a connector is degraded */
  rejectionPercent: number;
  /** fewer finished events than this in the window never make a connector degraded */
  rejectionMinEvents: number;
}

export interface GatewayConfig {
  kafka: KafkaSettings;
  topics: Topics;
  /** undefined when BRAZE_REST_ENDPOINT / BRAZE_API_KEY are absent: the outbound leg is off */
  braze?: BrazeSettings;
  outbound: OutboundMappingConfig;
  amplitude: AmplitudeSettings;
  /** undefined when CURRENTS_TOKEN is absent: POST /currents is off */
  currents?: CurrentsSettings;
  /** the delivery of braze.currents to Amplitude; on when AMPLITUDE_API_KEY is set */
  inbound: InboundSettings;
  limits: LimitSettings;
  health: HealthSettings;
  http: HttpSettings;
  logLevel: LogLevel;
  /** undefined unless COHORT_SYNCS and the Braze credentials are set */
  cohorts?: CohortSettings;
  notify: NotifySettings;
  /** processes that consume: this one plus workers - 1 child processes (GATEWAY_WORKERS) */
  workers: number;
}

const AMPLITUDE_HOSTS = {
  US: { httpApi: 'https://api2.amplitude.com', api: 'https://amplitude.com' },
  EU: { httpApi: 'https://api.eu.amplitude.com', api: 'https://analytics.eu.amplitude.com' },
} as const;

/** Reads and validates everything; throws ConfigError naming each bad setting. */
export function loadConfig(env: Env = process.env, opts: { requireKafka?: boolean } = {}): GatewayConfig {
  const yaml = env.GATEWAY_CONFIG ? loadYamlFile(env.GATEWAY_CONFIG) : {};
  const r = new SettingsReader(env, yaml);
  const cfg = readAll(r, opts.requireKafka ?? true);
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return cfg;
}

/** Every setting with its default and description, for `check-config --reference` and the README. */
export function settingsReference(): SettingDoc[] {
  const r = new SettingsReader({}, {});
  readAll(r, false);
  return r.docs;
}

function readAll(r: SettingsReader, requireKafka: boolean): GatewayConfig {
  const kafka = readKafka(r, requireKafka);
  const topics: Topics = {
    amplitudeEvents: r.string('TOPIC_AMPLITUDE_EVENTS', { path: 'topics.amplitudeEvents', default: 'amplitude.events', doc: 'Amplitude events consumed by the outbound leg' }),
    brazeCurrents: r.string('TOPIC_BRAZE_CURRENTS', { path: 'topics.brazeCurrents', default: 'braze.currents', doc: 'Currents events written by POST /currents, consumed by the inbound leg' }),
    deadLetter: r.string('TOPIC_DEAD_LETTER', { path: 'topics.deadLetter', default: 'gateway.dead-letter', doc: 'every event not delivered, with reason headers' }),
    retry: r.string('TOPIC_RETRY', { path: 'topics.retry', default: 'gateway.retry', doc: 'parked events with a not-before time' }),
    retryQuota: r.string('TOPIC_RETRY_QUOTA', { path: 'topics.retryQuota', default: 'gateway.retry.quota', doc: 'events parked over an id\'s daily quota (the long park tier), same partition count as the Currents topic' }),
    limits: r.string('TOPIC_LIMITS', { path: 'topics.limits', default: 'gateway.limits', doc: 'per-partition snapshots of the daily counts per device and user id (compacted)' }),
    state: r.string('TOPIC_STATE', { path: 'topics.state', default: 'gateway.state', doc: 'connector health (compacted)' }),
    cohorts: r.string('TOPIC_COHORTS', { path: 'topics.cohorts', default: 'gateway.cohorts', doc: 'cohort snapshots, pending exports, the download budget and stored webhook batches (compacted)' }),
    attributeState: r.string('TOPIC_ATTRIBUTE_STATE', { path: 'topics.attributeState', default: 'gateway.attribute-state', doc: 'what the outbound leg last wrote to each Braze user\'s attributes, one record per user (compacted)' }),
  };
  const braze = readBraze(r);
  const outbound = readOutbound(r);
  const amplitude = readAmplitude(r);
  const currents = readCurrents(r);
  const inbound = readInbound(r, amplitude.endpoint);
  const limits: LimitSettings = {
    enabled: r.bool('AMPLITUDE_LIMITS_ENABLED', { path: 'limits.enabled', default: true, doc: 'pace each device and user id on the Amplitude leg' }),
    eventsPerSecond: r.int('AMPLITUDE_ID_EVENTS_PER_SECOND', { path: 'limits.eventsPerSecond', default: amplitude.endpoint === 'batch' ? 1_000 : 30, min: 1, max: 10_000, doc: 'most events Amplitude accepts per device id and per user id in any second (default 30; 1,000 when AMPLITUDE_HTTP_API_URL is the Batch API)' }),
    dailyQuota: r.int('AMPLITUDE_ID_DAILY_QUOTA', { path: 'limits.dailyQuota', default: 500_000, min: 1, doc: 'most events per device id and per user id in any rolling 24 h' }),
    quotaWindowMs: r.int('AMPLITUDE_ID_QUOTA_WINDOW_MS', { path: 'limits.quotaWindowMs', default: 86_400_000, min: 1_000, doc: 'the rolling window of the daily quota' }),
    quotaBucketMs: r.int('AMPLITUDE_ID_QUOTA_BUCKET_MS', { path: 'limits.quotaBucketMs', default: 3_600_000, min: 100, doc: 'granularity of the rolling quota window (hourly buckets)' }),
    maxDelayMs: r.int('AMPLITUDE_ID_MAX_DELAY_MS', { path: 'limits.maxDelayMs', default: 2_000, min: 0, max: 60_000, doc: 'longest an event waits in memory for its id\'s rate before it is parked in the retry topic' }),
    pacingJitterMs: r.int('AMPLITUDE_ID_PACING_JITTER_MS', { path: 'limits.pacingJitterMs', default: 200, min: 0, max: 5_000, doc: 'headroom for batching delay between the limiter and Amplitude\'s clock' }),
    quotaAction: r.oneOf('AMPLITUDE_QUOTA_ACTION', { path: 'limits.quotaAction', values: ['park', 'dead-letter'] as const, default: 'park', doc: '`park`: events over the daily quota wait in the retry topic until the window allows; `dead-letter`: they go to the dead-letter topic (reason daily_quota) for `replay`' }),
    idleEvictMs: r.int('AMPLITUDE_ID_IDLE_EVICT_MS', { path: 'limits.idleEvictMs', default: 600_000, min: 1_000, doc: 'ids idle this long leave the fast table (their daily counts are kept)' }),
    retryMaxHeld: r.int('RETRY_MAX_HELD', { path: 'limits.retryMaxHeld', default: 100_000, min: 100, doc: 'parked events held in memory until due before the retry consumer pauses' }),
    quotaParkMaxHeldPerPartition: r.int('RETRY_QUOTA_MAX_HELD_PER_PARTITION', { path: 'limits.quotaParkMaxHeldPerPartition', default: 1_000, min: 1, doc: 'quota parks held in memory until due, per partition of the long tier; at this many that partition pauses (the rest wait in Kafka)' }),
    saveIntervalMs: r.int('AMPLITUDE_ID_SAVE_INTERVAL_MS', { path: 'limits.saveIntervalMs', default: 30_000, min: 1_000, doc: 'how often the daily counts per id are saved to the limits topic (also saved when a partition is lost and on stop)' }),
  };
  const health: HealthSettings = {
    dropWindowMs: r.int('DROP_WINDOW_MS', { path: 'health.dropWindowMs', default: 48 * 3_600_000, min: 1_000, doc: 'a connector without a successful delivery this long has its older pending events moved to the dead-letter topic (Amplitude drops them at 48 h)' }),
    checkIntervalMs: r.int('HEALTH_CHECK_INTERVAL_MS', { path: 'health.checkIntervalMs', default: 30_000, min: 100, doc: 'how often the drop window is checked' }),
    saveIntervalMs: r.int('HEALTH_SAVE_INTERVAL_MS', { path: 'health.saveIntervalMs', default: 10_000, min: 100, doc: 'how often connector health is written to the state topic' }),
    instanceId: readInstanceId(r),
    instanceStaleMs: r.int('HEALTH_INSTANCE_STALE_MS', { path: 'health.instanceStaleMs', default: 120_000, min: 1_000, doc: 'another gateway instance whose health record is older than this counts as gone: /connectors stops counting its state and pending events (its last success still counts); records older than DROP_WINDOW_MS are deleted' }),
    rejectionWindowMs: r.int('HEALTH_REJECTION_WINDOW_MS', { path: 'health.rejectionWindowMs', default: 300_000, min: 1_000, doc: 'the recent window over which events the destination rejected (dead-lettered) are weighed against events delivered' }),
    rejectionPercent: r.int('HEALTH_REJECTION_PERCENT', { path: 'health.rejectionPercent', default: 50, min: 1, max: 100, doc: 'a connector whose destination rejected at least this share (percent) of the events it finished in the window is degraded' }),
    rejectionMinEvents: r.int('HEALTH_REJECTION_MIN_EVENTS', { path: 'health.rejectionMinEvents', default: 20, min: 1, doc: 'fewer finished events than this in the window never make a connector degraded' }),
  };
  const http = readHttpSettings(r);
  const logLevel = r.oneOf('LOG_LEVEL', {
    path: 'logLevel',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
    default: 'info',
    doc: 'pino log level',
  });
  const cohorts = readCohortSettings(r, {
    brazeOn: braze !== undefined,
    readIdentifiers: (spec) => readIdentifierRules(r, spec) as CohortIdRule[],
    parseIdentifierList: (list, path, sources, fallback) => parseIdentifierList(r, list, path, sources, fallback) as CohortIdRule[],
  });
  const notify = readNotifySettings(r);
  const workers = r.int('GATEWAY_WORKERS', {
    path: 'workers',
    default: 1,
    min: 1,
    max: 64,
    doc: 'processes consuming Kafka on this host: this one plus GATEWAY_WORKERS - 1 child processes, each a member of the consumer groups (one per core uses every core; see Performance). HTTP, POST /currents and the cohort sync stay in this process; /metrics adds the children\'s series with a `worker` label',
  });
  return { kafka, topics, ...(braze ? { braze } : {}), outbound, amplitude, ...(currents ? { currents } : {}), inbound, limits, health, http, logLevel, ...(cohorts ? { cohorts } : {}), notify, workers };
}

/** GATEWAY_INSTANCE_ID, else the host name: stable across restarts, so a restart restores its own health record. */
function readInstanceId(r: SettingsReader): string {
  const id = r.string('GATEWAY_INSTANCE_ID', { path: 'health.instanceId', doc: 'names this instance\'s connector health records in the state topic, and tells instances apart in the inbound leg\'s partition assignment (default: the host name, which a restart keeps); give every copy its own' }) ?? hostname();
  if (!/^[A-Za-z0-9._:-]{1,200}$/.test(id)) r.problem('GATEWAY_INSTANCE_ID', `must be 1 to 200 letters, digits, '.', '_', ':' or '-', got ${JSON.stringify(id)}`);
  return id;
}

function readKafka(r: SettingsReader, requireKafka: boolean): KafkaSettings {
  const brokers = r.list('KAFKA_BROKERS', { path: 'kafka.brokers', default: [], doc: 'comma-separated host:port list (required for `run`)' });
  if (requireKafka && brokers.length === 0) r.problem('KAFKA_BROKERS', 'is required (comma-separated host:port list)');
  for (const b of brokers) if (!/^[^\s:]+:\d{1,5}$/.test(b)) r.problem('KAFKA_BROKERS', `"${b}" is not host:port`);
  const mechanism = r.oneOf('KAFKA_SASL_MECHANISM', {
    path: 'kafka.sasl.mechanism',
    values: ['plain', 'scram-sha-256', 'scram-sha-512'] as const,
    caseInsensitive: true,
    doc: 'SASL mechanism; unset means no SASL',
  });
  const username = r.string('KAFKA_SASL_USERNAME', { path: 'kafka.sasl.username', doc: 'SASL user name' });
  const password = r.string('KAFKA_SASL_PASSWORD', { path: 'kafka.sasl.password', secret: true, doc: 'SASL password' });
  if (mechanism && (!username || !password)) r.problem('KAFKA_SASL_MECHANISM', 'needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD');
  const sslCaFile = r.string('KAFKA_SSL_CA_FILE', { path: 'kafka.ssl.caFile', doc: 'PEM file of the CA that signed the brokers\' certificates (default: the system CAs)' });
  return {
    brokers,
    clientId: r.string('KAFKA_CLIENT_ID', { path: 'kafka.clientId', default: 'amplitude-braze-gateway', doc: 'Kafka client id' }),
    groupId: r.string('KAFKA_GROUP_ID', { path: 'kafka.groupId', default: 'amplitude-braze-gateway', doc: 'consumer group prefix; each leg appends its own suffix' }),
    ssl: r.bool('KAFKA_SSL', { path: 'kafka.ssl.enabled', default: false, doc: 'connect with TLS' }),
    ...(sslCaFile ? { sslCaFile } : {}),
    sslRejectUnauthorized: r.bool('KAFKA_SSL_REJECT_UNAUTHORIZED', { path: 'kafka.ssl.rejectUnauthorized', default: true, doc: 'verify the brokers\' certificates' }),
    ...(mechanism && username && password ? { sasl: { mechanism: mechanism.toLowerCase() as SaslMechanism, username, password } } : {}),
    fetchMaxWaitMs: r.int('KAFKA_FETCH_MAX_WAIT_MS', { path: 'kafka.fetchMaxWaitMs', default: 500, min: 1, max: 30_000, doc: 'longest a fetch waits for data (keep small against the test broker)' }),
    sessionTimeoutMs: r.int('KAFKA_SESSION_TIMEOUT_MS', { path: 'kafka.sessionTimeoutMs', default: 30_000, min: 6_000, doc: 'consumer group session timeout' }),
    commitIntervalMs: r.int('KAFKA_COMMIT_INTERVAL_MS', { path: 'kafka.commitIntervalMs', default: 1_000, min: 50, doc: 'how often delivered offsets are committed' }),
    writes: {
      retryBaseMs: r.int('KAFKA_WRITE_RETRY_BASE_MS', { path: 'kafka.writes.retryBaseMs', default: 500, min: 1, doc: 'first back-off after a failed write of the gateway\'s own (dead letters, parked events, state), doubling with jitter' }),
      retryMaxMs: r.int('KAFKA_WRITE_RETRY_MAX_MS', { path: 'kafka.writes.retryMaxMs', default: 30_000, min: 1, doc: 'longest back-off between two tries of such a write (dead letters and parks are tried until stored)' }),
      ackTimeoutMs: r.int('KAFKA_WRITE_ACK_TIMEOUT_MS', { path: 'kafka.writes.ackTimeoutMs', default: 30_000, min: 100, doc: 'a try of such a write not acknowledged by all in-sync replicas by then counts as failed' }),
    },
  };
}

function readBraze(r: SettingsReader): BrazeSettings | undefined {
  // An operator may paste the endpoint's full URL from Braze's docs: keep the instance's origin.
  const restEndpoint = r.url('BRAZE_REST_ENDPOINT', { path: 'braze.restEndpoint', doc: 'the workspace instance\'s REST endpoint, e.g. https://rest.iad-01.braze.com (a host, or a URL ending in /users/track, is accepted too); the outbound leg is off without it' })?.replace(/\/users\/track$/, '');
  const apiKey = r.string('BRAZE_API_KEY', { path: 'braze.apiKey', secret: true, doc: 'REST API key with the users.track permission' });
  const settings: Omit<BrazeSettings, 'restEndpoint' | 'apiKey'> = {
    maxPerArray: r.int('BRAZE_MAX_PER_ARRAY', { path: 'braze.maxPerArray', default: 75, min: 1, max: 75, doc: 'events, attributes and purchases per request, each' }),
    maxTotal: r.int('BRAZE_MAX_OBJECTS_PER_REQUEST', { path: 'braze.maxObjectsPerRequest', default: 75, min: 0, max: 225, doc: 'cap across the three arrays: 75 in Braze\'s current docs, 50 for MAU CY 24-25 contracts; 0 leaves only the per-array cap (legacy contracts: 75 per array)' }),
    maxRequestBytes: r.int('BRAZE_MAX_REQUEST_BYTES', { path: 'braze.maxRequestBytes', default: 3_900_000, min: 10_000, max: 4_000_000, doc: 'request body size cap (Braze rejects over 4 MB)' }),
    lingerMs: r.int('BRAZE_LINGER_MS', { path: 'braze.lingerMs', default: 50, min: 0, max: 10_000, doc: 'how long a partly filled request waits for more events' }),
    rateLimitRequests: r.int('BRAZE_RATE_LIMIT_REQUESTS', { path: 'braze.rateLimit.requests', default: 3_000, min: 1, doc: 'requests allowed per window, destination-wide' }),
    rateLimitWindowMs: r.int('BRAZE_RATE_LIMIT_WINDOW_MS', { path: 'braze.rateLimit.windowMs', default: 3_000, min: 100, doc: 'the rate-limit window' }),
    concurrency: r.int('BRAZE_CONCURRENCY', { path: 'braze.concurrency', default: 16, min: 1, max: 1_000, doc: 'requests in flight at once' }),
    requestTimeoutMs: r.int('BRAZE_REQUEST_TIMEOUT_MS', { path: 'braze.requestTimeoutMs', default: 30_000, min: 100, doc: 'per-request timeout' }),
    retryBaseMs: r.int('BRAZE_RETRY_BASE_MS', { path: 'braze.retry.baseMs', default: 500, min: 1, doc: 'first back-off after a 5xx, timeout or network error' }),
    retryMaxMs: r.int('BRAZE_RETRY_MAX_MS', { path: 'braze.retry.maxMs', default: 8_000, min: 1, doc: 'back-off cap: the longest gap between probes of an unwell Braze (one request each), so delivery resumes within it once Braze recovers' }),
    authRetryMs: r.int('BRAZE_AUTH_RETRY_MS', { path: 'braze.retry.authMs', default: 60_000, min: 10, doc: 'how often a refused key or configuration (401, 403, 404, an unexplained 4xx) is probed' }),
    maxInFlightEvents: r.int('BRAZE_MAX_IN_FLIGHT_EVENTS', { path: 'braze.maxInFlightEvents', default: 20_000, min: 100, doc: 'events buffered before consumption pauses' }),
    attributeStateHandoverMs: r.int('OUTBOUND_ATTRIBUTE_STATE_HANDOVER_MS', {
      path: 'outbound.attributeStateHandoverMs',
      default: 1_000,
      min: 0,
      max: 60_000,
      doc: 'after each partition assignment the outbound leg waits this long for the previous owners to write their attribute state (they start when the rebalance begins), then reloads it before consuming',
    }),
  };
  if (!restEndpoint && !apiKey) return undefined;
  if (!restEndpoint) r.problem('BRAZE_REST_ENDPOINT', 'is required when BRAZE_API_KEY is set');
  if (!apiKey) r.problem('BRAZE_API_KEY', 'is required when BRAZE_REST_ENDPOINT is set');
  if (!restEndpoint || !apiKey) return undefined;
  if (/^["'].*["']$/.test(apiKey)) r.problem('BRAZE_API_KEY', 'is quoted; Braze answers a quoted key with 401');
  return { restEndpoint, apiKey, ...settings };
}

function readOutbound(r: SettingsReader): OutboundMappingConfig {
  const d = defaultOutboundMapping;
  const identifiers = readIdentifiers(r);
  const appId = r.string('BRAZE_APP_ID', { path: 'braze.appId', doc: 'Braze app identifier attached to events and purchases' });
  const updateExistingOnly = r.bool('BRAZE_UPDATE_EXISTING_ONLY', { path: 'braze.updateExistingOnly', doc: '`true`: every object is update-only and no Braze profile is created; `false`: sent as false on every object; unset: Braze\'s default, except that a user identified by alias gets an attributes object with `_update_existing_only: false` before its events, so its alias-only profile is created (Braze silently drops objects for an unknown alias otherwise)' });
  return {
    identifiers,
    ...(appId ? { appId } : {}),
    ...(updateExistingOnly !== undefined ? { updateExistingOnly } : {}),
    filter: {
      allow: r.list('OUTBOUND_EVENTS_ALLOW', { path: 'outbound.filter.allow', default: d.filter.allow, doc: 'event types to send (`*` and `?` wildcards); empty sends all' }),
      deny: r.list('OUTBOUND_EVENTS_DENY', { path: 'outbound.filter.deny', default: d.filter.deny, doc: 'event types never sent; wins over allow' }),
    },
    loopPrevention: {
      enabled: r.bool('OUTBOUND_LOOP_PREVENTION', { path: 'outbound.loopPrevention.enabled', default: d.loopPrevention.enabled, doc: 'do not send Braze-originated events back to Braze' }),
      libraries: r.list('OUTBOUND_LOOP_LIBRARIES', { path: 'outbound.loopPrevention.libraries', default: d.loopPrevention.libraries, doc: '`library` values that mark an event as Braze-originated' }),
      eventTypePrefixes: r.list('OUTBOUND_LOOP_EVENT_PREFIXES', { path: 'outbound.loopPrevention.eventTypePrefixes', default: d.loopPrevention.eventTypePrefixes, doc: 'event-type prefixes that mark an event as Braze-originated' }),
    },
    sendUserProperties: r.bool('OUTBOUND_SEND_USER_PROPERTIES', { path: 'outbound.sendUserProperties', default: d.sendUserProperties, doc: 'send user properties as Braze custom attributes' }),
    userProperties: r.list('OUTBOUND_USER_PROPERTIES', { path: 'outbound.userProperties', default: d.userProperties, doc: 'user properties synced as Braze attributes (`*` and `?` wildcards, case-sensitive); `*` syncs all' }),
    attributeStateMaxUsers: r.int('OUTBOUND_ATTRIBUTE_STATE_USERS', { path: 'outbound.attributeStateUsers', default: d.attributeStateMaxUsers, min: 0, doc: 'users whose last-sent attributes are remembered (LRU; about 250 bytes plus 48 per attribute each: 100,000 users with 10 attributes take about 73 MB), so an attribute is written only when it changed and never from an event older than the one it was last sent from; 0: every event writes its whole user-property snapshot' }),
    negativeRevenueAs: r.oneOf('OUTBOUND_NEGATIVE_REVENUE_AS', { path: 'outbound.negativeRevenueAs', values: ['event', 'drop'] as const, default: d.negativeRevenueAs, doc: 'a refund (negative revenue) is never a Braze purchase: `event` keeps the revenue fields as properties of the custom event, `drop` leaves them out' }),
    revenueAs: r.oneOf('OUTBOUND_REVENUE_AS', { path: 'outbound.revenueAs', values: ['purchase', 'event'] as const, default: d.revenueAs, doc: 'revenue events become Braze purchases, or stay plain custom events' }),
    defaultCurrency: readDefaultCurrency(r, r.string('OUTBOUND_DEFAULT_CURRENCY', { path: 'outbound.defaultCurrency', default: d.defaultCurrency, doc: 'currency of revenue events that name none, or name one that is not an ISO 4217 code (counted); must itself be an ISO 4217 code' })),
  };
}

/** Upper-cased; a default Braze would refuse would cost every purchase that falls back to it. */
function readDefaultCurrency(r: SettingsReader, raw: string): string {
  const c = raw.trim().toUpperCase();
  if (!isCurrencyCode(c)) r.problem('OUTBOUND_DEFAULT_CURRENCY', `must be an ISO 4217 currency code, got ${JSON.stringify(raw)}`);
  return c;
}

const SOURCES = ['user_id', 'device_id'] as const;
const TARGETS = ['external_id', 'user_alias', 'braze_id', 'email'] as const;

/** Where an identifier mapping setting lives (OUTBOUND_IDENTIFIERS, COHORT_IDENTIFIERS) and which sources it takes. */
export interface IdentifierSettingSpec<S extends string> {
  env: string;
  path: string;
  /** YAML path of the structured list form `[{from, to, alias_label}]` */
  yamlList: string;
  def: string;
  doc: string;
  sources: readonly S[];
  fallback: Array<GenericIdentifierRule<S>>;
}

export interface GenericIdentifierRule<S extends string> {
  source: { kind: S } | { kind: 'user_property'; name: string };
  target: IdentifierTarget;
}

const OUTBOUND_IDENTIFIERS_SPEC: IdentifierSettingSpec<(typeof SOURCES)[number]> = {
  env: 'OUTBOUND_IDENTIFIERS',
  path: 'outbound.identifiersInline',
  yamlList: 'outbound.identifiers',
  def: 'user_id=external_id,device_id=user_alias:amplitude_device_id',
  doc: 'priority-ordered identifier mapping, up to three `source=target` entries; source `user_id`, `device_id` or `property:NAME`; target `external_id`, `user_alias:LABEL`, `braze_id` or `email`',
  sources: SOURCES,
  fallback: defaultOutboundMapping.identifiers as Array<GenericIdentifierRule<(typeof SOURCES)[number]>>,
};

/**
 * The identifier mapping, from OUTBOUND_IDENTIFIERS (`user_id=external_id,device_id=user_alias:amplitude_device_id,
 * property:crm_id=braze_id`) or the YAML list `outbound.identifiers` of `{from, to, alias_label}`.
 */
function readIdentifiers(r: SettingsReader): IdentifierRule[] {
  return readIdentifierRules(r, OUTBOUND_IDENTIFIERS_SPEC) as IdentifierRule[];
}

/** An identifier mapping setting (OUTBOUND_IDENTIFIERS's syntax) at the place `spec` names. */
export function readIdentifierRules<S extends string>(r: SettingsReader, spec: IdentifierSettingSpec<S>): Array<GenericIdentifierRule<S>> {
  const def = spec.def;
  const envForm = r.string(spec.env, {
    path: spec.path,
    default: def,
    doc: spec.doc,
  });
  const yamlList = r.yamlAt(spec.yamlList);
  if (Array.isArray(yamlList) && envForm === def) return parseIdentifierList(r, yamlList, spec.yamlList, spec.sources, spec.fallback, spec.env);
  const entries: Array<{ from: unknown; to: unknown; label: unknown; where: string }> = [];
  for (const part of envForm.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [from, to] = part.split('=');
    const [target, label] = (to ?? '').split(':');
    entries.push({ from, to: target, label, where: `${spec.env} entry "${part}"` });
  }
  return parseIdentifierEntries(r, entries, spec.env, spec.sources, spec.fallback);
}

/** A YAML identifier list `[{from, to, alias_label}]` at YAML path `path`, with the same rules. */
export function parseIdentifierList<S extends string>(r: SettingsReader, list: unknown[], path: string, sources: readonly S[], fallback: Array<GenericIdentifierRule<S>>, setting = `${path} (GATEWAY_CONFIG)`): Array<GenericIdentifierRule<S>> {
  const entries = list.map((e: unknown, i) => {
    const o = (e ?? {}) as Record<string, unknown>;
    return { from: o.from, to: o.to, label: o.alias_label ?? o.aliasLabel, where: `${path}[${i}] (GATEWAY_CONFIG)` };
  });
  return parseIdentifierEntries(r, entries, setting, sources, fallback);
}

function parseIdentifierEntries<S extends string>(
  r: SettingsReader,
  entries: Array<{ from: unknown; to: unknown; label: unknown; where: string }>,
  setting: string,
  sources: readonly S[],
  fallback: Array<GenericIdentifierRule<S>>,
): Array<GenericIdentifierRule<S>> {
  if (entries.length === 0 || entries.length > 3) {
    r.problem(setting, `needs one to three entries, got ${entries.length}`);
    return fallback;
  }
  const rules: Array<GenericIdentifierRule<S>> = [];
  for (const e of entries) {
    const from = typeof e.from === 'string' ? e.from.trim() : '';
    let source: GenericIdentifierRule<S>['source'] | undefined;
    if ((sources as readonly string[]).includes(from)) source = { kind: from as S };
    else if (from.startsWith('property:') && from.length > 'property:'.length) source = { kind: 'user_property', name: from.slice('property:'.length) };
    if (!source) {
      r.problem(e.where, `source must be ${sources.join(', ')} or property:NAME, got ${JSON.stringify(e.from)}`);
      continue;
    }
    const to = typeof e.to === 'string' ? e.to.trim() : '';
    if (!(TARGETS as readonly string[]).includes(to)) {
      r.problem(e.where, `target must be one of ${TARGETS.join(', ')}, got ${JSON.stringify(e.to)}`);
      continue;
    }
    let target: IdentifierTarget;
    if (to === 'user_alias') {
      const label = typeof e.label === 'string' ? e.label.trim() : '';
      if (!label) {
        r.problem(e.where, 'user_alias needs an alias label (user_alias:LABEL, or alias_label in YAML)');
        continue;
      }
      target = { kind: 'user_alias', aliasLabel: label };
    } else {
      target = { kind: to as 'external_id' | 'braze_id' | 'email' };
    }
    rules.push({ source, target });
  }
  return rules.length > 0 ? rules : fallback;
}

function readAmplitude(r: SettingsReader): AmplitudeSettings {
  const region = r.oneOf('AMPLITUDE_REGION', { path: 'amplitude.region', values: ['US', 'EU'] as const, default: 'US', caseInsensitive: true, doc: 'selects the US or EU endpoints' });
  const hosts = AMPLITUDE_HOSTS[region.toUpperCase() as 'US' | 'EU'];
  const apiKey = r.string('AMPLITUDE_API_KEY', { path: 'amplitude.apiKey', secret: true, doc: 'project API key; the inbound delivery to Amplitude is off without it' });
  const secretKey = r.string('AMPLITUDE_SECRET_KEY', { path: 'amplitude.secretKey', secret: true, doc: 'project secret key (cohort API only)' });
  return {
    ...(apiKey ? { apiKey } : {}),
    ...(secretKey ? { secretKey } : {}),
    region: region.toUpperCase() as 'US' | 'EU',
    ...amplitudeEndpoint(r, r.url('AMPLITUDE_HTTP_API_URL', { path: 'amplitude.httpApiUrl', doc: 'the ingest endpoint: a host (`https://api2.amplitude.com`, `/2/httpapi` is added) or the full URL of the HTTP V2 API (`…/2/httpapi`) or the Batch API (`…/batch`); default by region' }) ?? hosts.httpApi),
    apiUrl: r.url('AMPLITUDE_API_URL', { path: 'amplitude.apiUrl', doc: 'override of the REST host (default by region)' }) ?? hosts.api,
  };
}

/** A host, or the full URL of either ingest endpoint, as Amplitude documents them. */
function amplitudeEndpoint(r: SettingsReader, raw: string): { httpApiUrl: string; endpoint: 'httpapi' | 'batch' } {
  const u = new URL(raw);
  const path = u.pathname.replace(/\/+$/, '');
  const base = `${u.origin}`;
  if (path === '' ) return { httpApiUrl: `${base}/2/httpapi`, endpoint: 'httpapi' };
  if (path.endsWith('/2/httpapi')) return { httpApiUrl: `${base}${path}`, endpoint: 'httpapi' };
  if (path.endsWith('/batch')) return { httpApiUrl: `${base}${path}`, endpoint: 'batch' };
  r.problem('AMPLITUDE_HTTP_API_URL', `must be a host or end in /2/httpapi or /batch, got ${JSON.stringify(raw)}`);
  return { httpApiUrl: `${base}${path}`, endpoint: 'httpapi' };
}

function readCurrents(r: SettingsReader): CurrentsSettings | undefined {
  const token = r.string('CURRENTS_TOKEN', { path: 'currents.token', secret: true, doc: 'Bearer token Braze Currents must send to POST /currents; the ingestion endpoint is off without it' });
  const settings = {
    maxBodyBytes: r.int('CURRENTS_MAX_BODY_BYTES', { path: 'currents.maxBodyBytes', default: 5 * 1024 * 1024, min: 1024, doc: 'largest request body accepted (413 above, refused from Content-Length before reading)' }),
    maxEventsPerBatch: r.int('CURRENTS_MAX_EVENTS_PER_BATCH', { path: 'currents.maxEventsPerBatch', default: 1_000, min: 1, doc: 'events per request (413 above, so Braze splits the batch)' }),
    maxDepth: r.int('CURRENTS_MAX_DEPTH', { path: 'currents.maxDepth', default: 64, min: 4, doc: 'deepest JSON nesting accepted in a request' }),
    maxStringLength: r.int('CURRENTS_MAX_STRING_LENGTH', { path: 'currents.maxStringLength', default: 65_536, min: 256, doc: 'longest string value accepted in a request' }),
    maxPendingEvents: r.int('CURRENTS_MAX_PENDING_EVENTS', { path: 'currents.maxPendingEvents', default: 50_000, min: 100, doc: 'events awaiting Kafka acks before new requests get 429' }),
    ackTimeoutMs: r.int('CURRENTS_ACK_TIMEOUT_MS', { path: 'currents.ackTimeoutMs', default: 10_000, min: 100, doc: 'how long a request waits for Kafka before answering 503' }),
  };
  return token ? { token, ...settings } : undefined;
}

function readInbound(r: SettingsReader, endpoint: AmplitudeSettings['endpoint']): InboundSettings {
  const overrides = r.yamlAt('inbound.eventNames');
  const nameOverrides: Record<string, string> = {};
  if (overrides !== undefined && overrides !== null) {
    if (typeof overrides !== 'object' || Array.isArray(overrides)) r.problem('inbound.eventNames (GATEWAY_CONFIG)', 'must map Currents event types to Amplitude event names');
    else for (const [k, v] of Object.entries(overrides)) {
      if (typeof v === 'string' && v) nameOverrides[k] = v;
      else r.problem(`inbound.eventNames.${k} (GATEWAY_CONFIG)`, 'must be a non-empty string');
    }
  }
  const maxEventsPerRequest = r.int('AMPLITUDE_MAX_EVENTS_PER_REQUEST', { path: 'inbound.maxEventsPerRequest', default: 1_000, min: 1, max: 1_999, doc: 'events per Amplitude request (Amplitude: under 2,000)' });
  return {
    maxEventsPerRequest,
    maxRequestBytes: r.int('AMPLITUDE_MAX_REQUEST_BYTES', { path: 'inbound.maxRequestBytes', default: endpoint === 'batch' ? 19_000_000 : 1_000_000, min: 10_000, max: endpoint === 'batch' ? 20_000_000 : 1_048_575, doc: 'request body cap (HTTP V2 API: under 1 MB, the default 1,000,000; Batch API: 20 MB, default 19,000,000)' }),
    lingerMs: r.int('AMPLITUDE_LINGER_MS', { path: 'inbound.lingerMs', default: 100, min: 0, max: 10_000, doc: 'how long a partly filled request waits for more events' }),
    concurrency: r.int('AMPLITUDE_CONCURRENCY', { path: 'inbound.concurrency', default: 8, min: 1, max: 1_000, doc: 'requests in flight at once' }),
    requestTimeoutMs: r.int('AMPLITUDE_REQUEST_TIMEOUT_MS', { path: 'inbound.requestTimeoutMs', default: 30_000, min: 100, doc: 'per-request timeout' }),
    retryBaseMs: r.int('AMPLITUDE_RETRY_BASE_MS', { path: 'inbound.retry.baseMs', default: 500, min: 1, doc: 'first back-off after a 5xx, timeout or network error' }),
    retryMaxMs: r.int('AMPLITUDE_RETRY_MAX_MS', { path: 'inbound.retry.maxMs', default: 8_000, min: 1, doc: 'back-off cap: the longest gap between probes of an unwell Amplitude (one request each), so delivery resumes within it once Amplitude recovers' }),
    authRetryMs: r.int('AMPLITUDE_AUTH_RETRY_MS', { path: 'inbound.retry.authMs', default: 60_000, min: 10, doc: 'how often a refused key or configuration (Invalid API key, 401, 403, 404, an unexplained 4xx) is probed' }),
    maxInFlightEvents: r.int('AMPLITUDE_MAX_IN_FLIGHT_EVENTS', { path: 'inbound.maxInFlightEvents', default: 20_000, min: 100, doc: 'events buffered before consumption pauses' }),
    throttleHoldMs: r.int('AMPLITUDE_THROTTLE_HOLD_MS', { path: 'inbound.throttleHoldMs', default: 30_000, min: 0, doc: 'how long ids named in a 429 are held' }),
    mapping: {
      minIdLength: r.int('AMPLITUDE_MIN_ID_LENGTH', { path: 'inbound.minIdLength', default: 5, min: 1, doc: 'shortest user_id/device_id sent (also sent as options.min_id_length)' }),
      eventNamePrefix: r.string('INBOUND_EVENT_NAME_PREFIX', { path: 'inbound.eventNamePrefix', default: '[Appboy] ', doc: 'prefix of Amplitude event names (the native connector\'s style; uncertain in the reference)' }),
      customEventPrefix: r.string('INBOUND_CUSTOM_EVENT_PREFIX', { path: 'inbound.customEventPrefix', default: '[Custom Event] ', doc: 'inserted before a custom event\'s own name' }),
      customPropertyPrefix: r.string('INBOUND_CUSTOM_PROPERTY_PREFIX', { path: 'inbound.customPropertyPrefix', default: '[Custom event property] ', doc: 'prefix of custom-event property keys' }),
      purchasePropertyPrefix: r.string('INBOUND_PURCHASE_PROPERTY_PREFIX', { path: 'inbound.purchasePropertyPrefix', default: '[Purchase property] ', doc: 'prefix of purchase property keys' }),
      eventScope: r.oneOf('INBOUND_EVENT_SCOPE', { path: 'inbound.eventScope', values: ['connector', 'all'] as const, default: 'connector', doc: '`connector`: only the event types Braze\'s native connector exports; `all`: every type' }),
      nameOverrides,
    },
  };
}

export { ConfigError };
