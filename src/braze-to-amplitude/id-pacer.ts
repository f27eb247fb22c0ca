import type { Clock } from '../clock.js';
import type { LimitSettings } from '../config/config.js';
import type { Metrics } from '../observability/metrics.js';
import { DEVICE_NS, IdentityLimiter, USER_NS, type IdentityLimits } from '../limits/identity-limiter.js';

/** The ids an event counts against: Amplitude limits each device id and each user id. */
export interface PacedIds {
  key: string;
  deviceId?: string;
  userId?: string;
  /**
   * The Kafka partition of the event's key (the partition of the Currents topic it came from; the
   * retry topics have the same partition count and the same partitioner, so a parked event's retry
   * partition is the same number). The daily counts are kept and persisted per partition. Absent:
   * one unpersisted limiter shared by every such event.
   */
  partition?: number;
}

/**
 * Where a parked event waits. `short`: rate parks, due within seconds (`gateway.retry`); `long`:
 * daily-quota parks, due within hours (`gateway.retry.quota`). Separate topics and consumers, so a
 * park due in a day never delays one due in a second.
 */
export type ParkTier = 'short' | 'long';

export type PaceVerdict =
  | { kind: 'send' }
  /** hold in memory until `untilMs`, behind this key's earlier held events */
  | { kind: 'hold'; untilMs: number }
  /**
   * write to the retry topic of `tier` with this not-before time. `reason` is `daily_quota` exactly
   * when `tier` is `long` (an event queued behind a key's quota parks is parked for the same reason).
   */
  | { kind: 'park'; untilMs: number; reason: 'rate_limit' | 'daily_quota'; tier: ParkTier }
  | { kind: 'dead_letter'; reason: 'daily_quota'; untilMs: number };

/** What a key has parked and not yet seen come back. */
interface ParkMark {
  short: number;
  long: number;
  /** latest not-before among its parks: newer events are parked no earlier */
  untilMs: number;
  /** latest not-before among its short parks (seconds away, where untilMs may be a quota's hours) */
  shortUntil: number;
  /** last park or return: the mark's grace period runs from here */
  touchedMs: number;
  /** a returning event was parked again until then: the key's later returning events go behind it */
  reparkUntil: number;
  partition: number;
}

/** A key's parked-events mark as persisted with its partition's counts. */
export interface PersistedMark {
  key: string;
  short: number;
  long: number;
  untilMs: number;
}

/** What the pacer persists for one partition: the daily counts and the keys with parked events. */
export interface PartitionSnapshot {
  /** IdentityLimiter.exportDaily() of the partition's limiter */
  daily: Uint8Array;
  marks: PersistedMark[];
}

/** A mark whose events never came back (consumed elsewhere, or miscounted after a crash) is dropped after this. */
const SHORT_GRACE_MS = 60_000;
/** How soon a key whose partition's counts are being restored is looked at again. */
/**
 * While a partition's counts are being restored its events wait; the leg is told when the restore
 * ends (onRestored) and releases them then. This is only the safety net of a hold's timer: a short
 * poll here made every held key re-decide every few ms for as long as a restore took (500,000 to
 * 900,000 `wait` decisions for 120,000 events in the benchmarks).
 */
const RESTORE_POLL_MS = 1_000;
/** Partition number of events that carry none. */
const NO_PARTITION = -1;

/**
 * Per-id pacing for the Amplitude leg, with an injected clock. An event over its id's rate waits
 * (in memory for a bounded delay, then in the short retry tier); an id over its daily quota (by the
 * gateway's own count, or because Amplitude said so) is parked in the long tier until the rolling
 * window admits it. Order per key is kept: once a key has events held or parked, its newer events
 * go behind them, never around. Each tier releases a key's events in the order parked; across tiers,
 * a key's short parks are always newer than its quota parks (a new event joins the short tier while
 * the key has events there, and each one back from it follows the key's quota parks into the long
 * tier), so nothing due in hours ever waits in the short tier.
 *
 * Daily counts are kept per Kafka partition (one IdentityLimiter each), so a partition's counts
 * can be saved when it is revoked and restored where it is assigned next (see LimiterStore). While
 * a partition's counts are being restored its events wait (hold), then park as usual.
 */
export class IdPacer {
  private readonly limits: IdentityLimits;
  private readonly byPartition = new Map<number, IdentityLimiter>();
  private readonly restoring = new Set<number>();
  /** restoring because an event came before the partition was assigned here (via the restorer) */
  private readonly restoringEarly = new Set<number>();
  /** assigned while such an early restore was in flight: read again once it lands */
  private readonly rereadAfterEarly = new Set<number>();
  /**
   * Partitions whose counts were restored before they were assigned here, with the snapshot they
   * were restored from: the owner may have saved newer counts since, read when it is assigned.
   */
  private readonly provisional = new Map<number, PartitionSnapshot | undefined>();
  /**
   * Events back from a tier before their partition's marks were restored here: taken off those
   * marks once installed, or the key would stay marked for events no longer parked.
   */
  private readonly returnedBeforeRestore = new Map<string, { partition: number; short: number; long: number }>();
  /** ids Amplitude answered as over their daily quota, `d:`/`u:` + id, until when */
  private readonly overQuota = new Map<string, number>();
  /** keys with events held in memory, and how many */
  private readonly heldCount = new Map<string, number>();
  /** keys with events parked in a retry tier */
  private readonly parked = new Map<string, ParkMark>();
  private readonly spacingMs: number;
  private readonly longGraceMs: number;
  /** asked to restore a partition seen for the first time (the LimiterStore registers itself) */
  private restorer: ((partition: number) => void) | undefined;
  /** told when a partition's restore ended, so what waited for it goes on at once */
  private readonly restoredListeners: Array<(partition: number) => void> = [];

  constructor(
    private readonly s: LimitSettings,
    private readonly clock: Clock,
    private readonly metrics: Metrics,
  ) {
    // Batching delays events by up to the jitter between this decision and Amplitude's clock, so the
    // pace leaves that much headroom: at most N events in any (1 s + jitter) here means at most N in
    // any second there.
    const paced = Math.max(1, Math.floor((s.eventsPerSecond * 1_000) / (1_000 + s.pacingJitterMs)));
    this.limits = { eventsPerSecond: paced, dailyQuota: s.dailyQuota, windowMs: s.quotaWindowMs, bucketMs: s.quotaBucketMs };
    this.spacingMs = 1_000 / paced;
    // A long-tier partition can wait behind another key's park for up to a window: a key's long
    // mark lasts that long after its last park or return.
    this.longGraceMs = Math.max(SHORT_GRACE_MS, s.quotaWindowMs);
    // Built now, so settings the limiter refuses fail at start-up, not at the first event; it also
    // serves the events that carry no partition.
    this.byPartition.set(NO_PARTITION, new IdentityLimiter(this.limits, clock));
  }

  /** Decides for a new event (not one coming back from a retry topic). */
  decide(ids: PacedIds): PaceVerdict {
    const now = this.clock.now();
    const p = this.parked.get(ids.key);
    if (p && this.live(p, now)) {
      // Behind the key's newest parks. While some are in the short tier, behind those and due when
      // they are (never a quota's hours: the short tier holds what waits in memory): parked in the
      // long tier now, it would be released before them once they came back over quota and moved
      // there too. Back from the short tier, it follows them into the long tier (decideRetried).
      if (p.short > 0) return this.park(ids, Math.max(now, p.shortUntil), 'short');
      return this.park(ids, Math.max(now, p.untilMs), 'long');
    }
    const held = this.heldCount.get(ids.key) ?? 0;
    if (held > 0) {
      if (held * this.spacingMs > this.s.maxDelayMs) return this.park(ids, now + held * this.spacingMs, 'short');
      this.heldCount.set(ids.key, held + 1);
      this.metrics.limiterDecisions.inc({ decision: 'wait' });
      return { kind: 'hold', untilMs: now };
    }
    return this.check(ids, false);
  }

  /**
   * Decides for an event back from a retry topic (`from`: the tier it was read from): it may wait in
   * memory as long as needed. If an earlier returning event of its key was parked again, it goes
   * behind that one.
   */
  decideRetried(ids: PacedIds, from: ParkTier = 'short'): PaceVerdict {
    const now = this.clock.now();
    const p = this.parked.get(ids.key);
    if (p) {
      const live = this.live(p, now);
      if (from === 'long' ? p.long > 0 : p.short <= 0 && p.long > 0) p.long--;
      else if (p.short > 0) p.short--;
      p.touchedMs = now;
      if (p.reparkUntil > now) return this.park(ids, p.reparkUntil, 'long', true);
      // Back from the short tier while its key has quota parks: those are older (new events do not
      // go to the long tier while the key has short parks, see decide), so it goes behind them.
      if (from === 'short' && p.long > 0 && live) return this.park(ids, Math.max(now, p.untilMs), 'long');
      if (p.short + p.long <= 0) this.parked.delete(ids.key);
    } else if (ids.partition !== undefined && this.awaitsRestore(ids.partition)) {
      const r = this.returnedBeforeRestore.get(ids.key) ?? { partition: ids.partition, short: 0, long: 0 };
      r[from]++;
      this.returnedBeforeRestore.set(ids.key, r);
    }
    if ((this.heldCount.get(ids.key) ?? 0) > 0) {
      this.heldCount.set(ids.key, (this.heldCount.get(ids.key) ?? 0) + 1);
      return { kind: 'hold', untilMs: now };
    }
    return this.check(ids, true);
  }

  /** Re-checks the head of a key's held events; 'send' consumes its capacity. */
  recheck(ids: PacedIds): PaceVerdict {
    const v = this.take(ids, false);
    if (v.kind === 'send') this.release(ids.key);
    return v;
  }

  /** A held event left the hold (sent, parked or expired). */
  release(key: string): void {
    const n = (this.heldCount.get(key) ?? 0) - 1;
    if (n <= 0) this.heldCount.delete(key);
    else this.heldCount.set(key, n);
  }

  /**
   * Amplitude answered that these ids are over their daily quota (a 429's
   * `exceeded_daily_quota_devices` / `_users`): until `untilMs` (default one quota bucket from now,
   * the step in which Amplitude re-evaluates its rolling window) every new event of theirs is
   * parked in the long tier (after its key's rate parks, if it has some in the short tier), or
   * dead-lettered with AMPLITUDE_QUOTA_ACTION=dead-letter, without being sent. Returns the time
   * used, for parking the refused events themselves.
   */
  markOverQuota(ids: { devices?: Iterable<string>; users?: Iterable<string> }, untilMs?: number): number {
    const until = untilMs ?? this.clock.now() + this.s.quotaBucketMs;
    const put = (k: string): void => {
      this.overQuota.set(k, Math.max(this.overQuota.get(k) ?? 0, until));
    };
    for (const d of ids.devices ?? []) put(`d:${d}`);
    for (const u of ids.users ?? []) put(`u:${u}`);
    return until;
  }

  /**
   * An event the leg parked itself (an Amplitude answer, not a pacer verdict): the key's newer
   * events must queue behind it, so it is counted like a park the pacer decided.
   */
  noteParked(ids: PacedIds, untilMs: number, reason: 'rate_limit' | 'daily_quota', returning = false): void {
    // A returning event refused again: its key's later returning events must go behind it too.
    this.mark(ids, untilMs, reason === 'daily_quota' ? 'long' : 'short', returning);
  }

  /** An event parked by decide() could not be written: forget it was parked. */
  unpark(key: string, tier?: ParkTier): void {
    const p = this.parked.get(key);
    if (!p) return;
    if (tier === 'long' || (tier === undefined && p.short <= 0)) p.long--;
    else p.short--;
    if (p.short + p.long <= 0) this.parked.delete(key);
  }

  // ---- partitions: restore, snapshot, revoke ----------------------------------------------

  /**
   * Who restores a partition's counts when one of its events is seen before the partition was
   * announced (beginRestore): the partition is marked restoring and `restore(partition)` is called,
   * which must end with restorePartition. Without a restorer such a partition starts fresh.
   */
  setRestorer(restore: ((partition: number) => void) | undefined): void {
    this.restorer = restore;
  }

  /** Calls `fn(partition)` whenever a partition's restore ends (restorePartition). */
  onRestored(fn: (partition: number) => void): void {
    this.restoredListeners.push(fn);
  }

  /**
   * Partitions assigned whose counts are about to be restored: their events wait until
   * restorePartition. A partition whose counts were restored before it was assigned here (a
   * retry-tier event of it came first) is restored again: its owner's last save came later.
   */
  beginRestore(partitions: Iterable<number>): number[] {
    const started: number[] = [];
    for (const p of partitions) {
      if (this.restoringEarly.has(p)) this.rereadAfterEarly.add(p);
      if (this.restoring.has(p) || (this.byPartition.has(p) && !this.provisional.has(p))) continue;
      this.restoring.add(p);
      started.push(p);
    }
    return started;
  }

  /** Installs a partition's restored counts (fresh ones when there is no snapshot) and lets its events through. */
  restorePartition(partition: number, snap: PartitionSnapshot | undefined): void {
    // Not restoring (any more): dropped while its snapshot was read, or a second answer. What is here stands.
    if (!this.restoring.has(partition)) return;
    const existing = this.byPartition.get(partition);
    if (this.restoringEarly.delete(partition)) {
      // (take() asks the restorer only for a partition it has no limiter for)
      this.byPartition.set(partition, IdentityLimiter.fromSnapshot(this.limits, this.clock, snap?.daily));
      this.installMarks(partition, snap?.marks ?? []);
      this.applyReturnsBeforeRestore(partition);
      this.provisional.set(partition, snap);
      // Assigned meanwhile: the read that just landed may predate the previous owner's last save.
      if (this.rereadAfterEarly.delete(partition) && this.restorer) {
        this.restorer(partition);
        return;
      }
    } else if (existing) {
      // restored before it was assigned here (beginRestore restores no other held partition)
      const base = this.provisional.get(partition);
      this.provisional.delete(partition);
      this.mergeOwnerSnapshot(partition, existing, base, snap);
      this.applyReturnsBeforeRestore(partition);
    } else {
      this.byPartition.set(partition, IdentityLimiter.fromSnapshot(this.limits, this.clock, snap?.daily));
      this.installMarks(partition, snap?.marks ?? []);
      this.applyReturnsBeforeRestore(partition);
    }
    this.restoring.delete(partition);
    for (const fn of this.restoredListeners) fn(partition);
  }

  /** The partition's marks are restored: takes off them what came back meanwhile. */
  private applyReturnsBeforeRestore(partition: number): void {
    for (const [key, r] of this.returnedBeforeRestore) {
      if (r.partition !== partition) continue;
      this.returnedBeforeRestore.delete(key);
      const m = this.parked.get(key);
      if (!m || m.partition !== partition) continue;
      m.short = Math.max(0, m.short - r.short);
      m.long = Math.max(0, m.long - r.long);
      if (m.short + m.long <= 0) this.parked.delete(key);
    }
  }

  /** An event of this partition now would wait for its counts and marks to be restored. */
  private awaitsRestore(partition: number): boolean {
    if (partition === NO_PARTITION) return false;
    return this.restoring.has(partition) || (!this.byPartition.has(partition) && this.restorer !== undefined);
  }

  /**
   * The owner's latest snapshot for a partition this pacer restored (from `base`) before it was
   * assigned here, and has counted in since. Both grew from `base`, so the truth is the owner's
   * counts plus what was counted here since `base`, for the daily counts and the parked-key marks
   * alike (an event parked by the owner may have come back here, and been sent, meanwhile).
   */
  private mergeOwnerSnapshot(partition: number, lim: IdentityLimiter, base: PartitionSnapshot | undefined, snap: PartitionSnapshot | undefined): void {
    if (!snap) return; // nothing saved by an owner since: what is here is all there is
    const sameSeeds = (daily: Uint8Array): boolean => {
      const seeds = IdentityLimiter.snapshotSeeds(daily);
      return seeds !== undefined && seeds[0] === lim.seeds[0] && seeds[1] === lim.seeds[1];
    };
    if (sameSeeds(snap.daily)) {
      if (base && sameSeeds(base.daily)) lim.subtractDaily(base.daily);
      lim.importDaily(snap.daily);
    } else {
      // Hashes under other seeds (there was no snapshot when this limiter was made) cannot be matched
      // to this limiter's: the owner's counts (the whole window) win over the few taken here before
      // the assignment, which are lost with this limiter's rate state.
      this.byPartition.set(partition, IdentityLimiter.fromSnapshot(this.limits, this.clock, snap.daily));
    }
    const was = new Map((base?.marks ?? []).map((m) => [m.key, m]));
    const owner = new Map(snap.marks.map((m) => [m.key, m]));
    const keys = new Set([...was.keys(), ...owner.keys()]);
    for (const [key, m] of this.parked) if (m.partition === partition) keys.add(key);
    const now = this.clock.now();
    for (const key of keys) {
      const here = this.parked.get(key);
      const mine = here?.partition === partition ? here : undefined;
      const o = owner.get(key);
      const b = was.get(key);
      const short = Math.max(0, (o?.short ?? 0) + (mine?.short ?? 0) - (b?.short ?? 0));
      const long = Math.max(0, (o?.long ?? 0) + (mine?.long ?? 0) - (b?.long ?? 0));
      if (short + long <= 0) {
        if (mine) this.parked.delete(key);
        continue;
      }
      if (here && !mine) continue; // the key is parked under another partition here
      const untilMs = Math.max(o?.untilMs ?? 0, mine?.untilMs ?? 0);
      const shortUntil = mine?.shortUntil ?? (long > 0 ? now : untilMs);
      this.parked.set(key, { short, long, untilMs, shortUntil, touchedMs: now, reparkUntil: mine?.reparkUntil ?? 0, partition });
    }
  }

  /** A snapshot's parked-key marks, for keys without one here. */
  private installMarks(partition: number, marks: PersistedMark[]): void {
    const now = this.clock.now();
    for (const m of marks) {
      if (this.parked.has(m.key) || m.short + m.long <= 0) continue;
      // untilMs may be a quota park's: short parks are due within seconds, and a short tier keeps order per key
      const shortUntil = m.long > 0 ? now : m.untilMs;
      this.parked.set(m.key, { short: m.short, long: m.long, untilMs: m.untilMs, shortUntil, touchedMs: now, reparkUntil: 0, partition });
    }
  }

  /**
   * The partition's counts and parked-key marks, or undefined when this pacer does not hold it as
   * its owner: not restored yet, or restored before it was assigned here (its owner's save stands).
   */
  exportPartition(partition: number): PartitionSnapshot | undefined {
    const lim = this.byPartition.get(partition);
    if (!lim || this.restoring.has(partition) || this.provisional.has(partition)) return undefined;
    const marks: PersistedMark[] = [];
    for (const [key, m] of this.parked) {
      if (m.partition === partition && m.short + m.long > 0) marks.push({ key, short: m.short, long: m.long, untilMs: m.untilMs });
    }
    return { daily: lim.exportDaily(), marks };
  }

  /** The partition went to another member: forget its counts (saved first by the store) and marks. */
  dropPartition(partition: number): void {
    this.byPartition.delete(partition);
    this.restoring.delete(partition);
    this.restoringEarly.delete(partition);
    this.rereadAfterEarly.delete(partition);
    this.provisional.delete(partition);
    for (const [key, r] of this.returnedBeforeRestore) if (r.partition === partition) this.returnedBeforeRestore.delete(key);
    for (const [key, m] of this.parked) if (m.partition === partition) this.parked.delete(key);
  }

  /** Partitions whose counts this pacer holds (NO_PARTITION excluded). */
  heldPartitions(): number[] {
    return [...this.byPartition.keys()].filter((p) => p !== NO_PARTITION);
  }

  isRestoring(partition: number): boolean {
    return this.restoring.has(partition);
  }

  /** Daily usage of an id in its partition, as a fraction of the quota (tests, diagnostics). */
  dailyUsage(id: { deviceId?: string; userId?: string; partition?: number }): number {
    const lim = this.byPartition.get(id.partition ?? NO_PARTITION);
    if (!lim) return 0;
    return Math.max(id.deviceId ? lim.dailyUsage(id.deviceId, DEVICE_NS) : 0, id.userId ? lim.dailyUsage(id.userId, USER_NS) : 0);
  }

  evictIdle(): number {
    let n = 0;
    for (const lim of this.byPartition.values()) n += lim.evictIdle(this.s.idleEvictMs);
    const now = this.clock.now();
    for (const [k, until] of this.overQuota) if (until <= now) this.overQuota.delete(k);
    for (const [k, m] of this.parked) if (!this.live(m, now)) this.parked.delete(k);
    return n;
  }

  get trackedIdentities(): number {
    let n = 0;
    for (const lim of this.byPartition.values()) n += lim.size;
    return n;
  }

  identitiesAbove(fraction: number): number {
    let n = 0;
    for (const lim of this.byPartition.values()) n += lim.countAbove(fraction);
    return n;
  }

  approximateBytes(): number {
    let n = 0;
    for (const lim of this.byPartition.values()) n += lim.approximateBytes();
    return n;
  }

  // ---- internals ---------------------------------------------------------------------------

  private live(p: ParkMark, now: number): boolean {
    if (p.short + p.long <= 0) return false;
    const grace = p.long > 0 ? this.longGraceMs : SHORT_GRACE_MS;
    return now < Math.max(p.untilMs, p.touchedMs) + grace;
  }

  private check(ids: PacedIds, retried: boolean): PaceVerdict {
    const v = this.take(ids, retried);
    if (v.kind === 'hold' && (retried || v.untilMs - this.clock.now() <= this.s.maxDelayMs)) {
      this.heldCount.set(ids.key, 1);
      return v;
    }
    if (v.kind === 'hold') return this.park(ids, v.untilMs, 'short');
    return v;
  }

  private take(ids: PacedIds, retried: boolean): PaceVerdict {
    const now = this.clock.now();
    const partition = ids.partition ?? NO_PARTITION;
    if (this.restoring.has(partition)) {
      this.metrics.limiterDecisions.inc({ decision: 'wait' });
      return { kind: 'hold', untilMs: now + RESTORE_POLL_MS };
    }
    let lim = this.byPartition.get(partition);
    if (!lim && this.restorer && partition !== NO_PARTITION) {
      this.restoring.add(partition);
      this.restoringEarly.add(partition);
      this.restorer(partition);
      if (this.restoring.has(partition)) {
        this.metrics.limiterDecisions.inc({ decision: 'wait' });
        return { kind: 'hold', untilMs: now + RESTORE_POLL_MS };
      }
      lim = this.byPartition.get(partition);
    }
    if (!lim) {
      lim = new IdentityLimiter(this.limits, this.clock);
      this.byPartition.set(partition, lim);
    }
    // Amplitude's own answer first: it knows counts no instance of the gateway saw.
    const told = Math.max(this.toldUntil(ids.deviceId, 'd:', now), this.toldUntil(ids.userId, 'u:', now));
    if (told > now) return this.quota(ids, told, retried);
    for (let i = 0; i < 2; i++) {
      const id = i === 0 ? ids.deviceId : ids.userId;
      if (id === undefined) continue;
      // A device admitted and its user refused loses that device slot: the pace errs slow, never fast.
      const until = lim.tryTake(id, 1, i === 0 ? DEVICE_NS : USER_NS);
      if (until === 0) continue;
      if (lim.lastDecisionWasQuota) return this.quota(ids, until, retried);
      this.metrics.limiterDecisions.inc({ decision: 'wait' });
      return { kind: 'hold', untilMs: until };
    }
    this.metrics.limiterDecisions.inc({ decision: 'allow' });
    return { kind: 'send' };
  }

  private toldUntil(id: string | undefined, prefix: string, now: number): number {
    if (id === undefined || this.overQuota.size === 0) return 0;
    const k = prefix + id;
    const until = this.overQuota.get(k);
    if (until === undefined) return 0;
    if (until <= now) {
      this.overQuota.delete(k);
      return 0;
    }
    return until;
  }

  private quota(ids: PacedIds, untilMs: number, retried: boolean): PaceVerdict {
    this.metrics.limiterDecisions.inc({ decision: 'quota' });
    if (this.s.quotaAction === 'dead-letter') return { kind: 'dead_letter', reason: 'daily_quota', untilMs };
    return this.park(ids, untilMs, 'long', retried);
  }

  private park(ids: PacedIds, untilMs: number, tier: ParkTier, repark = false): PaceVerdict {
    this.mark(ids, untilMs, tier, repark);
    const reason = tier === 'long' ? 'daily_quota' : 'rate_limit';
    this.metrics.limiterParked.inc({ reason });
    return { kind: 'park', untilMs, reason, tier };
  }

  private mark(ids: PacedIds, untilMs: number, tier: ParkTier, repark: boolean): void {
    const now = this.clock.now();
    let p = this.parked.get(ids.key);
    // A mark past its grace counts events taken to be lost: it starts again, or its stale quota
    // parks would send the key's new short parks to the long tier when they come back.
    if (!p || !this.live(p, now)) {
      p = { short: 0, long: 0, untilMs, shortUntil: 0, touchedMs: now, reparkUntil: 0, partition: ids.partition ?? NO_PARTITION };
      this.parked.set(ids.key, p);
    }
    if (tier === 'long') p.long++;
    else {
      p.short++;
      p.shortUntil = Math.max(p.shortUntil, untilMs);
    }
    p.untilMs = Math.max(p.untilMs, untilMs);
    p.touchedMs = now;
    if (repark) p.reparkUntil = Math.max(p.reparkUntil, untilMs);
  }
}
