import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { DEVICE_NS, IdentityLimiter, USER_NS, type IdentityLimits } from '../../src/limits/identity-limiter.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Deterministic PRNG so a failing brute-force case can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Largest number of events inside any window [s, s + windowMs), s arbitrary. */
function maxInAnyWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((x, y) => x - y);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while ((sorted[lo] ?? 0) <= (sorted[hi] ?? 0) - windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

interface Arrival {
  t: number;
  id: number;
  n: number;
}

interface SimResult {
  admitted: number[][];
  waits: number;
  quotas: number;
}

/**
 * Drives the limiter like the gateway does: per identity a FIFO of batches; the head batch is
 * retried exactly at the returned untilMs. Also checks that untilMs is exact: one millisecond
 * earlier is still denied, and at untilMs the same (unchanged) identity is no longer denied for
 * the same reason.
 */
function simulate(limits: IdentityLimits, ids: number, arrivals: Arrival[]): SimResult {
  const clock = new ManualClock(0);
  const lim = new IdentityLimiter(limits, clock);
  const name = (i: number): string => `device-${i}`;
  // Index-based FIFOs: overloaded runs queue thousands of batches and shift() would be quadratic.
  const queues: number[][] = Array.from({ length: ids }, () => []);
  const heads: number[] = Array.from({ length: ids }, () => 0);
  const retryAt: number[] = Array.from({ length: ids }, () => -1);
  const lastReason: ('wait' | 'quota' | undefined)[] = Array.from({ length: ids }, () => undefined);
  const admitted: number[][] = Array.from({ length: ids }, () => []);
  let waits = 0;
  let quotas = 0;
  let next = 0;
  for (;;) {
    let t = next < arrivals.length ? (arrivals[next]?.t ?? Infinity) : Infinity;
    for (let i = 0; i < ids; i++) if ((queues[i]?.length ?? 0) > (heads[i] ?? 0)) t = Math.min(t, retryAt[i] ?? 0);
    if (t === Infinity) break;
    clock.set(t);
    while (next < arrivals.length && arrivals[next]?.t === t) {
      const a = arrivals[next++];
      if (a === undefined) break;
      const q = queues[a.id];
      if (q === undefined) throw new Error('bad id');
      if (q.length === (heads[a.id] ?? 0)) retryAt[a.id] = t;
      q.push(a.n);
    }
    for (let i = 0; i < ids; i++) {
      const q = queues[i];
      if (q === undefined) continue;
      while (q.length > (heads[i] ?? 0) && (retryAt[i] ?? 0) <= t) {
        const n = q[heads[i] ?? 0] ?? 1;
        const r = lim.tryTake(name(i), n);
        if (r === 0) {
          for (let k = 0; k < n; k++) admitted[i]?.push(t);
          heads[i] = (heads[i] ?? 0) + 1;
          lastReason[i] = undefined;
          continue;
        }
        const reason = lim.lastDecisionWasQuota ? 'quota' : 'wait';
        // Retrying at the promised time must not hit the same limit again.
        expect(lastReason[i] === reason && retryAt[i] === t).toBe(false);
        expect(r).toBeGreaterThan(t);
        if (r - 1 > t) {
          clock.set(r - 1);
          expect(lim.tryTake(name(i), n)).toBeGreaterThan(0);
          clock.set(t);
        }
        if (reason === 'quota') quotas++;
        else waits++;
        lastReason[i] = reason;
        retryAt[i] = r;
      }
    }
  }
  return { admitted, waits, quotas };
}

function randomArrivals(rnd: () => number, ids: number, seconds: number, maxBatch: number, meanGapMs: number): Arrival[] {
  const out: Arrival[] = [];
  for (let id = 0; id < ids; id++) {
    let t = Math.floor(rnd() * 1000);
    while (t < seconds * 1000) {
      // Clumps of near-simultaneous batches (SDK flushes) separated by random gaps.
      const clump = 1 + Math.floor(rnd() * 6);
      for (let k = 0; k < clump; k++) out.push({ t: t + Math.floor(rnd() * 3), id, n: 1 + Math.floor(rnd() * maxBatch) });
      t += 1 + Math.floor(-Math.log(1 - rnd()) * meanGapMs);
    }
  }
  return out.sort((a, b) => a.t - b.t);
}

describe('IdentityLimiter rate', () => {
  it.each([1, 5, 7, 30, 100])('admits exactly %i at once, then waits until the window frees', (n) => {
    const clock = new ManualClock(5_000);
    const lim = new IdentityLimiter({ eventsPerSecond: n, dailyQuota: 1_000_000 }, clock);
    for (let i = 0; i < n; i++) expect(lim.take('d')).toEqual({ kind: 'allow' });
    expect(lim.take('d')).toEqual({ kind: 'wait', untilMs: 6_000 });
    clock.set(5_999);
    expect(lim.take('d')).toEqual({ kind: 'wait', untilMs: 6_000 });
    clock.set(6_000);
    expect(lim.take('d')).toEqual({ kind: 'allow' });
    // After a full burst the next ones are spaced 1000/N apart, rounded up to whole ms.
    expect(lim.take('d')).toEqual({ kind: 'wait', untilMs: 6_000 + Math.ceil((1000 - n + 1) / n) });
  });

  it.each([
    { n: 30, arrivalEveryMs: 1 },
    { n: 30, arrivalEveryMs: 20 },
    { n: 7, arrivalEveryMs: 3 },
    { n: 1, arrivalEveryMs: 10 },
  ])('sustains exactly $n per second under overload (arrival every $arrivalEveryMs ms)', ({ n, arrivalEveryMs }) => {
    const arrivals: Arrival[] = [];
    for (let t = 0; t < 20_000; t += arrivalEveryMs) arrivals.push({ t, id: 0, n: 1 });
    const { admitted } = simulate({ eventsPerSecond: n, dailyQuota: 1e9 }, 1, arrivals);
    const times = admitted[0] ?? [];
    for (let s = 0; s < 20; s++) {
      expect(times.filter((x) => x >= s * 1000 && x < (s + 1) * 1000)).toHaveLength(n);
    }
    expect(maxInAnyWindow(times, 1000)).toBe(n);
  });

  it('spreads singles after idle without spacing, up to N', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    for (let i = 0; i < 30; i++) {
      clock.set(i * 10);
      expect(lim.tryTake('d')).toBe(0);
    }
    clock.set(300);
    expect(lim.take('d')).toEqual({ kind: 'wait', untilMs: 1000 });
  });

  it('honours a burst below the rate', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 10, burst: 3, dailyQuota: 1e6 }, clock);
    for (let i = 0; i < 3; i++) expect(lim.tryTake('d')).toBe(0);
    expect(lim.take('d')).toEqual({ kind: 'wait', untilMs: 100 });
    expect(() => lim.take('d', 4)).toThrow(RangeError);
  });

  it('handles count > 1 and rejects counts that can never fit', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    expect(lim.take('d', 10)).toEqual({ kind: 'allow' });
    expect(lim.take('d', 20)).toEqual({ kind: 'allow' });
    expect(lim.take('d', 1)).toEqual({ kind: 'wait', untilMs: 1000 });
    // A batch right after a full window needs room for all of its slots.
    clock.set(1000);
    expect(lim.take('d', 10)).toEqual({ kind: 'wait', untilMs: 1300 });
    clock.set(1300);
    expect(lim.take('d', 10)).toEqual({ kind: 'allow' });
    expect(() => lim.take('d', 31)).toThrow(RangeError);
    expect(() => lim.take('d', 0)).toThrow(RangeError);
    expect(() => lim.take('d', 1.5)).toThrow(RangeError);
  });

  it('keeps identities apart', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    for (let i = 0; i < 5000; i++) expect(lim.tryTake(`user-${i}`, 30)).toBe(0);
    for (let i = 0; i < 5000; i++) expect(lim.tryTake(`user-${i}`)).toBe(1000);
    expect(lim.size).toBe(5000);
  });

  it.each([
    { n: 30, burst: 30, maxBatch: 1, gap: 40, seed: 1 },
    { n: 30, burst: 30, maxBatch: 5, gap: 60, seed: 2 },
    { n: 30, burst: 30, maxBatch: 12, gap: 200, seed: 3 },
    { n: 30, burst: 30, maxBatch: 1, gap: 900, seed: 31 },
    { n: 30, burst: 30, maxBatch: 12, gap: 1500, seed: 32 },
    { n: 30, burst: 10, maxBatch: 4, gap: 30, seed: 4 },
    { n: 30, burst: 1, maxBatch: 1, gap: 10, seed: 5 },
    { n: 3, burst: 3, maxBatch: 3, gap: 150, seed: 6 },
    { n: 1, burst: 1, maxBatch: 1, gap: 300, seed: 7 },
    { n: 100, burst: 100, maxBatch: 20, gap: 25, seed: 8 },
    { n: 2000, burst: 2000, maxBatch: 300, gap: 200, seed: 9 },
  ])('never admits more than N in any 1 s window (brute force: $n/s, burst $burst, batches <= $maxBatch)', (c) => {
    const rnd = mulberry32(c.seed);
    const ids = 4;
    const arrivals = randomArrivals(rnd, ids, 60, c.maxBatch, c.gap);
    const { admitted, waits } = simulate({ eventsPerSecond: c.n, burst: c.burst, dailyQuota: 1e9 }, ids, arrivals);
    expect(waits).toBeGreaterThan(0);
    for (const times of admitted) {
      expect(maxInAnyWindow(times, 1000)).toBeLessThanOrEqual(c.n);
      expect(times.length).toBeGreaterThan(0);
    }
  });
});

describe('IdentityLimiter batch decisions', () => {
  it('tryTakeMany decides exactly like consecutive tryTake calls at the same instant', () => {
    const limits: IdentityLimits = { eventsPerSecond: 10, dailyQuota: 40, windowMs: 20_000, bucketMs: 2000 };
    const clockA = new ManualClock(0);
    const clockB = new ManualClock(0);
    const one = new IdentityLimiter(limits, clockA);
    const many = new IdentityLimiter(limits, clockB);
    const rnd = mulberry32(42);
    let t = 0;
    let denied = 0;
    let quota = 0;
    for (let round = 0; round < 400; round++) {
      t += Math.floor(rnd() * 300);
      clockA.set(t);
      clockB.set(t);
      // Batches longer than the internal chunk, with repeats and first-seen identities mixed in.
      const len = 1 + Math.floor(rnd() * 600);
      const ids = Array.from({ length: len }, () => `u${Math.floor(rnd() * 50)}`);
      const counts = ids.map(() => 1 + Math.floor(rnd() * 3));
      const out = new Float64Array(len);
      const quotaOut = new Uint8Array(len);
      const allowed = many.tryTakeMany(ids, out, quotaOut, counts);
      let expectedAllowed = 0;
      for (let i = 0; i < len; i++) {
        const r = one.tryTake(ids[i] ?? '', counts[i] ?? 1);
        expect(out[i]).toBe(r);
        expect(quotaOut[i]).toBe(r !== 0 && one.lastDecisionWasQuota ? 1 : 0);
        if (r === 0) expectedAllowed++;
        else if (one.lastDecisionWasQuota) quota++;
        else denied++;
      }
      expect(allowed).toBe(expectedAllowed);
      if (round % 50 === 49) expect(many.evictIdle(1000)).toBe(one.evictIdle(1000));
    }
    expect(denied).toBeGreaterThan(0);
    expect(quota).toBeGreaterThan(0);
    expect(many.size).toBe(one.size);
  });

  it('rejects a bad count before deciding anything', () => {
    const lim = new IdentityLimiter({ eventsPerSecond: 5, dailyQuota: 100 }, new ManualClock(0));
    expect(() => lim.tryTakeMany(['a', 'b'], new Float64Array(2), undefined, [1, 9])).toThrow(RangeError);
    expect(lim.size).toBe(0);
  });
});

describe('IdentityLimiter daily quota', () => {
  const limits: IdentityLimits = { eventsPerSecond: 1000, dailyQuota: 10 };

  it('parks at the quota and releases exactly when the oldest bucket leaves the window', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter(limits, clock);
    expect(lim.take('d', 4)).toEqual({ kind: 'allow' });
    clock.set(HOUR + 5 * 60_000);
    expect(lim.take('d', 6)).toEqual({ kind: 'allow' });
    clock.set(2 * HOUR);
    // Bucket [0, 1h) holds the first 4 and counts until all of it is older than 24 h.
    expect(lim.take('d')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
    expect(lim.lastDecisionWasQuota).toBe(true);
    // Five need both buckets gone.
    expect(lim.take('d', 5)).toEqual({ kind: 'quota', untilMs: 2 * HOUR + DAY });
    clock.set(HOUR + DAY - 1);
    expect(lim.take('d').kind).toBe('quota');
    clock.set(HOUR + DAY);
    expect(lim.take('d')).toEqual({ kind: 'allow' });
    expect(lim.take('d', 3)).toEqual({ kind: 'allow' });
    expect(lim.take('d')).toEqual({ kind: 'quota', untilMs: 2 * HOUR + DAY });
  });

  it('outranks the rate limit', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 5, dailyQuota: 5 }, clock);
    expect(lim.take('d', 5)).toEqual({ kind: 'allow' });
    expect(lim.take('d')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
  });

  it('reports usage and counts identities above a fraction', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 1000, dailyQuota: 100 }, clock);
    const used: [string, number][] = [
      ['a', 50],
      ['b', 79],
      ['c', 80],
      ['d', 90],
      ['e', 100],
    ];
    for (const [id, n] of used) expect(lim.tryTake(id, n)).toBe(0);
    expect(lim.dailyUsage('c')).toBeCloseTo(0.8);
    expect(lim.dailyUsage('unknown')).toBe(0);
    expect(lim.countAbove(0.8)).toBe(3);
    expect(lim.countAbove(0)).toBe(5);
    clock.set(HOUR + DAY);
    expect(lim.dailyUsage('e')).toBe(0);
    expect(lim.countAbove(0.8)).toBe(0);
  });

  it('keeps exact counts above 65,534 events per bucket', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 50_000, dailyQuota: 200_000 }, clock);
    for (let s = 0; s < 4; s++) {
      clock.set(s * 2000);
      expect(lim.tryTake('bot', 50_000)).toBe(0);
    }
    expect(lim.dailyUsage('bot')).toBe(1);
    clock.set(10_000);
    expect(lim.take('bot')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
    clock.set(20 * 60_000);
    expect(lim.evictIdle(60_000)).toBe(1);
    expect(lim.dailyUsage('bot')).toBe(1);
    expect(lim.take('bot')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
    clock.set(HOUR + DAY);
    expect(lim.take('bot')).toEqual({ kind: 'allow' });
  });

  it.each([
    { seed: 11, quota: 50, n: 20 },
    { seed: 12, quota: 7, n: 5 },
    { seed: 13, quota: 200, n: 30 },
  ])('never exceeds the quota in any rolling window (brute force, seed $seed)', ({ seed, quota, n }) => {
    const windowMs = 10_000;
    const rnd = mulberry32(seed);
    const arrivals = randomArrivals(rnd, 3, 120, 4, 80);
    const { admitted, quotas } = simulate({ eventsPerSecond: n, dailyQuota: quota, windowMs, bucketMs: 1000 }, 3, arrivals);
    expect(quotas).toBeGreaterThan(0);
    for (const times of admitted) {
      expect(maxInAnyWindow(times, windowMs)).toBeLessThanOrEqual(quota);
      expect(maxInAnyWindow(times, 1000)).toBeLessThanOrEqual(n);
    }
  });

  it('handles a window that is not a multiple of the bucket', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 100, dailyQuota: 3, windowMs: 2500, bucketMs: 1000 }, clock);
    expect(lim.take('d', 3)).toEqual({ kind: 'allow' });
    clock.set(999);
    expect(lim.take('d')).toEqual({ kind: 'quota', untilMs: 3500 });
    clock.set(3499);
    expect(lim.take('d').kind).toBe('quota');
    clock.set(3500);
    expect(lim.take('d')).toEqual({ kind: 'allow' });
  });
});

describe('IdentityLimiter eviction', () => {
  it('evicts idle identities without losing their daily counts', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 10 }, clock);
    expect(lim.take('over', 10)).toEqual({ kind: 'allow' });
    expect(lim.take('some', 4)).toEqual({ kind: 'allow' });
    clock.set(9 * 60_000);
    expect(lim.take('busy')).toEqual({ kind: 'allow' });
    clock.set(10 * 60_000);
    expect(lim.evictIdle(5 * 60_000)).toBe(2);
    expect(lim.size).toBe(1);
    expect(lim.dailyUsage('over')).toBe(1);
    expect(lim.countAbove(0.8)).toBe(1);
    expect(lim.take('over')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
    expect(lim.take('some', 6)).toEqual({ kind: 'allow' });
    expect(lim.take('some')).toEqual({ kind: 'quota', untilMs: HOUR + DAY });
    expect(lim.size).toBe(3);
  });

  it('does not evict before idleMs nor while the rate window is still occupied', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    expect(lim.tryTake('d', 30)).toBe(0);
    expect(lim.evictIdle(0)).toBe(0);
    clock.set(999);
    expect(lim.evictIdle(0)).toBe(0);
    clock.set(60_000);
    expect(lim.evictIdle(120_000)).toBe(0);
    expect(lim.evictIdle(30_000)).toBe(1);
    // Its window was empty of rate events, so coming back is a fresh full burst.
    expect(lim.tryTake('d', 30)).toBe(0);
  });

  it('drops identities whose daily window is empty instead of parking them', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 10 }, clock);
    const empty = lim.approximateBytes();
    for (let i = 0; i < 100; i++) lim.tryTake(`d${i}`);
    clock.set(HOUR / 2);
    expect(lim.evictIdle(60_000)).toBe(100);
    expect(lim.approximateBytes()).toBeGreaterThan(empty);
    clock.set(2 * DAY);
    // The sweep also forgets parked identities whose counts have all left the window.
    expect(lim.evictIdle(60_000)).toBe(0);
    expect(lim.approximateBytes()).toBe(empty);
  });

  it('reuses freed records before growing', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    const cap = lim.capacity;
    for (let i = 0; i < 10; i++) lim.tryTake(`old-${i}`);
    clock.set(10 * 60_000);
    for (let i = 10; i < cap; i++) lim.tryTake(`new-${i}`);
    expect(lim.size).toBe(cap);
    expect(lim.evictIdle(5 * 60_000)).toBe(10);
    for (let i = 0; i < 10; i++) lim.tryTake(`later-${i}`);
    expect(lim.size).toBe(cap);
    expect(lim.capacity).toBe(cap);
    lim.tryTake('one-more');
    expect(lim.capacity).toBe(2 * cap);
  });

  it('keeps every surviving identity reachable after deleting from the index', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1000 }, clock);
    const rnd = mulberry32(99);
    const ids = Array.from({ length: 20_000 }, (_, i) => `id-${i}`);
    const stale = new Set<string>();
    for (const id of ids) {
      if (rnd() < 0.5) stale.add(id);
      else continue;
      expect(lim.tryTake(id, 7)).toBe(0);
    }
    clock.set(10 * 60_000);
    for (const id of ids) if (!stale.has(id)) expect(lim.tryTake(id, 30)).toBe(0);
    expect(lim.evictIdle(5 * 60_000)).toBe(stale.size);
    expect(lim.size).toBe(ids.length - stale.size);
    for (const id of ids) {
      if (stale.has(id)) {
        expect(lim.dailyUsage(id)).toBeCloseTo(0.007);
      } else {
        expect(lim.tryTake(id)).toBe(10 * 60_000 + 1000);
        expect(lim.dailyUsage(id)).toBeCloseTo(0.03);
      }
    }
  });

  it('validates its limits', () => {
    expect(() => new IdentityLimiter({ eventsPerSecond: 0, dailyQuota: 1 })).toThrow(RangeError);
    expect(() => new IdentityLimiter({ eventsPerSecond: 2.5, dailyQuota: 1 })).toThrow(RangeError);
    expect(() => new IdentityLimiter({ eventsPerSecond: 5, burst: 6, dailyQuota: 1 })).toThrow(RangeError);
    expect(() => new IdentityLimiter({ eventsPerSecond: 5, dailyQuota: 0 })).toThrow(RangeError);
    expect(() => new IdentityLimiter({ eventsPerSecond: 5, dailyQuota: 1, bucketMs: 2, windowMs: 1 })).toThrow(RangeError);
  });
});

describe('IdentityLimiter namespaces', () => {
  it('gives a device id and an equal user id separate budgets', () => {
    const clock = new ManualClock(0);
    const lim = new IdentityLimiter({ eventsPerSecond: 30, dailyQuota: 1e6 }, clock);
    // device_id == user_id: both namespaces get the full burst
    for (let i = 0; i < 30; i++) {
      expect(lim.tryTake('same-id', 1, DEVICE_NS)).toBe(0);
      expect(lim.tryTake('same-id', 1, USER_NS)).toBe(0);
    }
    expect(lim.tryTake('same-id', 1, DEVICE_NS)).toBeGreaterThan(0);
    expect(lim.tryTake('same-id', 1, USER_NS)).toBeGreaterThan(0);
    expect(lim.size).toBe(2);
  });

  it('keeps namespaces apart in tryTakeMany as in tryTake', () => {
    const lim = new IdentityLimiter({ eventsPerSecond: 2, dailyQuota: 1e6 }, new ManualClock(0));
    const out = new Float64Array(6);
    expect(lim.tryTakeMany(['x', 'x', 'x', 'x', 'x', 'x'], out, undefined, undefined, [0, 1, 0, 1, 0, 1])).toBe(4);
    expect([...out].map((v) => v === 0)).toEqual([true, true, true, true, false, false]);
  });
});

describe('IdentityLimiter snapshots', () => {
  const limits: IdentityLimits = { eventsPerSecond: 1000, dailyQuota: 100, windowMs: 10_000, bucketMs: 1_000 };

  it('aligns buckets to multiples of bucketMs, so a limiter started later cuts the window at the same instants', () => {
    const a = new IdentityLimiter(limits, new ManualClock(123_456));
    const clock = new ManualClock(123_456);
    expect(a.take('d', 100)).toEqual({ kind: 'allow' });
    // bucket [123000, 124000) counts until 134000 whatever the start time
    const b = new IdentityLimiter(limits, clock);
    expect(b.take('e', 100)).toEqual({ kind: 'allow' });
    expect(a.take('d').kind === 'quota' && (a.take('d') as { untilMs: number }).untilMs).toBe(134_000);
    expect((b.take('e') as { untilMs: number }).untilMs).toBe(134_000);
  });

  it('round-trips daily counts, live and parked, into a limiter with the same seeds', () => {
    const clock = new ManualClock(50_000);
    const a = new IdentityLimiter(limits, clock);
    for (let i = 0; i < 1000; i++) expect(a.tryTake(`dev-${i}`, 1 + (i % 50))).toBe(0);
    clock.advance(1_500);
    for (let i = 0; i < 500; i++) expect(a.tryTake(`dev-${i}`, 10)).toBe(0);
    a.evictIdle(1_000); // every record parked: idle for over a second
    clock.advance(600);
    for (let i = 0; i < 200; i++) expect(a.tryTake(`dev-${i}`, 1)).toBe(0); // some live again
    expect(a.tryTake('u-1', 7, USER_NS)).toBe(0);
    const snap = a.exportDaily();
    expect(snap.byteLength).toBeLessThan(1_701 * 16);
    const b = IdentityLimiter.fromSnapshot(limits, clock, snap);
    expect(b.seeds).toEqual(a.seeds);
    for (let i = 0; i < 1000; i++) expect(b.dailyUsage(`dev-${i}`)).toBeCloseTo(a.dailyUsage(`dev-${i}`));
    expect(b.dailyUsage('u-1', USER_NS)).toBeCloseTo(0.07);
    expect(b.dailyUsage('u-1', DEVICE_NS)).toBe(0);
    // And the quota stops each id at the same point and releases it at the same time.
    for (const id of ['dev-0', 'dev-49', 'dev-777']) expect(b.take(id, 100)).toEqual(a.take(id, 100));
  });

  it('adds a snapshot to counts taken while it was loading, and skips expired buckets', () => {
    const clock = new ManualClock(0);
    const a = new IdentityLimiter(limits, clock);
    expect(a.tryTake('d', 40)).toBe(0);
    clock.set(5_000);
    expect(a.tryTake('d', 30)).toBe(0);
    const snap = a.exportDaily();
    const b = new IdentityLimiter({ ...limits, seeds: a.seeds }, clock);
    expect(b.tryTake('d', 20)).toBe(0); // live before the snapshot arrives
    expect(b.importDaily(snap)).toBe(1);
    expect(b.dailyUsage('d')).toBeCloseTo(0.9);
    expect(b.take('d', 11)).toEqual({ kind: 'quota', untilMs: 11_000 });
    expect(b.take('d', 10)).toEqual({ kind: 'allow' });
    // at 11 s the first bucket (40) has left the window
    clock.set(11_000);
    const c = IdentityLimiter.fromSnapshot(limits, clock, snap);
    expect(c.dailyUsage('d')).toBeCloseTo(0.3);
  });

  it('refuses a snapshot written with other seeds, and fromSnapshot starts fresh on garbage', () => {
    const clock = new ManualClock(0);
    const a = new IdentityLimiter(limits, clock);
    a.tryTake('d', 5);
    const b = new IdentityLimiter(limits, clock);
    expect(() => b.importDaily(a.exportDaily())).toThrow(RangeError);
    expect(IdentityLimiter.fromSnapshot(limits, clock, new Uint8Array([9, 9, 9])).size).toBe(0);
  });

  it('maps buckets of another size conservatively (never expiring earlier)', () => {
    const clock = new ManualClock(2_500);
    const a = new IdentityLimiter({ ...limits, bucketMs: 500 }, clock);
    expect(a.tryTake('d', 100)).toBe(0); // bucket [2500, 3000) counts until 13000
    const b = IdentityLimiter.fromSnapshot(limits, clock, a.exportDaily());
    expect(b.take('d')).toEqual({ kind: 'quota', untilMs: 13_000 });
  });
});
