import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';
import type { DeadLetterReason } from '../delivery/outcome.js';
import { loadConfig, type HealthSettings } from '../config/config.js';

export type ConnectorState = 'healthy' | 'idle' | 'degraded' | 'failing' | 'expired';
export type ConnectorKind = 'braze' | 'amplitude' | 'cohorts';

export const CONNECTOR_STATES: readonly ConnectorState[] = ['healthy', 'idle', 'degraded', 'failing', 'expired'];

/** Worse first: the merged view of several instances takes the worst live state. */
const SEVERITY: Record<ConnectorState, number> = { idle: 0, healthy: 1, degraded: 2, failing: 3, expired: 4 };

/**
 * Which dead letters say something about the destination connector.
 *
 * - `destination`: the destination saw the event and refused it for good (per-item errors, a 400
 *   naming it, too large even alone). These weigh on health: a connector whose destination
 *   rejects most of what it is sent is not healthy, whatever its HTTP statuses say (a wrong
 *   mapping, a schema the destination changed, an id rule: all need an operator).
 * - `input`: the gateway refused the event before sending it (not JSON, no identifier, a
 *   forbidden key...). That is a fault of whoever produced the event, and the destination
 *   account is fine, so it does not move the connector's state; it is counted
 *   (`deadLettered`, and `gateway_events_dead_lettered_total{reason}`).
 * - `limit`: the gateway's own limits and clocks (daily quota, drop window...): counted; the drop
 *   window has its own state, `expired`.
 *
 * A Record over the closed set, so a new reason does not compile until it is classified here.
 */
export const DEAD_LETTER_CLASS: Record<DeadLetterReason, 'destination' | 'input' | 'limit'> = {
  not_json: 'input',
  invalid_json: 'input',
  invalid_utf8: 'input',
  not_object: 'input',
  too_deep: 'input',
  string_too_long: 'input',
  forbidden_key: 'input',
  missing_id: 'input',
  missing_event_type: 'input',
  invalid_time: 'input',
  invalid_user: 'input',
  invalid_properties: 'input',
  no_identity: 'input',
  no_identifier: 'input',
  no_event_type: 'input',
  missing_name: 'input',
  // only Amplitude's answers produce it (a 400 naming no event, halved down to one): the destination refused it
  invalid_event: 'destination',
  unsupported_event: 'input',
  rejected_by_destination: 'destination',
  rejected_unattributed: 'destination',
  too_large: 'destination',
  too_large_single: 'destination',
  invalid_fields: 'destination',
  missing_fields: 'destination',
  invalid_id: 'destination',
  silenced_device: 'destination',
  daily_quota: 'limit',
  rate_limit: 'limit',
  drop_window_expired: 'limit',
  no_retry_topic: 'limit',
};

export interface PendingProbe {
  count: number;
  /** when the oldest undelivered event was first seen by the gateway (ms), if any is pending */
  oldestMs?: number;
}

/** What is persisted and shown on /connectors. Times are epoch ms, absent when never happened. */
export interface ConnectorRecord {
  name: string;
  kind: ConnectorKind;
  lastSuccessMs?: number;
  lastAttemptMs?: number;
  lastErrorClass?: FailureClass;
  lastError?: string;
  failingSinceMs?: number;
  /** set when the drop window moved events away; cleared by the next success */
  expiredAtMs?: number;
  delivered: number;
  /** events dead-lettered for this connector, whatever the reason (lifetime, like delivered) */
  deadLettered: number;
  /** of those, the ones the destination refused (DEAD_LETTER_CLASS 'destination') */
  rejected: number;
}

/** Deliveries and destination rejections over the recent window. */
export interface RecentOutcomes {
  windowMs: number;
  delivered: number;
  rejected: number;
  /** rejected / (delivered + rejected); 0 when nothing finished in the window */
  rejectionRatio: number;
}

export interface ConnectorSnapshot extends ConnectorRecord {
  state: ConnectorState;
  /** why the state is what it is, when it is not plainly healthy or idle */
  stateReason?: string;
  pending: number;
  oldestPendingAgeMs?: number;
  secondsSinceLastSuccess?: number;
  recent: RecentOutcomes;
}

/** The settings health is judged by (HealthSettings from the configuration). */
export type HealthOptions = Pick<HealthSettings, 'instanceId' | 'instanceStaleMs' | 'rejectionWindowMs' | 'rejectionPercent' | 'rejectionMinEvents' | 'dropWindowMs'>;

let defaults: HealthOptions | undefined;
/** The configuration module's defaults, for registries built without settings (tests, tools). */
export function defaultHealthOptions(): HealthOptions {
  defaults ??= loadConfig({}, { requireKafka: false }).health;
  return defaults;
}

const BUCKETS = 10;

/** Counts per time bucket over a sliding window (10 buckets), so old outcomes age out without a timer. */
class RecentCounter {
  private readonly bucketMs: number;
  private readonly epoch = new Array<number>(BUCKETS).fill(-1);
  private readonly delivered = new Array<number>(BUCKETS).fill(0);
  private readonly rejected = new Array<number>(BUCKETS).fill(0);

  constructor(readonly windowMs: number) {
    this.bucketMs = Math.max(1, Math.ceil(windowMs / BUCKETS));
  }

  add(kind: 'delivered' | 'rejected', n: number, nowMs: number): void {
    if (n <= 0) return;
    const k = Math.floor(nowMs / this.bucketMs);
    const slot = k % BUCKETS;
    if (this.epoch[slot] !== k) {
      this.epoch[slot] = k;
      this.delivered[slot] = 0;
      this.rejected[slot] = 0;
    }
    this[kind][slot]! += n;
  }

  totals(nowMs: number): RecentOutcomes {
    const k = Math.floor(nowMs / this.bucketMs);
    let delivered = 0;
    let rejected = 0;
    for (let slot = 0; slot < BUCKETS; slot++) {
      const e = this.epoch[slot]!;
      if (e <= k && e > k - BUCKETS) {
        delivered += this.delivered[slot]!;
        rejected += this.rejected[slot]!;
      }
    }
    return recentOutcomes(this.windowMs, delivered, rejected);
  }
}

function recentOutcomes(windowMs: number, delivered: number, rejected: number): RecentOutcomes {
  const finished = delivered + rejected;
  return { windowMs, delivered, rejected, rejectionRatio: finished === 0 ? 0 : rejected / finished };
}

/** A reason to call the connector degraded for what its destination rejects, or undefined. */
function rejectionReason(r: RecentOutcomes, o: Pick<HealthOptions, 'rejectionPercent' | 'rejectionMinEvents'>): string | undefined {
  const finished = r.delivered + r.rejected;
  if (finished < o.rejectionMinEvents || r.rejectionRatio * 100 < o.rejectionPercent) return undefined;
  return `the destination rejected ${r.rejected} of the ${finished} events finished in the last ${Math.round(r.windowMs / 1000)} s (${Math.round(r.rejectionRatio * 100)}%; degraded at ${o.rejectionPercent}%)`;
}

/**
 * The health of one connector (one destination account) in this instance. Pure bookkeeping over
 * an injected clock; the legs report attempts and outcomes, and the state is derived, never set by
 * hand, so it cannot disagree with the facts it is made from.
 */
export class ConnectorHealth {
  private rec: ConnectorRecord;
  private probe: () => PendingProbe = () => ({ count: 0 });
  private readonly sinceStart = { delivered: 0, deadLettered: 0, rejected: 0 };
  private readonly recent: RecentCounter;
  private readonly options: HealthOptions;

  constructor(
    name: string,
    kind: ConnectorKind,
    private readonly clock: Clock,
    options?: HealthOptions,
  ) {
    this.rec = { name, kind, delivered: 0, deadLettered: 0, rejected: 0 };
    this.options = options ?? defaultHealthOptions();
    this.recent = new RecentCounter(this.options.rejectionWindowMs);
  }

  get name(): string {
    return this.rec.name;
  }

  get kind(): ConnectorKind {
    return this.rec.kind;
  }

  setPendingProbe(probe: () => PendingProbe): void {
    this.probe = probe;
  }

  recordAttempt(): void {
    this.rec.lastAttemptMs = this.clock.now();
  }

  /** `delivered` events reached the destination (0 for a 2xx that carried nothing to count). */
  recordSuccess(delivered: number): void {
    const now = this.clock.now();
    this.rec.lastAttemptMs = now;
    this.rec.lastSuccessMs = now;
    this.rec.delivered += delivered;
    this.sinceStart.delivered += delivered;
    this.recent.add('delivered', delivered, now);
    delete this.rec.failingSinceMs;
    delete this.rec.lastErrorClass;
    delete this.rec.lastError;
    delete this.rec.expiredAtMs;
  }

  recordFailure(cls: FailureClass, message: string): void {
    const now = this.clock.now();
    this.rec.lastAttemptMs = now;
    this.rec.lastErrorClass = cls;
    this.rec.lastError = message.slice(0, 500);
    this.rec.failingSinceMs ??= now;
  }

  /**
   * `count` events of this connector were written to the dead-letter topic for `reason`. Every
   * reason is counted; those the destination gave (DEAD_LETTER_CLASS 'destination') also weigh
   * against deliveries over the recent window, and a connector whose destination rejects
   * `rejectionPercent` or more of at least `rejectionMinEvents` finished events is `degraded`.
   */
  recordDeadLettered(count: number, reason: DeadLetterReason): void {
    if (!(count > 0)) return;
    this.rec.deadLettered += count;
    this.sinceStart.deadLettered += count;
    if (DEAD_LETTER_CLASS[reason] === 'destination') {
      this.rec.rejected += count;
      this.sinceStart.rejected += count;
      this.recent.add('rejected', count, this.clock.now());
    }
  }

  markExpired(): void {
    this.rec.expiredAtMs = this.clock.now();
  }

  /** Restores persisted facts (after a restart) without losing what happened since start-up. */
  restore(saved: ConnectorRecord): void {
    const cur = this.rec;
    const newer = (a?: number, b?: number) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));
    this.rec = {
      ...(cur.lastSuccessMs === undefined ? saved : {}), // a success since start-up ends the saved failure/expiry
      ...cur,
      lastSuccessMs: newer(saved.lastSuccessMs, cur.lastSuccessMs),
      lastAttemptMs: newer(saved.lastAttemptMs, cur.lastAttemptMs),
      // saved + this process's own count, so restoring the same record twice does not double it
      delivered: saved.delivered + this.sinceStart.delivered,
      deadLettered: saved.deadLettered + this.sinceStart.deadLettered,
      rejected: saved.rejected + this.sinceStart.rejected,
    };
    if (cur.lastSuccessMs === undefined && saved.failingSinceMs !== undefined) {
      this.rec.failingSinceMs = saved.failingSinceMs;
      if (saved.lastErrorClass !== undefined && cur.lastErrorClass === undefined) this.rec.lastErrorClass = saved.lastErrorClass;
    }
    if (cur.lastSuccessMs === undefined && saved.expiredAtMs !== undefined) this.rec.expiredAtMs = saved.expiredAtMs;
  }

  record(): ConnectorRecord {
    return { ...this.rec };
  }

  snapshot(): ConnectorSnapshot {
    const now = this.clock.now();
    const p = this.probe();
    const r = this.rec;
    const recent = this.recent.totals(now);
    let state: ConnectorState;
    let stateReason: string | undefined;
    const rejecting = rejectionReason(recent, this.options);
    if (r.expiredAtMs !== undefined) {
      state = 'expired';
      stateReason = 'the drop window moved pending events to the dead-letter topic; replay them once the connector delivers again';
    } else if (r.lastErrorClass === 'auth' || r.lastErrorClass === 'fatal') {
      state = 'failing';
      stateReason = r.lastError ?? r.lastErrorClass;
    } else if (r.lastErrorClass !== undefined) {
      state = 'degraded';
      stateReason = `retrying (${r.lastErrorClass}): ${r.lastError ?? ''}`;
    } else if (rejecting !== undefined) {
      state = 'degraded';
      stateReason = rejecting;
    } else if (p.count === 0) state = 'idle';
    else state = 'healthy';
    return {
      ...r,
      state,
      ...(stateReason !== undefined ? { stateReason } : {}),
      pending: p.count,
      ...(p.oldestMs !== undefined ? { oldestPendingAgeMs: Math.max(0, now - p.oldestMs) } : {}),
      ...(r.lastSuccessMs !== undefined ? { secondsSinceLastSuccess: (now - r.lastSuccessMs) / 1000 } : {}),
      recent,
    };
  }

  /** What this instance saves for the connector: its facts, plus the derived state others merge. */
  instanceRecord(instance: string, savedAt: number): InstanceRecord {
    const s = this.snapshot();
    const p = this.probe();
    return {
      ...this.record(),
      instance,
      savedAt,
      state: s.state,
      pending: s.pending,
      ...(p.oldestMs !== undefined ? { oldestPendingMs: p.oldestMs } : {}),
      recentDelivered: s.recent.delivered,
      recentRejected: s.recent.rejected,
    };
  }
}

/**
 * A connector's record as one instance saved it in the state topic: the facts, plus what that
 * instance derived when it saved (state, pending, recent outcomes), which the others cannot derive.
 * Records written before instances existed (keyed by connector only) read as instance
 * LEGACY_INSTANCE with no derived fields.
 */
export interface InstanceRecord extends ConnectorRecord {
  instance: string;
  savedAt: number;
  state?: ConnectorState;
  pending?: number;
  oldestPendingMs?: number;
  recentDelivered?: number;
  recentRejected?: number;
}

/** The instance of a record keyed by connector name only (written before records were per instance). */
export const LEGACY_INSTANCE = '(unknown)';

/** One instance's part of a connector in /connectors. */
export interface InstanceView {
  instance: string;
  /** this process */
  self: boolean;
  /** not saved for longer than instanceStaleMs: its state, errors and pending no longer count */
  stale: boolean;
  /** when the record was saved (now, for this process) */
  savedAtMs: number;
  state: ConnectorState | 'unknown';
  pending: number;
  oldestPendingAgeMs?: number;
  lastSuccessMs?: number;
  lastAttemptMs?: number;
  lastErrorClass?: FailureClass;
  lastError?: string;
  failingSinceMs?: number;
  expiredAtMs?: number;
  delivered: number;
  deadLettered: number;
  rejected: number;
  recentDelivered: number;
  recentRejected: number;
}

/** A connector over every instance that reports it: the same fields as one instance's snapshot, plus the instances. */
export interface MergedConnectorSnapshot extends ConnectorSnapshot {
  instances: InstanceView[];
}

export class HealthRegistry {
  private readonly connectors = new Map<string, ConnectorHealth>();
  /** other instances' latest records: connector name → instance → record */
  private readonly peerRecords = new Map<string, Map<string, InstanceRecord>>();
  readonly options: HealthOptions;

  constructor(
    readonly clock: Clock,
    options?: HealthOptions,
  ) {
    this.options = options ?? defaultHealthOptions();
  }

  get instanceId(): string {
    return this.options.instanceId;
  }

  connector(name: string, kind: ConnectorKind): ConnectorHealth {
    let c = this.connectors.get(name);
    if (!c) {
      c = new ConnectorHealth(name, kind, this.clock, this.options);
      this.connectors.set(name, c);
    }
    return c;
  }

  all(): ConnectorHealth[] {
    return [...this.connectors.values()];
  }

  /** This instance's connectors (the metrics, the drop window and the notifications use these). */
  snapshots(): ConnectorSnapshot[] {
    return this.all().map((c) => c.snapshot());
  }

  /**
   * Takes in another instance's record (read from the state topic). An older record than the one
   * held for the same connector and instance is ignored; this instance's own records are too.
   */
  observe(rec: InstanceRecord): void {
    if (rec.instance === this.instanceId) return;
    let byInstance = this.peerRecords.get(rec.name);
    if (!byInstance) {
      byInstance = new Map();
      this.peerRecords.set(rec.name, byInstance);
    }
    const held = byInstance.get(rec.instance);
    if (held === undefined || rec.savedAt >= held.savedAt) byInstance.set(rec.instance, rec);
  }

  /** A tombstone for another instance's record. */
  forget(name: string, instance: string): void {
    const byInstance = this.peerRecords.get(name);
    byInstance?.delete(instance);
    if (byInstance?.size === 0) this.peerRecords.delete(name);
  }

  /** Other instances' records, newest knowledge of each. */
  peers(): InstanceRecord[] {
    return [...this.peerRecords.values()].flatMap((m) => [...m.values()]);
  }

  /** Records of other instances not saved since before `cutoffMs` (for clean-up). */
  peersSavedBefore(cutoffMs: number): InstanceRecord[] {
    return this.peers().filter((r) => r.savedAt < cutoffMs);
  }

  /**
   * Each connector over every instance that reports it, for /connectors:
   * - an instance is live when it is this process or saved within `instanceStaleMs`; a stale one
   *   is listed (stale: true) but its state, errors and pending no longer count, so an instance
   *   that went away cannot keep the connector failing forever (its partitions, and so its pending
   *   events, have moved to the live instances anyway);
   * - state: the worst of the live instances' (expired, failing, degraded, healthy, idle), and
   *   degraded too when the live instances' recent outcomes together reach the rejection rule;
   * - last success and last attempt: the latest of all instances, stale ones included (a success
   *   is a fact about the account, whoever had it); delivered and dead-lettered: summed over all;
   * - pending: summed over the live instances; oldest pending: the oldest of theirs; failing
   *   since: the earliest of theirs.
   */
  merged(): MergedConnectorSnapshot[] {
    const now = this.clock.now();
    const names = new Map<string, ConnectorKind>();
    for (const c of this.connectors.values()) names.set(c.name, c.kind);
    for (const [name, byInstance] of this.peerRecords) {
      const first = byInstance.values().next().value;
      if (first !== undefined && !names.has(name)) names.set(name, first.kind);
    }
    const out: MergedConnectorSnapshot[] = [];
    for (const [name, kind] of names) {
      const views: InstanceView[] = [];
      const own = this.connectors.get(name);
      if (own) views.push(selfView(this.instanceId, own.snapshot(), now));
      for (const rec of this.peerRecords.get(name)?.values() ?? []) views.push(peerView(rec, now, this.options.instanceStaleMs));
      out.push(mergeViews(name, kind, views, now, this.options));
    }
    return out;
  }

  /** The body of GET /connectors: the merged view, with ISO times next to the epoch ones. */
  report(): ConnectorsReport {
    const now = this.clock.now();
    return {
      now: new Date(now).toISOString(),
      instance: this.instanceId,
      connectors: this.merged().map((s) => ({
        ...s,
        lastSuccess: iso(s.lastSuccessMs),
        lastAttempt: iso(s.lastAttemptMs),
        failingSince: iso(s.failingSinceMs),
        expiredAt: iso(s.expiredAtMs),
        instances: s.instances.map((v) => ({ ...v, savedAt: iso(v.savedAtMs), lastSuccess: iso(v.lastSuccessMs) })),
      })),
    };
  }
}

export interface ConnectorsReport {
  now: string;
  /** the instance that answered */
  instance: string;
  connectors: Array<
    MergedConnectorSnapshot & {
      lastSuccess: string | null;
      lastAttempt: string | null;
      failingSince: string | null;
      expiredAt: string | null;
      instances: Array<InstanceView & { savedAt: string | null; lastSuccess: string | null }>;
    }
  >;
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

function selfView(instance: string, s: ConnectorSnapshot, now: number): InstanceView {
  return {
    instance,
    self: true,
    stale: false,
    savedAtMs: now,
    state: s.state,
    pending: s.pending,
    ...optionalFacts(s),
    ...(s.oldestPendingAgeMs !== undefined ? { oldestPendingAgeMs: s.oldestPendingAgeMs } : {}),
    delivered: s.delivered,
    deadLettered: s.deadLettered,
    rejected: s.rejected,
    recentDelivered: s.recent.delivered,
    recentRejected: s.recent.rejected,
  };
}

function peerView(r: InstanceRecord, now: number, staleMs: number): InstanceView {
  return {
    instance: r.instance,
    self: false,
    stale: now - r.savedAt > staleMs,
    savedAtMs: r.savedAt,
    state: r.state ?? 'unknown',
    pending: r.pending ?? 0,
    ...optionalFacts(r),
    ...(r.oldestPendingMs !== undefined ? { oldestPendingAgeMs: Math.max(0, now - r.oldestPendingMs) } : {}),
    delivered: r.delivered,
    deadLettered: r.deadLettered,
    rejected: r.rejected,
    recentDelivered: r.recentDelivered ?? 0,
    recentRejected: r.recentRejected ?? 0,
  };
}

function optionalFacts(r: ConnectorRecord): Pick<ConnectorRecord, 'lastSuccessMs' | 'lastAttemptMs' | 'lastErrorClass' | 'lastError' | 'failingSinceMs' | 'expiredAtMs'> {
  return {
    ...(r.lastSuccessMs !== undefined ? { lastSuccessMs: r.lastSuccessMs } : {}),
    ...(r.lastAttemptMs !== undefined ? { lastAttemptMs: r.lastAttemptMs } : {}),
    ...(r.lastErrorClass !== undefined ? { lastErrorClass: r.lastErrorClass } : {}),
    ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
    ...(r.failingSinceMs !== undefined ? { failingSinceMs: r.failingSinceMs } : {}),
    ...(r.expiredAtMs !== undefined ? { expiredAtMs: r.expiredAtMs } : {}),
  };
}

function latest(values: Array<number | undefined>): number | undefined {
  let best: number | undefined;
  for (const v of values) if (v !== undefined && (best === undefined || v > best)) best = v;
  return best;
}

function earliest(values: Array<number | undefined>): number | undefined {
  let best: number | undefined;
  for (const v of values) if (v !== undefined && (best === undefined || v < best)) best = v;
  return best;
}

function mergeViews(name: string, kind: ConnectorKind, views: InstanceView[], now: number, o: HealthOptions): MergedConnectorSnapshot {
  const live = views.filter((v) => !v.stale);
  const recent = recentOutcomes(
    o.rejectionWindowMs,
    live.reduce((n, v) => n + v.recentDelivered, 0),
    live.reduce((n, v) => n + v.recentRejected, 0),
  );
  // the worst live state, and the instance that has it (its error explains it)
  let worst: InstanceView | undefined;
  for (const v of live) {
    if (v.state === 'unknown') continue;
    if (worst === undefined || SEVERITY[v.state] > SEVERITY[worst.state as ConnectorState]) worst = v;
  }
  let state: ConnectorState = worst === undefined ? 'idle' : (worst.state as ConnectorState);
  let stateReason: string | undefined;
  if (worst !== undefined && SEVERITY[state] >= SEVERITY.degraded) {
    stateReason = `${state} on ${worst.instance}${worst.lastError !== undefined ? `: ${worst.lastError}` : ''}`;
  }
  const rejecting = rejectionReason(recent, o);
  if (rejecting !== undefined && SEVERITY[state] < SEVERITY.degraded) {
    state = 'degraded';
    stateReason = rejecting;
  }
  if (live.length === 0) stateReason = 'no live instance reports this connector';
  const lastSuccessMs = latest(views.map((v) => v.lastSuccessMs));
  const lastAttemptMs = latest(views.map((v) => v.lastAttemptMs));
  const failingSinceMs = earliest(live.map((v) => v.failingSinceMs));
  const expiredAtMs = latest(live.map((v) => v.expiredAtMs));
  const oldestPendingAgeMs = latest(live.map((v) => v.oldestPendingAgeMs));
  const errorFrom = worst !== undefined && worst.lastErrorClass !== undefined ? worst : live.find((v) => v.lastErrorClass !== undefined);
  return {
    name,
    kind,
    state,
    ...(stateReason !== undefined ? { stateReason } : {}),
    ...(lastSuccessMs !== undefined ? { lastSuccessMs, secondsSinceLastSuccess: (now - lastSuccessMs) / 1000 } : {}),
    ...(lastAttemptMs !== undefined ? { lastAttemptMs } : {}),
    ...(errorFrom?.lastErrorClass !== undefined ? { lastErrorClass: errorFrom.lastErrorClass } : {}),
    ...(errorFrom?.lastError !== undefined ? { lastError: errorFrom.lastError } : {}),
    ...(failingSinceMs !== undefined ? { failingSinceMs } : {}),
    ...(expiredAtMs !== undefined ? { expiredAtMs } : {}),
    delivered: views.reduce((n, v) => n + v.delivered, 0),
    deadLettered: views.reduce((n, v) => n + v.deadLettered, 0),
    rejected: views.reduce((n, v) => n + v.rejected, 0),
    pending: live.reduce((n, v) => n + v.pending, 0),
    ...(oldestPendingAgeMs !== undefined ? { oldestPendingAgeMs } : {}),
    recent,
    instances: views.sort((a, b) => Number(b.self) - Number(a.self) || a.instance.localeCompare(b.instance)),
  };
}
