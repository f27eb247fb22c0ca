/**
 * Cohort and trait sync: keeps Braze's view of who is in each configured Amplitude cohort current,
 * sending only who entered and who left (DESIGN.md "Cohort and trait sync").
 *
 * Each sync (COHORT_SYNCS) is a connector (`cohort:<id>`) with health, metrics and a place in
 * `GET /cohorts`. Two sources feed one pipeline per sync, serialized so their changes apply in order:
 * - pull: the Behavioral Cohorts REST API, at start and then on the cadence; an export is requested
 *   only when the cohort's lastComputed/lastMod moved, within the monthly download budget, and its
 *   request_id is kept until the change is delivered, so a failed download or a failed Braze write
 *   costs no second export: the next run fetches the same file again;
 * - push: `POST /cohorts` (Amplitude's cohort webhook), stored in Kafka before the 2xx, applied in
 *   arrival order, a repeated message_id applied once.
 * The snapshot (membership last delivered) moves only after Braze accepted the change.
 */
import type { Kafka, Producer } from 'kafkajs';
import { Counter, Gauge } from 'prom-client';
import type { Clock } from '../clock.js';
import type { GatewayConfig } from '../config/config.js';
import type { FailureClass } from '../errors.js';
import { describeError } from '../errors.js';
import type { ConnectorHealth, HealthRegistry } from '../health/connector-health.js';
import type { Notifier } from '../health/notify.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { AmplitudeCohortApi, CohortApiError, type CohortMeta } from './amplitude-cohort-api.js';
import { PartnerClient, WriteFailure, partnerMembershipTransport, trackMembershipTransport, writeAll, type TrackPort, type Transport, type WriteResult } from './braze-membership.js';
import type { Cadence, CohortSettings, CohortSyncSpec } from './cohort-config.js';
import { memberKeys, resolveMember, type MemberInput } from './cohort-identifiers.js';
import { CohortStore, type StoredPush } from './cohort-store.js';
import { CsvRowParser, cohortColumns, type CohortColumns } from './csv.js';
import { MemberSet, MemberSetBuilder, applyChange, diffMembers, keysAt } from './member-set.js';
import { cohortRoutes, type CohortRoute } from './cohort-route.js';
import { TraitSync, type TraitRow } from './traits.js';

export interface CohortSyncDeps {
  config: GatewayConfig;
  kafka: Kafka;
  producer: Producer;
  /** the shared Braze client (src/amplitude-to-braze/braze-client.ts): one workspace request budget */
  braze: TrackPort;
  health: HealthRegistry;
  metrics: Metrics;
  logger: Logger;
  clock: Clock;
  notifier?: Notifier;
  /** waits between export polls and Braze retries (tests may shorten them) */
  sleep?: (ms: number) => Promise<void>;
  /** start the cadence timers (default true; tests drive runs with runNow) */
  schedule?: boolean;
  /** push deltas recorded on top of a snapshot before a full snapshot folds them in (default 200) */
  foldEvery?: number;
}

export interface CohortSync {
  /** GET /cohorts (surface `admin`) and, with COHORT_WEBHOOK_TOKEN, POST /cohorts (surface `public`) */
  routes: CohortRoute[];
  start(): Promise<void>;
  close(): Promise<void>;
  ready(): boolean;
  /** runs one pull of a sync now (after whatever it is doing) and resolves with its outcome */
  runNow(cohortId: string): Promise<RunReport>;
  /** resolves once every stored push is applied or has failed */
  pushesSettled(): Promise<void>;
  status(): CohortStatus;
}

export type SyncState = 'starting' | 'running' | 'synced' | 'failed' | 'archived' | 'push_only';

export interface RunReport {
  trigger: 'start' | 'schedule' | 'manual' | 'push';
  startedAtMs: number;
  finishedAtMs?: number;
  result: 'success' | 'failed' | 'skipped';
  /** why a run did nothing: unchanged, archived, once_done */
  skippedBecause?: string;
  adds: number;
  removes: number;
  unchanged: number;
  /** members no identifier rule could identify, by reason */
  unidentified: Record<string, number>;
  /** members Braze refused for good (kept out of the snapshot; tried again next run) */
  rejected: number;
  rejectedSample: string[];
  downloaded: boolean;
  requestId?: string;
  /** exports requested in this run (0 when a kept request_id was fetched again) */
  exportsRequested: number;
  downloadAttempts: number;
  traitsSent?: number;
  error?: string;
  messageId?: string;
}

export interface CohortStatus {
  now: string;
  transport: 'track' | 'partner';
  budget: { month: string; limit: number; used: number; left: number };
  syncs: Array<Record<string, unknown>>;
}

interface Metricset {
  runs: Counter<'connector' | 'result'>;
  changes: Counter<'connector' | 'change'>;
  skipped: Counter<'connector' | 'reason'>;
  pushes: Counter<'status'>;
  members: Gauge<'connector'>;
  downloadsLeft: Gauge;
}

const metricsByRegistry = new WeakMap<object, Metricset>();

function cohortMetrics(m: Metrics): Metricset {
  const found = metricsByRegistry.get(m.registry);
  if (found) return found;
  const registers = [m.registry];
  const set: Metricset = {
    runs: new Counter({ name: 'gateway_cohort_runs_total', help: 'cohort sync runs and applied pushes by result (success, failed, skipped)', labelNames: ['connector', 'result'] as const, registers }),
    changes: new Counter({ name: 'gateway_cohort_changes_total', help: 'cohort members added to or removed from Braze (accepted)', labelNames: ['connector', 'change'] as const, registers }),
    skipped: new Counter({ name: 'gateway_cohort_members_skipped_total', help: 'cohort members not sent, by reason (no identifier rule applied, refused by Braze)', labelNames: ['connector', 'reason'] as const, registers }),
    pushes: new Counter({ name: 'gateway_cohort_webhook_requests_total', help: 'POST /cohorts requests by answer status', labelNames: ['status'] as const, registers }),
    members: new Gauge({ name: 'gateway_cohort_members', help: 'members in the snapshot last delivered', labelNames: ['connector'] as const, registers }),
    downloadsLeft: new Gauge({ name: 'gateway_cohort_downloads_left', help: 'cohort exports left in this month\'s download budget', registers }),
  };
  metricsByRegistry.set(m.registry, set);
  return set;
}

const realSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs are attempts, so a thrown RunError carries the health class and the message people see. */
class RunError extends Error {
  constructor(
    readonly cls: FailureClass,
    message: string,
  ) {
    super(message);
  }
}

function monthOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/** the shared values of trait rows that carry none (TRAIT_COMPUTATIONS alone): one object, not one per member */
const NO_VALUES: Record<string, string> = Object.freeze({}) as Record<string, string>;

const EXPORT_LINK_LIFETIME_MS = 7 * 24 * 3_600_000;
/** push deltas recorded on top of a snapshot before a full snapshot folds them in */
const FOLD_EVERY = 200;

class SyncRunner {
  readonly name: string;
  readonly key: string;
  readonly health: ConnectorHealth;
  state: SyncState = 'starting';
  lastRun: RunReport | undefined;
  lastPush: RunReport | undefined;
  nextRunAtMs: number | undefined;
  cohortName: string | undefined;
  timer: NodeJS.Timeout | undefined;
  chain: Promise<unknown> = Promise.resolve();
  /** a webhook batch failed and none has been delivered since (for the recovery notification) */
  pushFailing = false;
  /** the last pull failed (a realtime sync notifies the first failure and the recovery only) */
  lastRunFailed = false;
  pendingPushes = 0;
  closed = false;

  constructor(
    readonly spec: CohortSyncSpec,
    private readonly o: Owner,
  ) {
    this.name = `cohort:${spec.cohortId}`;
    this.key = `${spec.cohortId}.${o.settings.transport}`;
    this.health = o.d.health.connector(this.name, 'cohorts');
    this.health.setPendingProbe(() => ({ count: this.pendingPushes }));
  }

  get cadence(): Cadence {
    return this.spec.cadence;
  }

  /** serialize: pulls and pushes of one sync apply in order */
  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  intervalMs(): number | undefined {
    const s = this.o.settings;
    switch (this.spec.cadence) {
      case 'once':
        return undefined;
      case 'daily':
        return s.dailyIntervalMs;
      case 'hourly':
        // with the webhook feeding it, an hourly sync's pull only reconciles (the quota allows ~16 exports a day)
        return s.webhookToken ? s.reconcileIntervalMs : s.hourlyIntervalMs;
      case 'realtime':
        return s.reconcileIntervalMs;
    }
  }

  schedule(afterMs: number | undefined, trigger: RunReport['trigger']): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.nextRunAtMs = afterMs === undefined ? undefined : this.o.d.clock.now() + afterMs;
    if (afterMs === undefined || this.closed || !this.o.scheduling) return;
    this.timer = setTimeout(() => void this.o.startRun(this, trigger), afterMs);
    this.timer.unref();
  }

  newReport(trigger: RunReport['trigger']): RunReport {
    return { trigger, startedAtMs: this.o.d.clock.now(), result: 'success', adds: 0, removes: 0, unchanged: 0, unidentified: {}, rejected: 0, rejectedSample: [], downloaded: false, exportsRequested: 0, downloadAttempts: 0 };
  }

  /** One pull run, end to end. Never throws: the report says what happened. */
  async pull(trigger: RunReport['trigger']): Promise<RunReport> {
    const { d, settings, store } = this.o;
    const log = d.logger.child({ sync: this.name });
    const r = this.newReport(trigger);
    this.lastRun = r;
    const api = this.o.api;
    if (!api) {
      r.result = 'skipped';
      r.skippedBecause = 'no_pull_credentials';
      r.finishedAtMs = d.clock.now();
      this.state = 'push_only';
      return r;
    }
    this.state = 'running';
    this.health.recordAttempt();
    try {
      const cohort = await this.o.cohortMeta(this.spec.cohortId);
      this.cohortName = cohort.name;
      if (cohort.archived) {
        this.state = 'archived';
        r.result = 'skipped';
        r.skippedBecause = 'archived';
        r.finishedAtMs = d.clock.now();
        log.warn({ cohort: cohort.id }, `cohort ${cohort.id} (${cohort.name}) is archived in Amplitude: its sync stopped; Braze keeps the membership last delivered (remove the sync from COHORT_SYNCS, or unarchive the cohort)`);
        d.notifier?.notify({ event: 'sync_stopped', subject: this.name, text: `Cohort ${cohort.name} (${cohort.id}) is archived in Amplitude: its sync stopped. Braze keeps the membership last delivered.`, atMs: r.finishedAtMs });
        this.health.recordSuccess(0);
        this.o.metrics.runs.inc({ connector: this.name, result: 'skipped' });
        return r;
      }
      const snap = store.snapshot(this.key);
      let pending = store.pendingRequest(this.key);
      if (pending && d.clock.now() - pending.requestedAtMs > EXPORT_LINK_LIFETIME_MS) {
        log.warn({ requestId: pending.requestId }, 'the kept export is older than its 7-day link: requesting a new one');
        await store.setPendingRequest(this.key, undefined);
        pending = undefined;
      }
      // a `once` sync delivered its export: later runs (a restart's) neither export again nor
      // notify, whether or not the cohort moved since
      if (!pending && snap && this.spec.cadence === 'once') {
        r.result = 'skipped';
        r.skippedBecause = 'once_done';
        r.finishedAtMs = d.clock.now();
        this.state = 'synced';
        this.health.recordSuccess(0);
        this.o.metrics.runs.inc({ connector: this.name, result: 'skipped' });
        return r;
      }
      if (!pending && snap && snap.meta.lastComputedMs === cohort.lastComputedMs && snap.meta.lastModMs === cohort.lastModMs) {
        r.result = 'skipped';
        r.skippedBecause = 'unchanged';
        r.finishedAtMs = d.clock.now();
        this.state = 'synced';
        this.health.recordSuccess(0);
        this.o.metrics.runs.inc({ connector: this.name, result: 'skipped' });
        log.info({ lastComputed: new Date(cohort.lastComputedMs).toISOString() }, 'cohort unchanged since the last run (lastComputed has not moved): no export');
        if (this.spec.cadence !== 'realtime') {
          d.notifier?.notify({ event: 'run_succeeded', subject: this.name, text: `Cohort ${cohort.name} (${cohort.id}) checked: unchanged since ${new Date(cohort.lastComputedMs).toISOString()}, nothing to send (${snap.members.size} members in Braze).`, details: { ...this.details(r), unchanged: true }, atMs: r.finishedAtMs });
        }
        this.lastRunFailed = false;
        return r;
      }
      let requestId: string;
      // what the export reflects: a kept export is as old as its request, so a cohort recomputed
      // since is exported again by the next run
      const exported = pending ? { lastComputedMs: pending.lastComputedMs, lastModMs: pending.lastModMs ?? cohort.lastModMs } : { lastComputedMs: cohort.lastComputedMs, lastModMs: cohort.lastModMs };
      if (pending) {
        requestId = pending.requestId;
        log.info({ requestId }, 'fetching the export kept from an earlier run (no new download spent)');
      } else {
        const month = monthOf(d.clock.now());
        const used = store.budgetUsed(month);
        if (used >= settings.downloadBudget) {
          throw new RunError('retryable', `the cohort download budget for ${month} is spent (${used} of ${settings.downloadBudget}, COHORT_DOWNLOAD_BUDGET): no export until next month`);
        }
        // counted before the request: a request whose answer was lost may have been spent
        await store.setBudgetUsed(month, used + 1);
        try {
          requestId = await api.requestExport(this.spec.cohortId, this.o.propKeys);
        } catch (err) {
          if (err instanceof CohortApiError && (err.kind === 'auth' || err.kind === 'bad_request' || err.kind === 'quota')) {
            // refused before it started: Amplitude counted nothing we know of
            await store.setBudgetUsed(month, store.budgetUsed(month) - 1);
          }
          throw err;
        }
        r.exportsRequested = 1;
        await store.setPendingRequest(this.key, { requestId, cohortId: this.spec.cohortId, requestedAtMs: d.clock.now(), propKeys: this.o.propKeys, lastComputedMs: cohort.lastComputedMs, lastModMs: cohort.lastModMs });
        log.info({ requestId }, 'cohort export requested');
      }
      r.requestId = requestId;

      // Amplitude allows 4 exports in parallel and 5 concurrent calls per project, shared with every
      // other tool on the key: the gateway's syncs wait for the job and download two at a time
      const current = await this.o.amplitudeSlots.run(async () => {
        await this.waitForExport(requestId);
        return this.downloadMembers(requestId, r, log);
      });
      r.downloaded = true;

      const previous = snap?.members ?? MemberSet.empty();
      const diff = diffMembers(previous, current.members);
      r.unchanged = diff.unchanged;
      const removes = keysAt(previous, diff.removes);
      const adds = keysAt(current.members, diff.adds);
      const written = await this.o.write(this, adds, removes, cohort.name, r);
      let next: MemberSet;
      if (written.addsAccepted.length === adds.length && written.removesAccepted.length === removes.length) next = current.members;
      else next = applyChange(previous, written.addsAccepted, written.removesAccepted);
      await store.saveSnapshot(this.key, next, {
        lastComputedMs: exported.lastComputedMs,
        lastModMs: exported.lastModMs,
        cohortName: cohort.name,
        savedAtMs: d.clock.now(),
        messageIds: store.appliedIds(this.key),
        ...(written.partnerNamed ? { partnerNamed: written.partnerNamed } : {}),
      });
      await store.setPendingRequest(this.key, undefined);
      this.o.metrics.members.set({ connector: this.name }, next.size);
      if (this.o.traits) {
        try {
          r.traitsSent = await this.o.traits.sync(current.traitRows, d.clock.now());
        } catch (err) {
          log.warn({ err: describeError(err) }, 'trait sync failed; membership was delivered, traits go again next run');
        }
      }
      r.finishedAtMs = d.clock.now();
      this.state = 'synced';
      this.health.recordSuccess(written.addsAccepted.length + written.removesAccepted.length);
      this.o.metrics.runs.inc({ connector: this.name, result: 'success' });
      log.info({ adds: r.adds, removes: r.removes, unchanged: r.unchanged, unidentified: r.unidentified, rejected: r.rejected, members: next.size }, 'cohort sync run delivered');
      if (this.spec.cadence !== 'realtime') {
        d.notifier?.notify({
          event: 'run_succeeded',
          subject: this.name,
          text: `Cohort ${cohort.name} (${cohort.id}) synced to Braze: ${r.adds} added, ${r.removes} removed, ${next.size} members${this.skippedText(r)}.`,
          details: this.details(r),
          atMs: r.finishedAtMs,
        });
      }
      if (this.spec.cadence === 'realtime' && this.pushFailing === false && this.lastRunFailed) {
        d.notifier?.notify({ event: 'sync_recovered', subject: this.name, text: `Realtime cohort sync ${this.name} recovered.`, atMs: r.finishedAtMs });
      }
      this.lastRunFailed = false;
      return r;
    } catch (err) {
      return this.failRun(r, err, log);
    }
  }

  private failRun(r: RunReport, err: unknown, log: Logger): RunReport {
    const { d } = this.o;
    const cls: FailureClass =
      err instanceof RunError ? err.cls : err instanceof WriteFailure ? failureClass(err.failure) : err instanceof CohortApiError ? (err.kind === 'auth' ? 'auth' : err.kind === 'quota' ? 'rate_limited' : err.kind === 'bad_request' ? 'fatal' : 'retryable') : 'retryable';
    const message = describeError(err);
    r.result = 'failed';
    r.error = message;
    r.finishedAtMs = d.clock.now();
    this.state = 'failed';
    this.health.recordFailure(cls, message);
    this.o.metrics.runs.inc({ connector: this.name, result: 'failed' });
    log.error({ err: message, class: cls, requestId: r.requestId }, 'cohort sync run failed: nothing moved; the next run sends the change again');
    const first = !this.lastRunFailed;
    this.lastRunFailed = true;
    if (this.spec.cadence !== 'realtime' || first) {
      d.notifier?.notify({
        event: this.spec.cadence === 'realtime' ? 'sync_failed' : 'run_failed',
        subject: this.name,
        text: `Cohort sync ${this.name}${this.cohortName ? ` (${this.cohortName})` : ''} failed: ${message}. The snapshot did not move; the next run sends the change again.`,
        details: this.details(r),
        atMs: r.finishedAtMs,
      });
    }
    return r;
  }

  skippedText(r: RunReport): string {
    const un = Object.values(r.unidentified).reduce((a, b) => a + b, 0);
    const parts: string[] = [];
    if (un > 0) parts.push(`${un} without a usable identifier`);
    if (r.rejected > 0) parts.push(`${r.rejected} refused by Braze`);
    return parts.length ? `, skipped ${parts.join(' and ')}` : '';
  }

  details(r: RunReport): Record<string, unknown> {
    return { cohort_id: this.spec.cohortId, adds: r.adds, removes: r.removes, unidentified: r.unidentified, rejected: r.rejected, error: r.error ?? null, request_id: r.requestId ?? null };
  }

  private async waitForExport(requestId: string): Promise<void> {
    const { settings, d } = this.o;
    const sleep = d.sleep ?? realSleep;
    const started = Date.now();
    let delay = settings.pollBaseMs;
    for (;;) {
      let done: boolean;
      try {
        done = await this.o.api!.exportDone(requestId);
      } catch (err) {
        if (err instanceof CohortApiError && err.kind === 'not_found') {
          // Amplitude no longer knows the request: the next run asks for a new export
          await this.o.store.setPendingRequest(this.key, undefined);
          throw new RunError('retryable', `Amplitude no longer knows export ${requestId}; the next run requests a new one`);
        }
        if (!(err instanceof CohortApiError) || err.kind !== 'unavailable') throw err;
        done = false; // a 5xx while polling: keep polling until the cap
      }
      if (done) return;
      if (Date.now() - started + delay > settings.pollTimeoutMs) {
        throw new RunError('retryable', `export ${requestId} not ready after ${Math.round((Date.now() - started) / 1000)} s (COHORT_POLL_TIMEOUT_MS); its request id is kept for the next run`);
      }
      await sleep(delay);
      delay = Math.min(settings.pollMaxMs, Math.ceil(delay * 1.5));
    }
  }

  private async downloadMembers(requestId: string, r: RunReport, log: Logger): Promise<{ members: MemberSet; traitRows: TraitRow[] }> {
    const { settings } = this.o;
    let lastErr: unknown;
    for (let attempt = 1; attempt <= settings.downloadAttempts; attempt++) {
      r.downloadAttempts = attempt;
      const builder = new MemberSetBuilder();
      const unidentified: Record<string, number> = {};
      const traitRows: TraitRow[] = [];
      const traitNames = this.o.settings.traits.properties;
      const wantTraits = this.o.traits !== undefined;
      let columns: CohortColumns | undefined;
      const rules = this.spec.identifiers;
      const partner = settings.transport === 'partner';
      const parser = new CsvRowParser((row) => {
        if (!columns) {
          columns = cohortColumns(row);
          return;
        }
        const c = columns;
        const props = c.properties.size > 0 ? new Map<string, string>() : undefined;
        if (props) for (const [k, i] of c.properties) props.set(k, row[i] ?? '');
        const m: MemberInput = { amplitudeId: row[c.amplitudeId], userId: c.userId >= 0 ? row[c.userId] : undefined, deviceId: c.deviceId >= 0 ? row[c.deviceId] : undefined, properties: props };
        const res = resolveMember(m, rules, { partner });
        if (res.ok) builder.add(res.key);
        else unidentified[res.reason] = (unidentified[res.reason] ?? 0) + 1;
        // every member with a user id is a trait row when traits or computations are configured:
        // with TRAIT_COMPUTATIONS alone a row carries no value, but it is whose computations the
        // User Profile API is asked for
        if (wantTraits && m.userId) {
          let values: Record<string, string> = NO_VALUES;
          for (const t of traitNames) {
            const v = props?.get(t);
            // "" is how the export writes a property the user does not have: never sent
            if (v === undefined || v === '') continue;
            if (values === NO_VALUES) values = {};
            values[t] = v;
          }
          traitRows.push({ userId: m.userId, values, lastUsed: props?.get('last_used') || undefined });
        }
      });
      try {
        await this.o.api!.download(requestId, (text) => parser.write(text));
        parser.end();
        if (!columns) throw new CohortApiError('bad_request', 200, 'the export file is empty (no header row)');
        r.unidentified = unidentified;
        for (const [reason, n] of Object.entries(unidentified)) this.o.metrics.skipped.inc({ connector: this.name, reason: `unidentified:${reason}` }, n);
        return { members: builder.build(), traitRows };
      } catch (err) {
        lastErr = err;
        log.warn({ attempt, of: settings.downloadAttempts, err: describeError(err) }, 'export download failed; fetching the file again (no new export spent)');
      }
    }
    throw new RunError('retryable', `the export file could not be downloaded in ${settings.downloadAttempts} attempts (${describeError(lastErr)}); its request id is kept for the next run`);
  }

  /**
   * The TRAIT_PROPERTIES a webhook batch carries (where the destination's template adds user
   * properties), sent like an export's: only what changed. Computations are left to the pulls (one
   * Profile API call per user would hold the webhook's queue). After the membership is stored, and
   * never failing it: a batch is not applied twice for its traits, the next one or pull sends them.
   */
  private async pushTraits(traits: TraitSync, p: StoredPush, r: RunReport, log: Logger): Promise<void> {
    const rows: TraitRow[] = [];
    for (const u of p.users) {
      if (!u.user_id || !u.properties) continue;
      const lastUsed = u.properties.last_used;
      rows.push({ userId: u.user_id, values: u.properties, lastUsed: typeof lastUsed === 'string' && lastUsed !== '' ? lastUsed : undefined });
    }
    if (rows.length === 0) return;
    try {
      r.traitsSent = await traits.sync(rows, this.o.d.clock.now(), { computations: false });
    } catch (err) {
      log.warn({ err: describeError(err) }, 'traits of a webhook batch not sent; its membership was delivered, the next push or pull sends them');
    }
  }

  /** Applies one stored webhook batch. Throws when Braze refused it (the batch stays stored). */
  async applyPush(p: StoredPush): Promise<RunReport> {
    const { d, store } = this.o;
    const log = d.logger.child({ sync: this.name, messageId: p.messageId });
    const r = this.newReport('push');
    r.messageId = p.messageId;
    this.lastPush = r;
    this.health.recordAttempt();
    let snap = store.snapshot(this.key);
    if (!snap) {
      await store.saveSnapshot(this.key, MemberSet.empty(), { savedAtMs: d.clock.now(), messageIds: [] });
      snap = store.snapshot(this.key)!;
    }
    if (store.wasApplied(this.key, p.messageId)) {
      await store.dropPush(p.cohortId, p.messageId);
      r.result = 'skipped';
      r.skippedBecause = 'repeated_message_id';
      r.finishedAtMs = d.clock.now();
      return r;
    }
    // Each member is looked up under every identifier it carries, not only the one it resolves to
    // now: a user delivered under their device alias and identified since resolves to `e:<user_id>`,
    // and the pull path's full diff would remove the alias; a push must do the same, or the alias
    // stays in the cohort in Braze. An enter adds the member's current key and removes any older
    // key the snapshot holds it under; an exit removes whichever keys the snapshot holds.
    const addSet = new Set<string>();
    const removeSet = new Set<string>();
    const seen = new Set<string>();
    const changedMembers = new Set<string>();
    const partner = this.o.settings.transport === 'partner';
    for (const u of p.users) {
      const m: MemberInput = { userId: u.user_id, deviceId: u.device_id, amplitudeId: u.amplitude_id, properties: u.properties };
      const res = resolveMember(m, this.spec.identifiers, { partner });
      if (!res.ok) {
        r.unidentified[res.reason] = (r.unidentified[res.reason] ?? 0) + 1;
        continue;
      }
      // a member listed twice (say with two device ids) is one member; each listing's keys count
      let changed = false;
      if (p.inCohort && !snap.members.has(res.key)) {
        addSet.add(res.key);
        changed = true;
      }
      for (const k of memberKeys(m, this.spec.identifiers, { partner })) {
        if (p.inCohort && k === res.key) continue;
        if (snap.members.has(k)) {
          removeSet.add(k);
          changed = true;
        }
      }
      if (changed) changedMembers.add(res.key);
      else seen.add(res.key);
    }
    for (const [reason, n] of Object.entries(r.unidentified)) this.o.metrics.skipped.inc({ connector: this.name, reason: `unidentified:${reason}` }, n);
    // a key another member of this batch enters under is never removed by it
    const adds = [...addSet];
    const removes = [...removeSet].filter((k) => !addSet.has(k));
    // an enter of a member already delivered, or an exit of one never delivered, changes nothing
    r.unchanged = [...seen].filter((k) => !changedMembers.has(k)).length;
    try {
      const written = await this.o.write(this, adds, removes, this.cohortName ?? snap.meta.cohortName ?? this.spec.cohortId, r);
      const members = applyChange(snap.members, written.addsAccepted, written.removesAccepted);
      if (snap.meta.deltaSeq + 1 >= (d.foldEvery ?? FOLD_EVERY)) {
        await store.saveSnapshot(this.key, members, { ...snap.meta, savedAtMs: d.clock.now(), messageIds: [...store.appliedIds(this.key), p.messageId] });
      } else {
        await store.saveDelta(this.key, p.messageId, written.addsAccepted, written.removesAccepted, members);
      }
      await store.dropPush(p.cohortId, p.messageId);
      this.o.metrics.members.set({ connector: this.name }, members.size);
      if (this.o.traits) await this.pushTraits(this.o.traits, p, r, log);
      r.finishedAtMs = d.clock.now();
      this.health.recordSuccess(written.addsAccepted.length + written.removesAccepted.length);
      this.o.metrics.runs.inc({ connector: this.name, result: 'success' });
      if (this.state !== 'archived') this.state = 'synced';
      log.info({ inCohort: p.inCohort, adds: r.adds, removes: r.removes, unchanged: r.unchanged, unidentified: r.unidentified }, 'cohort webhook batch delivered');
      if (this.pushFailing) {
        this.pushFailing = false;
        d.notifier?.notify({ event: 'sync_recovered', subject: this.name, text: `Cohort sync ${this.name} recovered: webhook batches are delivered again.`, atMs: r.finishedAtMs });
      }
      return r;
    } catch (err) {
      const message = describeError(err);
      r.result = 'failed';
      r.error = message;
      r.finishedAtMs = d.clock.now();
      this.state = 'failed';
      this.health.recordFailure(err instanceof WriteFailure ? failureClass(err.failure) : 'retryable', message);
      this.o.metrics.runs.inc({ connector: this.name, result: 'failed' });
      log.error({ err: message }, 'cohort webhook batch not delivered; it stays stored and is tried again');
      if (!this.pushFailing) {
        this.pushFailing = true;
        d.notifier?.notify({ event: 'sync_failed', subject: this.name, text: `Cohort sync ${this.name} failed to deliver a webhook batch: ${message}. It is kept and tried again.`, details: this.details(r), atMs: r.finishedAtMs });
      }
      throw err;
    }
  }

  statusJson(): Record<string, unknown> {
    const snap = this.o.store.snapshot(this.key);
    const report = (x: RunReport | undefined): Record<string, unknown> | null =>
      x === undefined
        ? null
        : {
            trigger: x.trigger,
            started_at: iso(x.startedAtMs),
            finished_at: iso(x.finishedAtMs),
            result: x.result,
            skipped_because: x.skippedBecause ?? null,
            adds: x.adds,
            removes: x.removes,
            unchanged: x.unchanged,
            skipped: { unidentified: x.unidentified, rejected_by_braze: x.rejected, rejected_sample: x.rejectedSample },
            error: x.error ?? null,
            downloaded: x.downloaded,
            exports_requested: x.exportsRequested,
            download_attempts: x.downloadAttempts,
            request_id: x.requestId ?? null,
            ...(x.messageId ? { message_id: x.messageId } : {}),
            ...(x.traitsSent !== undefined ? { traits_sent: x.traitsSent } : {}),
          };
    return {
      cohort_id: this.spec.cohortId,
      cohort_name: this.cohortName ?? snap?.meta.cohortName ?? null,
      cadence: this.spec.cadence,
      destination: this.o.settings.transport,
      connector: this.name,
      state: this.state,
      health: this.health.snapshot().state,
      members: snap?.members.size ?? 0,
      last_computed: iso(snap?.meta.lastComputedMs),
      last_run: report(this.lastRun),
      last_push: report(this.lastPush),
      pending_pushes: this.pendingPushes,
      export_kept: this.o.store.pendingRequest(this.key)?.requestId ?? null,
      next_run: iso(this.nextRunAtMs),
    };
  }
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

function failureClass(f: WriteFailure['failure']): FailureClass {
  switch (f) {
    case 'auth':
      return 'auth';
    case 'configuration':
      return 'fatal';
    case 'rate_limited':
      return 'rate_limited';
    case 'unavailable':
      return 'retryable';
  }
}

/** At most `n` tasks at once; the others wait in order. */
class Slots {
  private busy = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly n: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy >= this.n) await new Promise<void>((r) => this.waiting.push(r));
    this.busy++;
    try {
      return await fn();
    } finally {
      this.busy--;
      this.waiting.shift()?.();
    }
  }
}

/** What the runners share. */
class Owner {
  readonly settings: CohortSettings;
  readonly store: CohortStore;
  readonly api: AmplitudeCohortApi | undefined;
  readonly partner: PartnerClient | undefined;
  readonly metrics: Metricset;
  readonly runners = new Map<string, SyncRunner>();
  readonly propKeys: string[];
  readonly traits: TraitSync | undefined;
  scheduling: boolean;
  private listInFlight: Promise<CohortMeta[]> | undefined;
  private pushChain: Promise<void> = Promise.resolve();
  started = false;
  readonly amplitudeSlots = new Slots(2);

  constructor(readonly d: CohortSyncDeps) {
    const settings = d.config.cohorts;
    if (!settings) throw new Error('buildCohortSync: the cohort sync is off (COHORT_SYNCS or the Braze credentials are not set)');
    this.settings = settings;
    this.scheduling = d.schedule ?? true;
    this.metrics = cohortMetrics(d.metrics);
    this.store = new CohortStore({
      kafka: d.kafka,
      producer: d.producer,
      topic: d.config.topics.cohorts,
      logger: d.logger.child({ component: 'cohort-store' }),
      fetchMaxWaitMs: d.config.kafka.fetchMaxWaitMs,
      groupIdPrefix: `${d.config.kafka.groupId}.cohort-reader`,
    });
    const amp = d.config.amplitude;
    this.api = amp.apiKey && amp.secretKey ? new AmplitudeCohortApi({ apiUrl: amp.apiUrl, apiKey: amp.apiKey, secretKey: amp.secretKey, timeoutMs: settings.apiTimeoutMs }) : undefined;
    const braze = d.config.braze;
    this.partner =
      settings.partner && braze
        ? new PartnerClient({ restEndpoint: braze.restEndpoint, partnerApiKey: settings.partner.apiKey, dataImportKey: settings.partner.dataImportKey, partnerName: settings.partner.partnerName, requestTimeoutMs: braze.requestTimeoutMs })
        : undefined;
    // last_used comes with any trait sync, computations included: the 90-day filter is applied
    // to the export's rows before a User Profile API call is spent on an inactive user
    const traitsOn = settings.traits.properties.length > 0 || settings.traits.computations.length > 0;
    this.propKeys = [...new Set([...settings.traits.properties, ...(traitsOn ? ['last_used'] : []), ...propertySources(settings)])];
    this.traits = traitsOn
      ? new TraitSync({ settings: settings.traits, amplitude: amp, braze: d.braze, maxPerRequest: this.maxPerRequest(), store: this.store, logger: d.logger.child({ component: 'traits' }), sleep: d.sleep ?? realSleep, writeOptions: this.writeOptions() })
      : undefined;
    for (const spec of settings.syncs) this.runners.set(spec.cohortId, new SyncRunner(spec, this));
  }

  maxPerRequest(): number {
    const b = this.d.config.braze;
    if (!b) return 75;
    return b.maxTotal > 0 ? Math.min(b.maxTotal, b.maxPerArray) : b.maxPerArray;
  }

  writeOptions(): Parameters<typeof writeAll>[2] {
    const b = this.d.config.braze;
    return {
      concurrency: this.settings.brazeConcurrency,
      maxRetries: this.settings.brazeMaxRetries,
      retryBaseMs: b?.retryBaseMs ?? 500,
      retryMaxMs: b?.retryMaxMs ?? 8_000,
      ...(this.d.sleep ? { sleep: this.d.sleep } : {}),
      onAnswer: (a) => {
        this.d.metrics.requests.inc({ destination: 'braze_cohorts', status: String(a.status) });
      },
    };
  }

  /** the cohort list; runs that ask while a fetch is in flight share it */
  async cohortMeta(cohortId: string): Promise<CohortMeta> {
    if (!this.listInFlight) {
      const list = this.api!.listCohorts();
      this.listInFlight = list;
      const clear = (): void => {
        if (this.listInFlight === list) this.listInFlight = undefined;
      };
      list.then(clear, clear);
    }
    const list = await this.listInFlight;
    const c = list.find((x) => x.id === cohortId);
    if (!c) throw new RunError('fatal', `cohort ${cohortId} is not in the project's cohort list (GET /api/3/cohorts): check COHORT_SYNCS and the API key's project`);
    return c;
  }

  /** Removes, then adds (so a re-identified user is never left out), through the configured transport. */
  async write(runner: SyncRunner, adds: string[], removes: string[], cohortName: string, r: RunReport): Promise<{ addsAccepted: string[]; removesAccepted: string[]; partnerNamed?: string }> {
    const cohortId = runner.spec.cohortId;
    let partnerNamed: string | undefined;
    const transport = (op: 'add' | 'remove'): Transport<string> =>
      this.partner ? partnerMembershipTransport(this.partner, cohortId, op) : trackMembershipTransport(this.d.braze, { cohortId, attribute: this.settings.attribute, op, maxPerRequest: this.maxPerRequest() });
    if (this.partner && (adds.length > 0 || removes.length > 0)) {
      const snap = this.store.snapshot(runner.key);
      if (snap?.meta.partnerNamed !== cohortName) {
        // named through the same outcome handling: a 423 or 5xx is retried, a refused key fails the run
        const partner = this.partner;
        const naming: Transport<string> = { name: 'partner', maxPerRequest: 1, encode: (names) => names[0]!, post: (name) => partner.nameCohort(cohortId, name, this.d.clock.now()) };
        const named = await writeAll([`[Amplitude] ${cohortName}: ${cohortId}`], naming, this.writeOptions());
        if (named.acceptedCount !== 1) throw new WriteFailure('configuration', `Braze's partner API refused the cohort name: ${[...named.rejected.values()].join('; ')}`, 400);
        partnerNamed = cohortName;
      }
    }
    const opts = this.writeOptions();
    const pick = (keys: string[], w: WriteResult, op: 'add' | 'remove'): string[] => {
      const out: string[] = [];
      for (let i = 0; i < keys.length; i++) if (w.accepted[i] === 1) out.push(keys[i]!);
      for (const [i, why] of w.rejected) {
        r.rejected++;
        if (r.rejectedSample.length < 5) r.rejectedSample.push(`${op} ${keys[i]!.replace('\u0000', ':')}: ${why}`);
      }
      if (w.rejected.size > 0) this.metrics.skipped.inc({ connector: runner.name, reason: 'rejected_by_braze' }, w.rejected.size);
      return out;
    };
    const rem = removes.length > 0 ? await writeAll(removes, transport('remove'), opts) : undefined;
    const removesAccepted = rem ? pick(removes, rem, 'remove') : [];
    r.removes = removesAccepted.length;
    this.metrics.changes.inc({ connector: runner.name, change: 'remove' }, removesAccepted.length);
    const add = adds.length > 0 ? await writeAll(adds, transport('add'), opts) : undefined;
    const addsAccepted = add ? pick(adds, add, 'add') : [];
    r.adds = addsAccepted.length;
    this.metrics.changes.inc({ connector: runner.name, change: 'add' }, addsAccepted.length);
    return { addsAccepted, removesAccepted, ...(partnerNamed ? { partnerNamed } : {}) };
  }

  /** Applies stored pushes in arrival order; a failed one is retried after a pause, later ones wait behind it. */
  enqueuePush(p: StoredPush): void {
    const runner = this.runners.get(p.cohortId);
    if (!runner) return;
    runner.pendingPushes++;
    this.pushChain = this.pushChain.then(async () => {
      const sleep = this.d.sleep ?? realSleep;
      for (let attempt = 0; !runner.closed; attempt++) {
        try {
          await runner.enqueue(() => runner.applyPush(p));
          break;
        } catch {
          if (runner.closed) break;
          await sleep(Math.min(this.settings.retryFailedRunMs, (this.d.config.braze?.retryBaseMs ?? 500) * 2 ** Math.min(attempt, 10)));
        }
      }
      runner.pendingPushes--;
    });
  }

  pushesSettled(): Promise<void> {
    return this.pushChain;
  }

  /** one pull, then the next one scheduled by its outcome */
  startRun(runner: SyncRunner, trigger: RunReport['trigger']): Promise<RunReport> {
    return runner.enqueue(async () => {
      const report = await runner.pull(trigger);
      if (report.result === 'failed') runner.schedule(this.settings.retryFailedRunMs, 'schedule');
      else if (report.skippedBecause === 'archived' || report.skippedBecause === 'no_pull_credentials') runner.schedule(undefined, 'schedule');
      else if (runner.cadence === 'once') runner.schedule(undefined, 'schedule');
      else runner.schedule(runner.intervalMs(), 'schedule');
      return report;
    });
  }

  downloadsLeft(): { month: string; limit: number; used: number; left: number } {
    const month = monthOf(this.d.clock.now());
    const used = this.store.budgetUsed(month);
    return { month, limit: this.settings.downloadBudget, used, left: Math.max(0, this.settings.downloadBudget - used) };
  }
}

/** properties the identifier rules read from the export (property:NAME sources) */
function propertySources(s: CohortSettings): string[] {
  const out: string[] = [];
  for (const spec of s.syncs) for (const r of spec.identifiers) if (r.source.kind === 'user_property') out.push(r.source.name);
  return out;
}

export function buildCohortSync(d: CohortSyncDeps): CohortSync {
  const o = new Owner(d);
  const log = d.logger.child({ component: 'cohorts' });
  let loaded = false;

  const status = (): CohortStatus => ({
    now: new Date(d.clock.now()).toISOString(),
    transport: o.settings.transport,
    budget: o.downloadsLeft(),
    syncs: [...o.runners.values()].map((r) => r.statusJson()),
  });

  const routes = cohortRoutes({
    settings: o.settings,
    store: o.store,
    knows: (id) => o.runners.has(id),
    applied: (id, messageId) => {
      const r = o.runners.get(id);
      return r ? o.store.wasApplied(r.key, messageId) : false;
    },
    onStored: (p) => o.enqueuePush(p),
    loaded: () => loaded,
    status,
    clock: d.clock,
    logger: d.logger.child({ component: 'cohort-webhook' }),
    requests: o.metrics.pushes,
  });

  d.metrics.onCollect(() => {
    o.metrics.downloadsLeft.set(o.downloadsLeft().left);
  });

  const startRun = (runner: SyncRunner, trigger: RunReport['trigger']): Promise<RunReport> => o.startRun(runner, trigger);

  return {
    routes,
    async start() {
      const loadedInfo = await o.store.load();
      loaded = true;
      log.info({ topic: d.config.topics.cohorts, records: loadedInfo.records, ms: loadedInfo.ms, syncs: o.settings.syncs.map((s) => `${s.cohortId}:${s.cadence}`), transport: o.settings.transport }, 'cohort sync on');
      if (!o.api) log.warn('cohort pull off: AMPLITUDE_API_KEY and AMPLITUDE_SECRET_KEY are needed for the cohort export API; only webhook pushes (POST /cohorts) are applied');
      if (!o.settings.webhookToken && o.settings.syncs.some((s) => s.cadence === 'realtime')) log.warn('a realtime sync needs Amplitude\'s webhook: set COHORT_WEBHOOK_TOKEN (POST /cohorts); until then it is only reconciled by exports');
      for (const p of o.store.storedPushes()) o.enqueuePush(p);
      for (const r of o.runners.values()) {
        const snap = o.store.snapshot(r.key);
        if (snap) o.metrics.members.set({ connector: r.name }, snap.members.size);
        if (o.scheduling) void startRun(r, 'start');
      }
      o.started = true;
    },
    async close() {
      for (const r of o.runners.values()) {
        r.closed = true;
        if (r.timer) clearTimeout(r.timer);
      }
      // first: a run fetching computations stops doing so, or its runner's chain would hold the close
      const traitsClosed = o.traits?.close();
      await Promise.all([...o.runners.values()].map((r) => r.chain));
      await o.api?.close();
      await o.partner?.close();
      await traitsClosed;
    },
    ready: () => loaded,
    runNow: (cohortId) => {
      const r = o.runners.get(cohortId);
      if (!r) return Promise.reject(new Error(`no sync for cohort ${cohortId}`));
      return startRun(r, 'manual');
    },
    pushesSettled: () => o.pushesSettled(),
    status,
  };
}
