import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { LimitSettings } from '../../src/config/config.js';
import { IdPacer, type PacedIds, type PaceVerdict } from '../../src/braze-to-amplitude/id-pacer.js';
import { Metrics } from '../../src/observability/metrics.js';

const SETTINGS: LimitSettings = {
  enabled: true,
  eventsPerSecond: 30,
  dailyQuota: 500_000,
  quotaWindowMs: 86_400_000,
  quotaBucketMs: 3_600_000,
  maxDelayMs: 2_000,
  pacingJitterMs: 200,
  quotaAction: 'park',
  idleEvictMs: 600_000,
  retryMaxHeld: 100_000,
  quotaParkMaxHeldPerPartition: 1_000,
  saveIntervalMs: 30_000,
};

function pacer(over: Partial<LimitSettings> = {}, start = 1_000_000): { p: IdPacer; clock: ManualClock } {
  const clock = new ManualClock(start);
  return { p: new IdPacer({ ...SETTINGS, ...over }, clock, new Metrics({ defaultMetrics: false })), clock };
}

const dev = (deviceId: string, partition?: number): PacedIds => ({ key: deviceId, deviceId, ...(partition === undefined ? {} : { partition }) });

describe('IdPacer: Amplitude said an id is over its daily quota', () => {
  it('parks that device\'s new events in the long tier until the time given, without sending them; others go on', () => {
    const { p, clock } = pacer();
    expect(p.decide(dev('device-hot'))).toEqual({ kind: 'send' });
    const until = p.markOverQuota({ devices: ['device-hot'] }, clock.now() + 5_000);
    expect(until).toBe(clock.now() + 5_000);
    expect(p.decide(dev('device-hot'))).toEqual({ kind: 'park', untilMs: until, reason: 'daily_quota', tier: 'long' });
    expect(p.decide(dev('device-other'))).toEqual({ kind: 'send' });
    // the parked events come back when due and are sent, in order
    clock.set(until);
    expect(p.decideRetried(dev('device-hot'), 'long')).toEqual({ kind: 'send' });
    expect(p.decide(dev('device-hot'))).toEqual({ kind: 'send' });
  });

  it('keeps a key\'s newer events behind its quota parks, in the long tier', () => {
    const { p, clock } = pacer();
    const until = p.markOverQuota({ devices: ['d1'] }, clock.now() + 60_000);
    expect(p.decide(dev('d1'))).toMatchObject({ kind: 'park', tier: 'long', untilMs: until });
    // Amplitude's mark is gone (say, expired early), but the key still has events in the long tier
    clock.advance(1_000);
    p.markOverQuota({ devices: [] });
    expect(p.decide({ key: 'd1', deviceId: 'd1-other-device' })).toMatchObject({ kind: 'park', tier: 'long', reason: 'daily_quota', untilMs: until });
  });

  it('applies to user ids in their own namespace', () => {
    const { p, clock } = pacer();
    p.markOverQuota({ users: ['same-id'] }, clock.now() + 1_000);
    expect(p.decide({ key: 'k1', deviceId: 'same-id' })).toEqual({ kind: 'send' });
    expect(p.decide({ key: 'k2', deviceId: 'dev-2', userId: 'same-id' })).toMatchObject({ kind: 'park', tier: 'long' });
  });

  it('dead-letters instead with AMPLITUDE_QUOTA_ACTION=dead-letter', () => {
    const { p, clock } = pacer({ quotaAction: 'dead-letter' });
    const until = p.markOverQuota({ devices: ['d'] });
    expect(until).toBe(clock.now() + SETTINGS.quotaBucketMs);
    expect(p.decide(dev('d'))).toEqual({ kind: 'dead_letter', reason: 'daily_quota', untilMs: until });
  });

  it('counts a park the leg made itself, so newer events queue behind it', () => {
    const { p, clock } = pacer();
    p.noteParked(dev('d'), clock.now() + 3_000, 'daily_quota');
    expect(p.decide(dev('d'))).toMatchObject({ kind: 'park', tier: 'long', untilMs: clock.now() + 3_000 });
  });
});

describe('IdPacer: order per key through the tiers', () => {
  it('a returning quota park refused again sends the key\'s later returning events behind it', () => {
    const { p, clock } = pacer({ dailyQuota: 3, quotaWindowMs: 10_000, quotaBucketMs: 1_000 }, 0);
    for (let i = 0; i < 3; i++) expect(p.decide(dev('d'))).toEqual({ kind: 'send' });
    const parks: PaceVerdict[] = [];
    for (let i = 0; i < 5; i++) parks.push(p.decide(dev('d')));
    expect(parks.every((v) => v.kind === 'park' && v.tier === 'long')).toBe(true);
    const due = (parks[0] as { untilMs: number }).untilMs;
    expect(due).toBe(11_000);
    clock.set(due);
    // three fit again; the fourth is refused and parked again; the fifth, though the window might
    // admit it later, must go behind the fourth
    for (let i = 0; i < 3; i++) expect(p.decideRetried(dev('d'), 'long')).toEqual({ kind: 'send' });
    const again = p.decideRetried(dev('d'), 'long');
    expect(again).toMatchObject({ kind: 'park', tier: 'long' });
    expect(p.decideRetried(dev('d'), 'long')).toMatchObject({ kind: 'park', tier: 'long', untilMs: (again as { untilMs: number }).untilMs });
    // and new events too
    expect(p.decide(dev('d'))).toMatchObject({ kind: 'park', tier: 'long' });
  });

  it('a key with rate parks outstanding keeps queueing in the short tier', () => {
    const { p } = pacer({ maxDelayMs: 0 });
    const verdicts = Array.from({ length: 40 }, () => p.decide(dev('hot')));
    const firstPark = verdicts.findIndex((v) => v.kind === 'park');
    expect(firstPark).toBe(25); // 30/s with 200 ms jitter headroom: a burst of 25
    expect(verdicts.slice(firstPark).every((v) => v.kind === 'park' && v.tier === 'short')).toBe(true);
  });
});

describe('IdPacer: namespaces', () => {
  it('an event whose device_id equals its user_id gets the full burst', () => {
    const { p } = pacer();
    const ids: PacedIds = { key: 'same', deviceId: 'same-0001', userId: 'same-0001' };
    const verdicts = Array.from({ length: 26 }, () => p.decide(ids).kind);
    expect(verdicts.filter((k) => k === 'send')).toHaveLength(25);
  });

  it('a user id equal to another device\'s id does not share its budget', () => {
    const { p } = pacer();
    for (let i = 0; i < 25; i++) expect(p.decide({ key: 'a', deviceId: 'shared-id' }).kind).toBe('send');
    for (let i = 0; i < 25; i++) expect(p.decide({ key: 'b', deviceId: `dev-${i}`, userId: 'shared-id' }).kind).toBe('send');
  });
});

describe('IdPacer: counts per partition, restored after a restart', () => {
  const short = { dailyQuota: 20, quotaWindowMs: 3_000, quotaBucketMs: 500, eventsPerSecond: 1_000 };

  /** Sends one event every 50 ms until the first refusal; returns how many were sent and the refusal. */
  function runUntilRefused(p: IdPacer, clock: ManualClock, from: number, to: number): { sent: number; refusal?: PaceVerdict } {
    let sent = 0;
    for (let t = from; t < to; t += 50) {
      clock.set(t);
      const v = p.decide(dev('device-q', 3));
      if (v.kind !== 'send') return { sent, refusal: v };
      sent++;
    }
    return { sent };
  }

  it('a restart in the middle of the quota window stops the id at the same point as without it', () => {
    const t0 = 10_000;
    const a = pacer(short, t0);
    const uninterrupted = runUntilRefused(a.p, a.clock, t0, t0 + 3_000);
    expect(uninterrupted.sent).toBe(20);

    // the same traffic, with a restart after 12 events: the snapshot is restored into a new pacer
    const b = pacer(short, t0);
    const before = runUntilRefused(b.p, b.clock, t0, t0 + 600);
    expect(before.sent).toBe(12);
    const snap = b.p.exportPartition(3);
    expect(snap).toBeDefined();
    const c = pacer(short, t0 + 600);
    expect(c.p.beginRestore([3])).toEqual([3]);
    // while restoring, the partition's events wait in memory
    expect(c.p.decide(dev('device-q', 3))).toMatchObject({ kind: 'hold' });
    c.p.release('device-q');
    c.p.restorePartition(3, snap);
    const after = runUntilRefused(c.p, c.clock, t0 + 600, t0 + 3_000);
    expect(before.sent + after.sent).toBe(uninterrupted.sent);
    expect(after.refusal).toEqual(uninterrupted.refusal);

    // without the snapshot the restarted process would have let 20 more through
    const fresh = pacer(short, t0 + 600);
    expect(runUntilRefused(fresh.p, fresh.clock, t0 + 600, t0 + 3_000).sent).toBe(20);
  });

  it('tells its listeners when a restore ends, once, so what waited for it goes on at once (not at a poll)', () => {
    const { p } = pacer();
    const restored: number[] = [];
    p.onRestored((partition) => restored.push(partition));
    expect(p.beginRestore([4, 5])).toEqual([4, 5]);
    const v = p.decide(dev('waiting', 4));
    expect(v).toMatchObject({ kind: 'hold' });
    // the hold's own timer is only a safety net, a second away
    expect((v as { untilMs: number }).untilMs - 1_000_000).toBeGreaterThanOrEqual(1_000);
    p.restorePartition(4, undefined);
    expect(restored).toEqual([4]);
    // a partition that was not restoring (already held, or a second call) is not announced again
    p.restorePartition(4, undefined);
    expect(restored).toEqual([4]);
    p.release('waiting');
    expect(p.decide(dev('waiting', 4)).kind).toBe('send');
  });

  it('keeps partitions apart and drops a revoked one', () => {
    const { p } = pacer({ ...short, dailyQuota: 2 });
    expect(p.decide(dev('x', 1)).kind).toBe('send');
    expect(p.decide(dev('x', 1)).kind).toBe('send');
    expect(p.decide(dev('x', 1)).kind).toBe('park');
    expect(p.decide({ key: 'y', deviceId: 'x', partition: 2 }).kind).toBe('send');
    expect(p.heldPartitions().sort()).toEqual([1, 2]);
    p.dropPartition(1);
    expect(p.heldPartitions()).toEqual([2]);
    expect(p.exportPartition(1)).toBeUndefined();
  });

  it('carries the parked-key marks with the partition, so a key parked before a restart stays behind', () => {
    const { p, clock } = pacer(short, 0);
    p.markOverQuota({ devices: ['d'] }, 2_000);
    expect(p.decide(dev('d', 5))).toMatchObject({ kind: 'park', tier: 'long' });
    const snap = p.exportPartition(5);
    expect(snap?.marks).toEqual([{ key: 'd', short: 0, long: 1, untilMs: 2_000 }]);
    const q = pacer(short, clock.now()).p;
    q.beginRestore([5]);
    q.restorePartition(5, snap);
    expect(q.decide(dev('d', 5))).toMatchObject({ kind: 'park', tier: 'long', untilMs: 2_000 });
  });
});

describe('IdPacer: settings', () => {
  it('refuses settings the limiter cannot hold at construction, not at the first event', () => {
    expect(() => pacer({ quotaWindowMs: 86_400_000, quotaBucketMs: 500 })).toThrow(RangeError);
  });
});
