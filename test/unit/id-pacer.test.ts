import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { LimitSettings } from '../../src/config/config.js';
import { IdPacer, type PacedIds, type PartitionSnapshot, type PaceVerdict, type ParkTier } from '../../src/braze-to-amplitude/id-pacer.js';
import { IdentityLimiter } from '../../src/limits/identity-limiter.js';
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

/**
 * One key's events through the pacer as the leg and the park tiers move them: each tier is a FIFO
 * whose head comes back once due (as RetrySink and ParkedTierConsumer release a key's events), held
 * events are re-checked head first (as the leg's hold does), and `sent` is what reached Amplitude.
 */
class OneKey {
  readonly sent: string[] = [];
  /** every park, with the time it was decided */
  readonly parks: Array<{ ev: string; at: number; untilMs: number; tier: ParkTier; reason: string }> = [];
  private readonly tiers: Record<ParkTier, Array<{ ev: string; due: number }>> = { short: [], long: [] };
  private readonly held: string[] = [];

  constructor(
    private readonly p: IdPacer,
    private readonly clock: ManualClock,
    private readonly ids: PacedIds,
  ) {}

  /** a new event from the Currents topic */
  add(ev: string): PaceVerdict {
    const v = this.p.decide(this.ids);
    this.apply(ev, v);
    return v;
  }

  /** Amplitude refused these (sent) events naming the id over its daily quota: the leg parks them itself */
  refuse(evs: string[]): number {
    const until = this.p.markOverQuota({ devices: [this.ids.deviceId ?? ''] });
    for (const ev of evs) {
      this.sent.splice(this.sent.indexOf(ev), 1);
      this.p.noteParked(this.ids, until, 'daily_quota');
      this.tiers.long.push({ ev, due: until });
    }
    return until;
  }

  /** the head of a tier comes back (due or not: a tier may lag, never run ahead of its order) */
  returnHead(tier: ParkTier): PaceVerdict {
    const head = this.tiers[tier].shift();
    if (!head) throw new Error(`nothing in the ${tier} tier`);
    const v = this.p.decideRetried(this.ids, tier);
    this.apply(head.ev, v);
    return v;
  }

  /** runs the clock to `to` in 10 ms steps, releasing what is due */
  runTo(to: number): void {
    for (let t = this.clock.now(); t <= to; t += 10) {
      this.clock.set(t);
      while (this.held.length > 0) {
        const v = this.p.recheck(this.ids);
        if (v.kind === 'hold') break;
        const ev = this.held.shift() as string;
        if (v.kind !== 'send') this.p.release(this.ids.key);
        this.apply(ev, v, true);
      }
      for (const tier of ['short', 'long'] as const) {
        while ((this.tiers[tier][0]?.due ?? Infinity) <= t) this.returnHead(tier);
      }
    }
  }

  private apply(ev: string, v: PaceVerdict, fromHold = false): void {
    if (v.kind === 'send') this.sent.push(ev);
    else if (v.kind === 'hold' && !fromHold) this.held.push(ev);
    else if (v.kind === 'park') {
      this.parks.push({ ev, at: this.clock.now(), untilMs: v.untilMs, tier: v.tier, reason: v.reason });
      this.tiers[v.tier].push({ ev, due: v.untilMs });
    }
  }
}

describe('IdPacer: rate parks, then a daily-quota park, of one key', () => {
  const names = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);

  it('Amplitude\'s quota answer: new events never wait in the short tier for the quota, and go to the long tier behind the older ones, in order', () => {
    const { p, clock } = pacer({ maxDelayMs: 0 }, 10_000_000);
    const k = new OneKey(p, clock, dev('hot'));
    for (const ev of names('e', 25)) expect(k.add(ev).kind).toBe('send');
    for (const ev of names('s', 5)) expect(k.add(ev)).toMatchObject({ kind: 'park', tier: 'short', reason: 'rate_limit' });
    // two of the events sent come back refused: Amplitude says the device is over its daily quota
    const until = k.refuse(['e24', 'e25']);
    expect(until - clock.now()).toBe(SETTINGS.quotaBucketMs);
    const start = clock.now();
    for (const ev of names('n', 3)) k.add(ev);
    k.runTo(start + 5_000);
    // Within seconds every one of them is in the long tier, parked for the daily quota; no short
    // park was ever due later than the rate allows.
    expect(k.parks.every((x) => x.tier === 'long' || x.untilMs - x.at <= SETTINGS.maxDelayMs + 1_000)).toBe(true);
    expect(k.parks.filter((x) => x.tier === 'long').map((x) => x.ev)).toEqual([...names('s', 5), ...names('n', 3)]);
    expect(k.parks.filter((x) => x.tier === 'long').every((x) => x.reason === 'daily_quota' && x.untilMs === until)).toBe(true);
    expect(k.sent).toHaveLength(23);
    // once due they are delivered, the older before the newer
    k.runTo(until + 1_000);
    expect(k.sent.slice(23)).toEqual(['e24', 'e25', ...names('s', 5), ...names('n', 3)]);
  });

  it('its own count: a returning rate park refused for the quota sends the key\'s newer events to the long tier behind the older ones, in order', () => {
    // a quota of 26: the burst of 25, then one of the rate parks fits and the next is refused
    const { p, clock } = pacer({ maxDelayMs: 0, dailyQuota: 26, quotaWindowMs: 60_000, quotaBucketMs: 1_000 }, 10_000_000);
    const k = new OneKey(p, clock, dev('hot'));
    for (const ev of names('e', 25)) expect(k.add(ev).kind).toBe('send');
    for (const ev of names('s', 5)) expect(k.add(ev)).toMatchObject({ kind: 'park', tier: 'short' });
    clock.set(k.parks[0]?.untilMs as number);
    // the first two come back (the rest of the tier lags): one fits, the other is over the quota
    expect(k.returnHead('short')).toEqual({ kind: 'send' });
    const refused = k.returnHead('short');
    expect(refused).toMatchObject({ kind: 'park', tier: 'long', reason: 'daily_quota' });
    const until = (refused as { untilMs: number }).untilMs;
    expect(until - clock.now()).toBeGreaterThan(50_000);
    // new events meanwhile: not parked in the short tier until the quota allows
    const start = clock.now();
    for (const ev of names('n', 3)) {
      const v = k.add(ev);
      expect(v.kind).toBe('park');
      if (v.kind === 'park' && v.tier === 'short') expect(v.untilMs - start).toBeLessThanOrEqual(SETTINGS.maxDelayMs);
      if (v.kind === 'park' && v.tier === 'long') expect(v.reason).toBe('daily_quota');
    }
    k.runTo(start + 5_000);
    expect(k.parks.filter((x) => x.tier === 'long').map((x) => x.ev)).toEqual(['s2', 's3', 's4', 's5', ...names('n', 3)]);
    expect(k.parks.filter((x) => x.tier === 'long').every((x) => x.reason === 'daily_quota')).toBe(true);
    k.runTo(until + 1_000);
    expect(k.sent.slice(25)).toEqual(['s1', 's2', 's3', 's4', 's5', ...names('n', 3)]);
  });

  it('with only quota parks outstanding, new events go straight to the long tier for the quota', () => {
    const { p, clock } = pacer({ dailyQuota: 2, quotaWindowMs: 60_000, quotaBucketMs: 1_000 }, 10_000_000);
    const k = new OneKey(p, clock, dev('d'));
    k.add('e1');
    k.add('e2');
    const first = k.add('e3');
    expect(first).toMatchObject({ kind: 'park', tier: 'long', reason: 'daily_quota' });
    expect(k.add('e4')).toEqual(first);
    k.runTo((first as { untilMs: number }).untilMs + 1_000);
    expect(k.sent).toEqual(['e1', 'e2', 'e3', 'e4']);
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

describe('IdPacer: a partition seen through a retry tier before it was assigned here', () => {
  const short = { dailyQuota: 20, quotaWindowMs: 3_000, quotaBucketMs: 500, eventsPerSecond: 1_000 };
  const t0 = 10_000;

  /** Sends one event of `id` every 50 ms until the first refusal; returns how many were sent. */
  function sendUntilRefused(p: IdPacer, clock: ManualClock, from: number, to: number, id = 'device-q', partition = 3): number {
    let sent = 0;
    for (let t = from; t < to; t += 50) {
      clock.set(t);
      if (p.decide(dev(id, partition)).kind !== 'send') return sent;
      sent++;
    }
    return sent;
  }

  /** The previous owner, and the compacted topic as a variable its saves write. */
  function owner(): { a: ReturnType<typeof pacer>; topic: { snap: PartitionSnapshot | undefined }; save: () => void } {
    const a = pacer(short, t0);
    const topic: { snap: PartitionSnapshot | undefined } = { snap: undefined };
    return { a, topic, save: () => (topic.snap = a.p.exportPartition(3)) };
  }

  it('is restored again when assigned: the previous owner\'s last save, plus what this member counted meanwhile', () => {
    const { a, topic, save } = owner();
    expect(sendUntilRefused(a.p, a.clock, t0, t0 + 500)).toBe(10);
    save();
    // B reads partition 3 of the short tier first: the event makes it load the snapshot there is
    const b = pacer(short, t0 + 500);
    b.p.setRestorer((partition) => b.p.restorePartition(partition, partition === 3 ? topic.snap : undefined));
    expect(b.p.decideRetried(dev('device-q', 3), 'short')).toEqual({ kind: 'send' });
    expect(b.p.decideRetried(dev('device-q', 3), 'short')).toEqual({ kind: 'send' });
    // its counts are not B's to save while A owns the partition
    expect(b.p.exportPartition(3)).toBeUndefined();
    // A goes on (it still owns the Currents partition), then loses it and saves a last time
    expect(sendUntilRefused(a.p, a.clock, t0 + 500, t0 + 700)).toBe(4);
    save();
    // B is assigned partition 3: the snapshot is read again and merged with B's own counts
    expect(b.p.beginRestore([3])).toEqual([3]);
    b.p.restorePartition(3, topic.snap);
    // 10 + 4 by A, 2 by B: 4 more of the quota of 20
    expect(sendUntilRefused(b.p, b.clock, t0 + 700, t0 + 2_000)).toBe(4);
    expect(b.p.exportPartition(3)).toBeDefined();
  });

  it('an early restore still in flight when the partition is assigned is read again once it lands', () => {
    const { a, topic, save } = owner();
    expect(sendUntilRefused(a.p, a.clock, t0, t0 + 500)).toBe(10);
    save();
    const early = topic.snap;
    const b = pacer(short, t0 + 500);
    const asked: number[] = [];
    b.p.setRestorer((partition) => asked.push(partition));
    expect(b.p.decideRetried(dev('device-q', 3), 'short')).toMatchObject({ kind: 'hold' });
    b.p.release('device-q');
    expect(asked).toEqual([3]);
    // the read is under way when A saves its last counts and B is assigned the partition
    expect(sendUntilRefused(a.p, a.clock, t0 + 500, t0 + 700)).toBe(4);
    save();
    expect(b.p.beginRestore([3])).toEqual([]);
    b.p.restorePartition(3, early);
    expect(asked).toEqual([3, 3]);
    expect(b.p.isRestoring(3)).toBe(true);
    b.p.restorePartition(3, topic.snap);
    expect(b.p.isRestoring(3)).toBe(false);
    expect(sendUntilRefused(b.p, b.clock, t0 + 700, t0 + 2_000)).toBe(6);
  });

  it('a parked key whose events came back here before the assignment is not parked again by the owner\'s older marks', () => {
    const { a, topic, save } = owner();
    // the 21st event is refused and parked, and so is the 22nd, behind it
    expect(sendUntilRefused(a.p, a.clock, t0, t0 + 2_000, 'k')).toBe(20);
    const parked = a.p.decide(dev('k', 3));
    expect(parked).toMatchObject({ kind: 'park', tier: 'long' });
    save();
    expect(topic.snap?.marks).toEqual([{ key: 'k', short: 0, long: 2, untilMs: (parked as { untilMs: number }).untilMs }]);
    // B reads the long tier's partition 3: another key's event loads the snapshot, then k's two come back and are sent
    const due = (parked as { untilMs: number }).untilMs;
    const b = pacer(short, due);
    b.p.setRestorer((partition) => b.p.restorePartition(partition, topic.snap));
    expect(b.p.decideRetried(dev('other', 3), 'long')).toEqual({ kind: 'send' });
    expect(b.p.decideRetried(dev('k', 3), 'long')).toEqual({ kind: 'send' });
    expect(b.p.decideRetried(dev('k', 3), 'long')).toEqual({ kind: 'send' });
    // A never saw them come back: its last save still counts two parked
    a.clock.set(due);
    save();
    expect(b.p.beginRestore([3])).toEqual([3]);
    b.p.restorePartition(3, topic.snap);
    expect(b.p.decide(dev('k', 3))).toEqual({ kind: 'send' });
  });
});

describe('IdPacer: events back from a tier while their partition is restored', () => {
  it('are taken off the restored marks, so the key is not parked for events no longer parked', () => {
    const settings = { dailyQuota: 3, quotaWindowMs: 3_000, quotaBucketMs: 500, eventsPerSecond: 1_000 };
    const a = pacer(settings, 10_000);
    for (let i = 0; i < 3; i++) expect(a.p.decide(dev('k', 3)).kind).toBe('send');
    const parked = a.p.decide(dev('k', 3));
    expect(parked).toMatchObject({ kind: 'park', tier: 'long' });
    expect(a.p.decide(dev('k', 3))).toMatchObject({ kind: 'park', tier: 'long' });
    const snap = a.p.exportPartition(3);
    expect(snap?.marks).toMatchObject([{ key: 'k', long: 2 }]);
    // B is assigned partition 3; one of k's parked events comes back while the snapshot is read
    const b = pacer(settings, (parked as { untilMs: number }).untilMs);
    expect(b.p.beginRestore([3])).toEqual([3]);
    expect(b.p.decideRetried(dev('k', 3), 'long')).toMatchObject({ kind: 'hold' });
    b.p.restorePartition(3, snap);
    expect(b.p.recheck(dev('k', 3))).toEqual({ kind: 'send' });
    expect(b.p.decideRetried(dev('k', 3), 'long')).toEqual({ kind: 'send' });
    // both are back: a new event of k goes straight out
    expect(b.p.decide(dev('k', 3))).toEqual({ kind: 'send' });
  });
});

describe('IdentityLimiter.subtractDaily', () => {
  it('leaves what was counted since the snapshot, for live and evicted identities, never below zero', () => {
    const clock = new ManualClock(1_000_000);
    const limits = { eventsPerSecond: 1_000, dailyQuota: 100, windowMs: 60_000, bucketMs: 1_000 };
    const a = new IdentityLimiter(limits, clock);
    for (let i = 0; i < 5; i++) a.tryTake('live');
    for (let i = 0; i < 3; i++) a.tryTake('evicted');
    const base = a.exportDaily();
    const b = IdentityLimiter.fromSnapshot(limits, clock, base);
    clock.advance(2_000);
    b.tryTake('live');
    b.tryTake('live');
    b.tryTake('new');
    b.evictIdle(0);
    expect(b.tryTake('live')).toBe(0);
    b.subtractDaily(base);
    expect(b.dailyUsage('live')).toBeCloseTo(3 / 100, 12);
    expect(b.dailyUsage('evicted')).toBe(0);
    expect(b.dailyUsage('new')).toBeCloseTo(1 / 100, 12);
    // per bucket: a second subtraction finds nothing left in the snapshot's bucket, and stops at zero
    b.subtractDaily(base);
    expect(b.dailyUsage('live')).toBeCloseTo(3 / 100, 12);
    expect(b.dailyUsage('new')).toBeCloseTo(1 / 100, 12);
  });
});

describe('IdPacer: settings', () => {
  it('refuses settings the limiter cannot hold at construction, not at the first event', () => {
    expect(() => pacer({ quotaWindowMs: 86_400_000, quotaBucketMs: 500 })).toThrow(RangeError);
  });
});
