import type { Clock } from '../clock.js';
import type { LimitSettings } from '../config/config.js';
import type { Metrics } from '../observability/metrics.js';
import { IdentityLimiter } from '../limits/identity-limiter.js';

/** The ids an event counts against: Amplitude limits each device id and each user id. */
export interface PacedIds {
  key: string;
  deviceId?: string;
  userId?: string;
}

export type PaceVerdict =
  | { kind: 'send' }
  /** hold in memory until `untilMs`, behind this key's earlier held events */
  | { kind: 'hold'; untilMs: number }
  /** write to the retry topic with this not-before time */
  | { kind: 'park'; untilMs: number; reason: 'rate_limit' | 'daily_quota' }
  | { kind: 'dead_letter'; reason: 'daily_quota'; untilMs: number };

/**
 * Per-id pacing for the Amplitude leg, with an injected clock. An event over its id's rate waits
 * (in memory for a bounded delay, then in the retry topic); an id over its daily quota is parked
 * until the rolling window admits it. Order per key is kept: once a key has events held or
 * parked, its newer events go behind them, never around.
 */
export class IdPacer {
  private readonly limiter: IdentityLimiter;
  /** keys with events held in memory, and how many */
  private readonly heldCount = new Map<string, number>();
  /** keys with events parked in the retry topic: count, and the latest not-before */
  private readonly parked = new Map<string, { count: number; untilMs: number }>();
  private readonly spacingMs: number;

  constructor(
    private readonly s: LimitSettings,
    private readonly clock: Clock,
    private readonly metrics: Metrics,
  ) {
    // Batching delays events by up to the jitter between this decision and Amplitude's clock, so the
    // pace leaves that much headroom: at most N events in any (1 s + jitter) here means at most N in
    // any second there.
    const paced = Math.max(1, Math.floor((s.eventsPerSecond * 1_000) / (1_000 + s.pacingJitterMs)));
    this.limiter = new IdentityLimiter({ eventsPerSecond: paced, dailyQuota: s.dailyQuota, windowMs: s.quotaWindowMs, bucketMs: s.quotaBucketMs }, clock);
    this.spacingMs = 1_000 / paced;
  }

  /** Decides for a new event (not one coming back from the retry topic). */
  decide(ids: PacedIds): PaceVerdict {
    const now = this.clock.now();
    const p = this.parked.get(ids.key);
    // A parked entry outlives its events only by a grace period: if the retry topic is consumed
    // elsewhere (another instance), the key must not stay parked forever.
    if (p && p.count > 0 && now < p.untilMs + 60_000) return this.park(ids.key, Math.max(now, p.untilMs), 'rate_limit');
    const held = this.heldCount.get(ids.key) ?? 0;
    if (held > 0) {
      if (held * this.spacingMs > this.s.maxDelayMs) return this.park(ids.key, now + held * this.spacingMs, 'rate_limit');
      this.heldCount.set(ids.key, held + 1);
      this.metrics.limiterDecisions.inc({ decision: 'wait' });
      return { kind: 'hold', untilMs: now };
    }
    return this.check(ids, false);
  }

  /** Decides for an event back from the retry topic: it may wait in memory as long as needed. */
  decideRetried(ids: PacedIds): PaceVerdict {
    const p = this.parked.get(ids.key);
    if (p) {
      p.count--;
      if (p.count <= 0) this.parked.delete(ids.key);
    }
    if ((this.heldCount.get(ids.key) ?? 0) > 0) {
      this.heldCount.set(ids.key, (this.heldCount.get(ids.key) ?? 0) + 1);
      return { kind: 'hold', untilMs: this.clock.now() };
    }
    return this.check(ids, true);
  }

  /** Re-checks the head of a key's held events; 'send' consumes its capacity. */
  recheck(ids: PacedIds): PaceVerdict {
    const v = this.take(ids);
    if (v.kind === 'send') this.release(ids.key);
    return v;
  }

  /** A held event left the hold (sent, parked or expired). */
  release(key: string): void {
    const n = (this.heldCount.get(key) ?? 0) - 1;
    if (n <= 0) this.heldCount.delete(key);
    else this.heldCount.set(key, n);
  }

  private check(ids: PacedIds, retried: boolean): PaceVerdict {
    const v = this.take(ids);
    if (v.kind === 'send') return v;
    if (v.kind === 'hold' && (retried || v.untilMs - this.clock.now() <= this.s.maxDelayMs)) {
      this.heldCount.set(ids.key, 1);
      return v;
    }
    if (v.kind === 'hold') return this.park(ids.key, v.untilMs, 'rate_limit');
    return v;
  }

  private take(ids: PacedIds): PaceVerdict {
    for (const id of [ids.deviceId, ids.userId]) {
      if (id === undefined) continue;
      // A device admitted and its user refused loses that device slot: the pace errs slow, never fast.
      const until = this.limiter.tryTake(id);
      if (until === 0) continue;
      if (this.limiter.lastDecisionWasQuota) {
        this.metrics.limiterDecisions.inc({ decision: 'quota' });
        if (this.s.quotaAction === 'dead-letter') return { kind: 'dead_letter', reason: 'daily_quota', untilMs: until };
        return this.park(ids.key, until, 'daily_quota');
      }
      this.metrics.limiterDecisions.inc({ decision: 'wait' });
      return { kind: 'hold', untilMs: until };
    }
    this.metrics.limiterDecisions.inc({ decision: 'allow' });
    return { kind: 'send' };
  }

  private park(key: string, untilMs: number, reason: 'rate_limit' | 'daily_quota'): PaceVerdict {
    const p = this.parked.get(key);
    if (p) {
      p.count++;
      p.untilMs = Math.max(p.untilMs, untilMs);
    } else this.parked.set(key, { count: 1, untilMs });
    this.metrics.limiterParked.inc({ reason });
    return { kind: 'park', untilMs, reason };
  }

  /** An event parked by decide() could not be written: forget it was parked. */
  unpark(key: string): void {
    const p = this.parked.get(key);
    if (!p) return;
    p.count--;
    if (p.count <= 0) this.parked.delete(key);
  }

  evictIdle(): number {
    return this.limiter.evictIdle(this.s.idleEvictMs);
  }

  get trackedIdentities(): number {
    return this.limiter.size;
  }

  identitiesAbove(fraction: number): number {
    return this.limiter.countAbove(fraction);
  }
}
