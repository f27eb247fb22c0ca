/**
 * Per-identity rate and rolling-quota limiter for Amplitude's per-device / per-user limits
 * (30 events in any 1 s window, 500,000 events per rolling 24 h).
 *
 * Memory model. A limiter object per identity costs kilobytes; a million active devices would
 * not fit. Instead every identity is a fixed-size record in one ArrayBuffer (72 bytes with the
 * default 24 h / 1 h window) plus an 8-byte entry in an open-addressing index, keyed by a seeded
 * 64-bit hash of the identity: about 92 bytes per identity at a million. The identity string is
 * never retained, so the caller's (usually transient) id strings can be collected.
 *
 * Hash collisions: two identities whose 64-bit hashes collide (about 3e-8 for a million live
 * identities) share one record. That only ever throttles them harder, never lets either exceed
 * a limit, so the trade is safe. The seed is random per instance so crafted ids cannot target a
 * victim's record or build long probe chains.
 *
 * Rate rule (strict "at most N in any 1 s window"). A plain GCRA with tolerance (burst-1)*T lets
 * burst+1 events into some 1 s window, so it is not used as is. Each admitted event instead gets
 * a virtual slot of length T = 1000/N ms on a timeline ending at TAT, slots disjoint, each slot
 * starting no earlier than 1 ms minus one tick before its event. Clock times are whole
 * milliseconds, so every event inside the window (t-1000, t] then has its slot inside
 * (t-1000, TAT]: the window holds fewer than (TAT - (t-1000)) / T events, and admitting n more is
 * safe when TAT + (n-1)T <= t. Alone that forbids bursts from single calls, so a second bound is
 * kept: L, the number of events admitted since the window was last provably empty; admitting n is
 * also safe when L + n <= N. Together: a full burst of N after idle, exactly N per second
 * sustained, and never N+1 in any window (brute-forced in the unit tests).
 *
 * Daily rule: ceil(window/bucket)+1 ring buckets (25 for 24 h / 1 h) of 16-bit counts and their
 * cached sum. A bucket stays counted until the whole bucket is older than the window, so an event
 * counts for between window and window+bucket and the rolling quota holds however hours align.
 */
import { systemClock, type Clock } from '../clock.js';

export interface IdentityLimits {
  /** Most events admitted for one identity in any 1 s window (any alignment). Integer, 1..65535. */
  eventsPerSecond: number;
  /**
   * Most events admitted back to back before spacing of 1000/eventsPerSecond ms sets in.
   * Default eventsPerSecond; the 1 s cap above holds for every value.
   */
  burst?: number;
  /** Most events admitted for one identity in any rolling `windowMs`. */
  dailyQuota: number;
  /** Default 24 h. */
  windowMs?: number;
  /** Granularity of the rolling window. Default 1 h. */
  bucketMs?: number;
  /**
   * Hash seeds. Default random per limiter, so crafted ids cannot target a victim's record or build
   * long probe chains. A limiter restored from a snapshot takes the snapshot's seeds (see
   * {@link IdentityLimiter.fromSnapshot}): the snapshot holds hashes, never the id strings.
   */
  seeds?: readonly [number, number];
}

/**
 * Separate namespaces: the same string as a device id and as a user id are two identities, with
 * two budgets (a user id equal to another device's id must not share its budget, and an event whose
 * device_id equals its user_id must not be counted twice against one record).
 */
export const DEVICE_NS = 0;
export const USER_NS = 1;
const SNAPSHOT_VERSION = 1;
const SNAPSHOT_HEADER = 1 + 4 + 4 + 8 + 8 + 8 + 4;

export type LimitDecision =
  | { kind: 'allow' }
  | { kind: 'wait'; untilMs: number }
  | { kind: 'quota'; untilMs: number };

const RATE_WINDOW_MS = 1000;
const HOUR_MS = 3_600_000;
const INITIAL_RECORDS = 1024;
const INITIAL_INDEX = 2048;
/** A bucket holding this value keeps its real count in `wideBuckets` (rare: >65,534 events/bucket). */
const WIDE = 0xffff;
const TWO_POW_20 = 1_048_576;
const TWO_POW_21 = 2_097_152;
/** tryTakeMany chunk: big enough to overlap many misses, small enough to stay in L1/L2. */
const BATCH = 256;

// Record layout, in units of each typed-array view from the record start:
const I32_HEAD = 2; // newest ring bucket (next free record while free)
const U32_SUM = 3; // sum of all ring buckets
const I32_HASH_HI = 4; // upper half of the identity hash; the index holds the lower half
const U16_RUN = 10; // L: events since the rate window was last empty (0 = not tracked)
const U16_BUCKETS = 11;
const HEADER_BYTES = 22;

const ALLOW: LimitDecision = Object.freeze({ kind: 'allow' });

/** Murmur3 finalizer: the per-character mixing below is cheap, this gives the avalanche. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function randomSeed(): number {
  const buf = new Int32Array(1);
  globalThis.crypto.getRandomValues(buf);
  return buf[0] ?? 0x2545f491;
}

/**
 * Parked (evicted) identity: its non-expired daily buckets as [bucket, count, ...]. A single
 * bucket, by far the common case for an idle identity, is packed into one number instead.
 */
type Parked = number | number[];

export class IdentityLimiter {
  /** Set by every denied tryTake/take: true when the denial was the daily quota. */
  lastDecisionWasQuota = false;

  private readonly clock: Clock;
  private readonly epoch: number;
  private readonly n: number;
  private readonly quota: number;
  private readonly maxCount: number;
  private readonly windowMs: number;
  private readonly bucketMs: number;
  private readonly ring: number;
  // Rate arithmetic is done in ticks of 1/N ms so that T is the integer RATE_WINDOW_MS and all
  // comparisons are exact for millisecond clocks.
  private readonly tT: number;
  private readonly tW: number;
  private readonly tBurst: number;
  /** A slot may start this many ticks before its event (one millisecond minus one tick). */
  private readonly tEarly: number;

  private readonly s64: number;
  private readonly s32: number;
  private readonly s16: number;
  private buf: ArrayBuffer;
  /** TAT in ticks at the record start; NaN marks a free record. */
  private f64: Float64Array;
  private i32: Int32Array;
  private u32: Uint32Array;
  private u16: Uint16Array;
  private capacityRecords: number;
  private hwm = 0;
  private freeHead = -1;
  private live = 0;

  // Index: open addressing, linear probing, entries [hash lower half, record + 1] (0 = empty).
  private idx: Int32Array;
  private mask: number;
  private readonly seedA: number;
  private readonly seedB: number;
  private h0 = 0;
  private h1 = 0;
  private probe = 0;

  private curBucket = 0;
  private curStart = Infinity;
  private readonly batchLo = new Int32Array(BATCH);
  private readonly batchHi = new Int32Array(BATCH);
  private readonly batchSlot = new Int32Array(BATCH);
  /** written with the prefetch loads in tryTakeMany so the engine cannot drop them as dead code */
  private sink = 0;
  private readonly wideBuckets = new Map<number, number>();
  private readonly parked = new Map<number, Parked>();

  constructor(limits: IdentityLimits, clock: Clock = systemClock) {
    const n = limits.eventsPerSecond;
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      throw new RangeError(`eventsPerSecond must be an integer in 1..65535, got ${n}`);
    }
    const burst = limits.burst ?? n;
    if (!Number.isInteger(burst) || burst < 1 || burst > n) {
      throw new RangeError(`burst must be an integer in 1..eventsPerSecond, got ${burst}`);
    }
    const quota = limits.dailyQuota;
    // Half the u32 range, so the cached sum survives merging two parked records that collided.
    if (!Number.isInteger(quota) || quota < 1 || quota > 0x7fffffff) {
      throw new RangeError(`dailyQuota must be an integer in 1..2^31-1, got ${quota}`);
    }
    const windowMs = limits.windowMs ?? 24 * HOUR_MS;
    const bucketMs = limits.bucketMs ?? HOUR_MS;
    if (!(windowMs > 0) || !(bucketMs > 0) || bucketMs > windowMs) {
      throw new RangeError(`need 0 < bucketMs <= windowMs, got ${bucketMs} / ${windowMs}`);
    }
    const ring = Math.ceil(windowMs / bucketMs) + 1;
    if (ring > 4096) throw new RangeError(`windowMs / bucketMs too large (${ring - 1} buckets)`);

    this.clock = clock;
    // Buckets aligned to multiples of bucketMs since the Unix epoch, so every limiter (another
    // instance, or this one after a restart) cuts the rolling window at the same instants and a
    // restored count expires exactly when it would have without the restart.
    this.epoch = Math.floor(Math.floor(clock.now()) / bucketMs) * bucketMs;
    this.n = n;
    this.quota = quota;
    this.maxCount = Math.min(burst, quota);
    this.windowMs = windowMs;
    this.bucketMs = bucketMs;
    this.ring = ring;
    this.tT = RATE_WINDOW_MS;
    this.tW = RATE_WINDOW_MS * n;
    this.tBurst = burst * RATE_WINDOW_MS;
    this.tEarly = n - 1;

    const stride = Math.ceil((HEADER_BYTES + 2 * ring) / 8) * 8;
    this.s64 = stride / 8;
    this.s32 = stride / 4;
    this.s16 = stride / 2;
    this.capacityRecords = INITIAL_RECORDS;
    this.buf = new ArrayBuffer(stride * INITIAL_RECORDS);
    this.f64 = new Float64Array(this.buf);
    this.i32 = new Int32Array(this.buf);
    this.u32 = new Uint32Array(this.buf);
    this.u16 = new Uint16Array(this.buf);
    this.idx = new Int32Array(2 * INITIAL_INDEX);
    this.mask = INITIAL_INDEX - 1;
    this.seedA = limits.seeds ? limits.seeds[0] | 0 : randomSeed();
    this.seedB = limits.seeds ? limits.seeds[1] | 0 : randomSeed();
  }

  /** The hash seeds; a snapshot carries them, since it holds hashes and not id strings. */
  get seeds(): [number, number] {
    return [this.seedA, this.seedB];
  }

  get size(): number {
    return this.live;
  }

  /** Records allocated (live + free); exposed so slot reuse is observable. */
  get capacity(): number {
    return this.capacityRecords;
  }

  take(identity: string, count = 1, ns = DEVICE_NS): LimitDecision {
    const r = this.tryTake(identity, count, ns);
    if (r === 0) return ALLOW;
    return this.lastDecisionWasQuota ? { kind: 'quota', untilMs: r } : { kind: 'wait', untilMs: r };
  }

  /** 0 when admitted (and counted), else the time it would be admitted; `ns`: DEVICE_NS or USER_NS. */
  tryTake(identity: string, count = 1, ns = DEVICE_NS): number {
    this.checkCount(count);
    // Whole milliseconds are what makes the 1 ms early-slot allowance sound.
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    const c = this.bucketAt(tRel);
    this.hashKey(identity, ns);
    let slot = this.lookup();
    if (slot < 0) slot = this.insert(c, tRel);
    return this.decide(slot, count, tRel, c);
  }

  /**
   * Decides identities[i] (counts[i] events, default 1) in order at one clock reading, exactly as
   * consecutive tryTake calls at that instant would. out[i] is 0 when allowed, else untilMs;
   * quotaOut[i] is 1 when that denial was the daily quota. Returns the number allowed.
   * Works in stages over chunks (string headers, hashes, index, records) so the cache misses of
   * different identities overlap instead of queueing behind each other: on a working set far
   * larger than the CPU caches this is about twice tryTake's throughput.
   */
  tryTakeMany(
    identities: ArrayLike<string>,
    out: Float64Array,
    quotaOut?: Uint8Array,
    counts?: ArrayLike<number>,
    namespaces?: ArrayLike<number>,
  ): number {
    const total = identities.length;
    if (out.length < total || (quotaOut !== undefined && quotaOut.length < total)) {
      throw new RangeError('output arrays shorter than identities');
    }
    if (counts !== undefined) {
      if (counts.length < total) throw new RangeError('counts shorter than identities');
      // Up front, so a bad count cannot leave the batch half applied.
      for (let i = 0; i < total; i++) this.checkCount(counts[i] ?? 0);
    }
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    const c = this.bucketAt(tRel);
    const bucketPos = ((c % this.ring) + this.ring) % this.ring;
    const los = this.batchLo;
    const his = this.batchHi;
    const slots = this.batchSlot;
    let allowed = 0;
    for (let base = 0; base < total; base += BATCH) {
      const n = Math.min(BATCH, total - base);
      let touch = 0;
      for (let j = 0; j < n; j++) touch += identities[base + j]?.length ?? 0;
      for (let j = 0; j < n; j++) {
        this.hashKey(identities[base + j] ?? '', namespaces === undefined ? DEVICE_NS : (namespaces[base + j] ?? DEVICE_NS));
        los[j] = this.h0;
        his[j] = this.h1;
      }
      const idx = this.idx;
      const mask = this.mask;
      for (let j = 0; j < n; j++) touch += idx[2 * ((los[j] ?? 0) & mask)] ?? 0;
      // Candidates by the index half of the hash only, so the record loads below are independent.
      for (let j = 0; j < n; j++) {
        const lo = los[j] ?? 0;
        let p = lo & mask;
        let cand = -1;
        for (;;) {
          const rec = idx[2 * p + 1] ?? 0;
          if (rec === 0) break;
          if (idx[2 * p] === lo) {
            cand = rec - 1;
            break;
          }
          p = (p + 1) & mask;
        }
        slots[j] = cand;
      }
      const f64 = this.f64;
      const u16 = this.u16;
      for (let j = 0; j < n; j++) {
        const cand = slots[j] ?? -1;
        if (cand >= 0) touch += (f64[cand * this.s64] ?? 0) + (u16[cand * this.s16 + U16_BUCKETS + bucketPos] ?? 0);
      }
      // Stored so the touching loads above are not optimised away.
      this.sink = touch;
      for (let j = 0; j < n; j++) {
        const cand = slots[j] ?? -1;
        const hi = his[j] ?? 0;
        if (cand < 0 || this.i32[cand * this.s32 + I32_HASH_HI] !== hi) {
          // Lower-half clash, or first sight (possibly inserted by an earlier element of this batch).
          this.h0 = los[j] ?? 0;
          this.h1 = hi;
          let slot = this.lookup();
          if (slot < 0) slot = this.insert(c, tRel);
          slots[j] = slot;
        }
      }
      for (let j = 0; j < n; j++) {
        const i = base + j;
        const r = this.decide(slots[j] ?? 0, counts === undefined ? 1 : (counts[i] ?? 1), tRel, c);
        out[i] = r;
        if (r === 0) allowed++;
        if (quotaOut !== undefined) quotaOut[i] = r !== 0 && this.lastDecisionWasQuota ? 1 : 0;
      }
    }
    return allowed;
  }

  dailyUsage(identity: string, ns = DEVICE_NS): number {
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    this.hashKey(identity, ns);
    const slot = this.lookup();
    if (slot >= 0) return this.liveSum(slot, tRel) / this.quota;
    const p = this.parked.get(this.parkKey());
    return p === undefined ? 0 : this.parkedSum(p, tRel) / this.quota;
  }

  countAbove(fraction: number): number {
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    const limit = fraction * this.quota;
    let n = 0;
    for (let slot = 0; slot < this.hwm; slot++) {
      if (Number.isNaN(this.f64[slot * this.s64])) continue;
      if (this.liveSum(slot, tRel) >= limit) n++;
    }
    for (const p of this.parked.values()) if (this.parkedSum(p, tRel) >= limit) n++;
    return n;
  }

  evictIdle(idleMs: number): number {
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    // TAT is at or after the last admitted event, so TAT + window + idle <= now means both idle
    // for idleMs and rate-settled (the next admission starts a fresh run anyway).
    const threshold = tRel * this.n - this.tW - Math.max(0, idleMs) * this.n;
    let evicted = 0;
    // Backward-shift deletion only moves entries into the hole at p or later, or (on wrap-around)
    // onto positions already visited; so re-examining p after a delete visits everything.
    for (let p = 0; p <= this.mask; ) {
      const rec = this.idx[2 * p + 1] ?? 0;
      if (rec !== 0) {
        const slot = rec - 1;
        if ((this.f64[slot * this.s64] ?? 0) <= threshold) {
          this.h0 = this.idx[2 * p] ?? 0;
          this.h1 = this.i32[slot * this.s32 + I32_HASH_HI] ?? 0;
          this.park(slot, tRel);
          this.freeRecord(slot);
          this.deleteAt(p);
          evicted++;
          continue;
        }
      }
      p++;
    }
    for (const [key, p] of this.parked) {
      const kept = this.parkedPrune(p, tRel);
      if (kept === undefined) this.parked.delete(key);
      else if (kept !== p) this.parked.set(key, kept);
    }
    return evicted;
  }

  /**
   * Typed arrays exactly; Map-held side structures estimated from V8's layout (about 28 bytes per
   * Map entry plus a 16-byte boxed number per key and per value).
   */
  approximateBytes(): number {
    let parkedArrays = 0;
    for (const p of this.parked.values()) if (typeof p !== 'number') parkedArrays += 48 + 8 * p.length;
    return (
      this.buf.byteLength +
      this.idx.byteLength +
      this.wideBuckets.size * 44 +
      this.parked.size * 60 +
      parkedArrays
    );
  }

  // ---- snapshots (persistence of the daily counts) ------------------------------------------

  /**
   * The daily counts of every identity (live and parked) as a compact byte string: a header with
   * the seeds, then per identity its 53-bit hash key and its counted buckets as varints of
   * (bucket - base, count), about 13 bytes for an identity active in one bucket. Rate state (the
   * last second) is not kept: it is stale by the time a snapshot is read. Buckets are absolute
   * (multiples of bucketMs since the Unix epoch), so any limiter can read it.
   */
  exportDaily(): Uint8Array {
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    const c = this.bucketAt(tRel);
    const k0 = this.epoch / this.bucketMs;
    const base = k0 + c - this.ring;
    const shift = k0 - base;
    // the oldest bucket still counted at tRel (see counted())
    const firstCounted = Math.floor((tRel - this.windowMs) / this.bucketMs);
    const ring = this.ring;
    // worst case per entry: 8 hash bytes, a count varint, and per bucket two varints
    const maxEntry = 8 + 3 + ring * (2 + 5);
    const w = new ByteWriter(SNAPSHOT_HEADER + 14 * (this.live + this.parked.size) + maxEntry);
    w.u8(SNAPSHOT_VERSION);
    w.i32(this.seedA);
    w.i32(this.seedB);
    w.f64(this.bucketMs);
    w.f64(this.windowMs);
    w.f64(base);
    const countAt = w.reserveU32();
    let entries = 0;
    const idx = this.idx;
    const i32 = this.i32;
    const u16 = this.u16;
    const s32 = this.s32;
    const s16 = this.s16;
    const pairs: number[] = [];
    for (let p = 0; p <= this.mask; p++) {
      const rec = idx[2 * p + 1] ?? 0;
      if (rec === 0) continue;
      const slot = rec - 1;
      const head = i32[slot * s32 + I32_HEAD] ?? 0;
      const from = Math.max(head - ring + 1, firstCounted);
      const bu = slot * s16 + U16_BUCKETS;
      let n = 0;
      for (let b = from; b <= head; b++) {
        const v = u16[bu + (((b % ring) + ring) % ring)] ?? 0;
        if (v !== 0) n++;
      }
      if (n === 0) continue;
      w.room(maxEntry);
      const lo = idx[2 * p] ?? 0;
      const hi = i32[slot * s32 + I32_HASH_HI] ?? 0;
      // the parked key (see parkKey()), written as two u32 halves
      const key = (hi >>> 0) * TWO_POW_21 + ((lo >>> 11) & (TWO_POW_21 - 1));
      w.u32Fast(key % 0x100000000);
      w.u32Fast(Math.floor(key / 0x100000000));
      w.varintFast(n);
      for (let b = from; b <= head; b++) {
        const pos = ((b % ring) + ring) % ring;
        const v = u16[bu + pos] ?? 0;
        if (v === 0) continue;
        w.varintFast(b + shift);
        w.varintFast(v === WIDE ? this.wideGet(slot, pos) : v);
      }
      entries++;
    }
    for (const [key, p] of this.parked) {
      const all = this.parkedPairs(p);
      pairs.length = 0;
      for (let i = 0; i < all.length; i += 2) if (this.counted(all[i] ?? 0, tRel)) pairs.push(all[i] ?? 0, all[i + 1] ?? 0);
      if (pairs.length === 0) continue;
      w.room(8 + 3 + pairs.length * 5);
      this.writeEntry(w, key, pairs, shift);
      entries++;
    }
    w.setU32(countAt, entries);
    return w.done();
  }

  private writeEntry(w: ByteWriter, key: number, pairs: number[], shift: number): void {
    w.u32Fast(key % 0x100000000);
    w.u32Fast(Math.floor(key / 0x100000000));
    w.varintFast(pairs.length / 2);
    for (let i = 0; i < pairs.length; i += 2) {
      w.varintFast((pairs[i] ?? 0) + shift);
      w.varintFast(pairs[i + 1] ?? 0);
    }
  }

  /** The seeds a snapshot was written with, or undefined when it is not a snapshot this code reads. */
  static snapshotSeeds(snapshot: Uint8Array): [number, number] | undefined {
    if (snapshot.byteLength < SNAPSHOT_HEADER || snapshot[0] !== SNAPSHOT_VERSION) return undefined;
    const v = new DataView(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength);
    return [v.getInt32(1, true), v.getInt32(5, true)];
  }

  /** A limiter holding a snapshot's counts (with its seeds); a fresh one when it cannot be read. */
  static fromSnapshot(limits: IdentityLimits, clock: Clock, snapshot: Uint8Array | undefined): IdentityLimiter {
    const seeds = snapshot ? IdentityLimiter.snapshotSeeds(snapshot) : undefined;
    const lim = new IdentityLimiter(seeds ? { ...limits, seeds } : limits, clock);
    if (snapshot && seeds) lim.importDaily(snapshot);
    return lim;
  }

  /**
   * Adds a snapshot's counts to this limiter's (an identity counted here and in the snapshot ends
   * with the sum: conservative). The snapshot must have been written with this limiter's seeds.
   * Buckets already expired are skipped; a snapshot with another bucket size has each old bucket
   * counted in the new bucket holding its last millisecond, so nothing expires earlier than it
   * would have. Returns the identities read.
   */
  importDaily(snapshot: Uint8Array): number {
    return this.readDaily(snapshot, (key, pairs, slot) => {
      if (slot !== undefined) {
        this.addPairsToRecord(slot, pairs);
        return;
      }
      const prev = this.parked.get(key);
      if (prev !== undefined) pairs.push(...this.parkedPairs(prev));
      this.parked.set(key, this.encodeParked(pairs.slice()));
    });
  }

  /**
   * Takes a snapshot's counts back out of this limiter's, never below zero in any bucket: for a
   * limiter built from `snapshot` (same seeds), what is left is what it counted itself since. (A
   * partition's limiter loaded before its owner's last save: its own counts are added to that save.)
   * Returns the identities read.
   */
  subtractDaily(snapshot: Uint8Array): number {
    return this.readDaily(snapshot, (key, pairs, slot) => {
      if (slot !== undefined) {
        this.subtractPairsFromRecord(slot, pairs);
        return;
      }
      const prev = this.parked.get(key);
      if (prev === undefined) return;
      const left = this.parkedPairs(prev).slice();
      for (let i = 0; i < pairs.length; i += 2) {
        let v = pairs[i + 1] ?? 0;
        for (let j = 0; j < left.length && v > 0; j += 2) {
          if (left[j] !== pairs[i]) continue;
          const d = Math.min(v, left[j + 1] ?? 0);
          left[j + 1] = (left[j + 1] ?? 0) - d;
          v -= d;
        }
      }
      const kept: number[] = [];
      for (let j = 0; j < left.length; j += 2) if ((left[j + 1] ?? 0) > 0) kept.push(left[j] ?? 0, left[j + 1] ?? 0);
      if (kept.length === 0) this.parked.delete(key);
      else this.parked.set(key, this.encodeParked(kept));
    });
  }

  /**
   * Reads a snapshot of this limiter's seeds: per identity, its 53-bit key, its still-counted
   * buckets as [bucket, count, ...] relative to this limiter's epoch, and its live record if it has
   * one. Returns the identities read.
   */
  private readDaily(snapshot: Uint8Array, visit: (key: number, pairs: number[], slot: number | undefined) => void): number {
    const seeds = IdentityLimiter.snapshotSeeds(snapshot);
    if (!seeds) throw new RangeError('not a limiter snapshot (or a newer format)');
    if (seeds[0] !== this.seedA || seeds[1] !== this.seedB) throw new RangeError('snapshot written with other hash seeds: use IdentityLimiter.fromSnapshot');
    const r = new ByteReader(snapshot);
    r.pos = 1 + 4 + 4;
    const oldBucketMs = r.f64();
    r.f64(); // windowMs: counts are judged by this limiter's window
    const base = r.f64();
    const entries = r.u32();
    const tRel = Math.floor(this.clock.now()) - this.epoch;
    const c = this.bucketAt(tRel);
    const k0 = this.epoch / this.bucketMs;
    const same = oldBucketMs === this.bucketMs;
    // live records by their parked key, only when some are live (a limiter filled while loading)
    let liveByKey: Map<number, number> | undefined;
    if (this.live > 0) {
      liveByKey = new Map();
      for (let p = 0; p <= this.mask; p++) {
        const rec = this.idx[2 * p + 1] ?? 0;
        if (rec === 0) continue;
        this.h0 = this.idx[2 * p] ?? 0;
        this.h1 = this.i32[(rec - 1) * this.s32 + I32_HASH_HI] ?? 0;
        liveByKey.set(this.parkKey(), rec - 1);
      }
    }
    const pairs: number[] = [];
    for (let e = 0; e < entries; e++) {
      const key = r.u32() + r.u32() * 0x100000000;
      const n = r.varint();
      pairs.length = 0;
      for (let i = 0; i < n; i++) {
        const kOld = base + r.varint();
        const v = r.varint();
        const kNew = same ? kOld : Math.floor(((kOld + 1) * oldBucketMs - 1) / this.bucketMs);
        // A writer whose clock ran ahead: its future buckets count as now.
        const b = Math.min(kNew - k0, c);
        if (v > 0 && this.counted(b, tRel)) pairs.push(b, v);
      }
      if (pairs.length > 0) visit(key, pairs, liveByKey?.get(key));
    }
    return entries;
  }

  private addPairsToRecord(slot: number, pairs: number[]): void {
    const r32 = slot * this.s32;
    let head = this.i32[r32 + I32_HEAD] ?? 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const b = pairs[i] ?? 0;
      if (b > head) {
        this.rotate(slot, head, b);
        this.i32[r32 + I32_HEAD] = b;
        head = b;
      }
    }
    for (let i = 0; i < pairs.length; i += 2) {
      const b = pairs[i] ?? 0;
      const v = pairs[i + 1] ?? 0;
      if (b <= head - this.ring) continue;
      this.addToBucket(slot, ((b % this.ring) + this.ring) % this.ring, v);
      this.u32[r32 + U32_SUM] = (this.u32[r32 + U32_SUM] ?? 0) + v;
    }
  }

  private subtractPairsFromRecord(slot: number, pairs: number[]): void {
    const r32 = slot * this.s32;
    const head = this.i32[r32 + I32_HEAD] ?? 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const b = pairs[i] ?? 0;
      if (b > head || b <= head - this.ring) continue;
      const pos = ((b % this.ring) + this.ring) % this.ring;
      const had = this.bucketCount(slot, b);
      const left = Math.max(0, had - (pairs[i + 1] ?? 0));
      if (left === had) continue;
      const at = slot * this.s16 + U16_BUCKETS + pos;
      if (this.u16[at] === WIDE) this.wideBuckets.delete(slot * this.ring + pos);
      this.u16[at] = 0;
      if (left > 0) this.addToBucket(slot, pos, left);
      this.u32[r32 + U32_SUM] = (this.u32[r32 + U32_SUM] ?? 0) - (had - left);
    }
  }

  /** Identities with live records or parked counts: what a snapshot would hold at most. */
  get trackedWithCounts(): number {
    return this.live + this.parked.size;
  }

  // ---- decision ----------------------------------------------------------------------------

  private checkCount(count: number): void {
    if (!(count >= 1 && count <= this.maxCount) || count % 1 !== 0) {
      throw new RangeError(`count must be an integer in 1..${this.maxCount}, got ${count}`);
    }
  }

  private bucketAt(tRel: number): number {
    // The division is measurable at millions of calls per second; the bucket rarely changes.
    if (tRel < this.curStart || tRel >= this.curStart + this.bucketMs) {
      this.curBucket = Math.floor(tRel / this.bucketMs);
      this.curStart = this.curBucket * this.bucketMs;
    }
    return this.curBucket;
  }

  /** Applies the daily and rate rules to one record at tRel; 0 = admitted and consumed. */
  private decide(slot: number, count: number, tRel: number, c: number): number {
    // Daily quota first: parking outranks a short wait.
    const r32 = slot * this.s32;
    let head = this.i32[r32 + I32_HEAD] ?? 0;
    if (c > head) {
      this.rotate(slot, head, c);
      this.i32[r32 + I32_HEAD] = c;
      head = c;
    }
    const stored = this.u32[r32 + U32_SUM] ?? 0;
    let sum = stored;
    // Only when window is not a multiple of bucket can the oldest bucket expire mid-bucket.
    const oldest = head - this.ring + 1;
    if ((oldest + 1) * this.bucketMs + this.windowMs <= tRel) sum -= this.bucketCount(slot, oldest);
    if (sum + count > this.quota) {
      this.lastDecisionWasQuota = true;
      return this.quotaUntil(slot, head, sum + count - this.quota, tRel);
    }

    const at = slot * this.s64;
    const nowT = tRel * this.n;
    const tat = this.f64[at] ?? 0;
    const lAt = slot * this.s16 + U16_RUN;
    const run = this.u16[lAt] ?? 0;
    const earliest = nowT - this.tEarly;
    const start = tat > earliest ? tat : earliest;
    const newTat = start + count * this.tT;
    let newRun: number;
    if (tat <= nowT - this.tW) {
      // Window provably empty (the last event is at most tEarly - T < 1 ms after its slot ended,
      // and whole-ms times round that away): start counting a fresh run.
      newRun = count;
    } else {
      const runOk = run !== 0 && run + count <= this.n;
      const spacedOk = tat + (count - 1) * this.tT <= nowT;
      if (!spacedOk && !(runOk && newTat - nowT <= this.tBurst)) {
        this.lastDecisionWasQuota = false;
        const untilT = runOk ? tat + count * this.tT - this.tBurst : tat + (count - 1) * this.tT;
        let until = Math.ceil(untilT / this.n);
        if (until * this.n < untilT) until++;
        return this.epoch + until;
      }
      newRun = run === 0 ? 0 : run + count;
    }
    this.f64[at] = newTat;
    // At N the run bound can no longer admit anything; 0 hands over to the spacing bound.
    this.u16[lAt] = newRun >= this.n ? 0 : newRun;
    this.u32[r32 + U32_SUM] = stored + count;
    this.addToBucket(slot, ((head % this.ring) + this.ring) % this.ring, count);
    return 0;
  }

  // ---- index -------------------------------------------------------------------------------

  /** Seeded 64-bit hash of the identity into h0 (index half) and h1 (record half). */
  private hashKey(s: string, ns: number): void {
    // The namespace perturbs both seeds, so equal strings in two namespaces hash independently.
    let a = this.seedA ^ Math.imul(ns, 0x632be5ab);
    let b = this.seedB ^ Math.imul(ns, 0x1b873593);
    const len = s.length;
    let i = 0;
    // Two independent lanes (xor-multiply-shift and add-multiply-rotate), two UTF-16 units a step.
    for (; i + 1 < len; i += 2) {
      const k = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16);
      a = Math.imul(a ^ k, 0x9e3779b1);
      a ^= a >>> 15;
      b = Math.imul(b + k, 0x85ebca77);
      b = (b << 13) | (b >>> 19);
    }
    if (i < len) {
      const k = s.charCodeAt(i);
      a = Math.imul(a ^ k, 0x9e3779b1);
      a ^= a >>> 15;
      b = Math.imul(b + k, 0x85ebca77);
      b = (b << 13) | (b >>> 19);
    }
    this.h0 = fmix32(a ^ len);
    this.h1 = fmix32(b ^ Math.imul(len, 0x27d4eb2f));
  }

  /** Record for the hash in h0/h1, or -1 with `probe` at the empty index position. */
  private lookup(): number {
    const lo = this.h0;
    const hi = this.h1;
    const idx = this.idx;
    const mask = this.mask;
    let p = lo & mask;
    for (;;) {
      const rec = idx[2 * p + 1] ?? 0;
      if (rec === 0) {
        this.probe = p;
        return -1;
      }
      if (idx[2 * p] === lo && this.i32[(rec - 1) * this.s32 + I32_HASH_HI] === hi) return rec - 1;
      p = (p + 1) & mask;
    }
  }

  /** Adds the identity hashed into h0/h1 by the last lookup(); restores parked daily counts. */
  private insert(c: number, tRel: number): number {
    const slot = this.allocRecord();
    // Rate-settled, and idle from now on: a record that is only ever denied (a parked identity
    // coming back over quota) is not evicted again by the very next sweep.
    this.f64[slot * this.s64] = tRel * this.n - this.tW;
    const r32 = slot * this.s32;
    this.i32[r32 + I32_HEAD] = c;
    this.u32[r32 + U32_SUM] = 0;
    this.i32[r32 + I32_HASH_HI] = this.h1;
    const r16 = slot * this.s16;
    this.u16.fill(0, r16 + U16_RUN, r16 + U16_BUCKETS + this.ring);
    if (this.parked.size > 0) {
      const key = this.parkKey();
      const p = this.parked.get(key);
      if (p !== undefined) {
        this.parked.delete(key);
        this.unpark(slot, p, c);
      }
    }
    const o = 2 * this.probe;
    this.idx[o] = this.h0;
    this.idx[o + 1] = slot + 1;
    this.live++;
    if (this.live * 4 > 3 * (this.mask + 1)) this.growIndex();
    return slot;
  }

  private growIndex(): void {
    const old = this.idx;
    const cap = 2 * (this.mask + 1);
    const idx = new Int32Array(2 * cap);
    const mask = cap - 1;
    for (let o = 0; o < old.length; o += 2) {
      const rec = old[o + 1] ?? 0;
      if (rec === 0) continue;
      const lo = old[o] ?? 0;
      let p = lo & mask;
      while ((idx[2 * p + 1] ?? 0) !== 0) p = (p + 1) & mask;
      idx[2 * p] = lo;
      idx[2 * p + 1] = rec;
    }
    this.idx = idx;
    this.mask = mask;
  }

  /** Linear-probing deletion without tombstones: pull later entries of the cluster back. */
  private deleteAt(pos: number): void {
    const idx = this.idx;
    const mask = this.mask;
    let hole = pos;
    let j = pos;
    for (;;) {
      j = (j + 1) & mask;
      const rec = idx[2 * j + 1] ?? 0;
      if (rec === 0) break;
      const home = (idx[2 * j] ?? 0) & mask;
      // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (between) continue;
      idx[2 * hole] = idx[2 * j] ?? 0;
      idx[2 * hole + 1] = rec;
      hole = j;
    }
    idx[2 * hole + 1] = 0;
  }

  // ---- records -----------------------------------------------------------------------------

  private allocRecord(): number {
    if (this.freeHead >= 0) {
      const slot = this.freeHead;
      this.freeHead = this.i32[slot * this.s32 + I32_HEAD] ?? -1;
      return slot;
    }
    if (this.hwm === this.capacityRecords) this.growRecords();
    return this.hwm++;
  }

  private growRecords(): void {
    const buf = new ArrayBuffer(this.buf.byteLength * 2);
    new Uint8Array(buf).set(new Uint8Array(this.buf));
    this.buf = buf;
    this.f64 = new Float64Array(buf);
    this.i32 = new Int32Array(buf);
    this.u32 = new Uint32Array(buf);
    this.u16 = new Uint16Array(buf);
    this.capacityRecords *= 2;
  }

  private freeRecord(slot: number): void {
    const bu = slot * this.s16 + U16_BUCKETS;
    for (let j = 0; j < this.ring; j++) {
      if (this.u16[bu + j] === WIDE) this.wideBuckets.delete(slot * this.ring + j);
    }
    this.f64[slot * this.s64] = NaN;
    this.i32[slot * this.s32 + I32_HEAD] = this.freeHead;
    this.freeHead = slot;
    this.live--;
  }

  // ---- daily buckets -----------------------------------------------------------------------

  /** Clears the buckets that head..c reuse, taking their counts out of the cached sum. */
  private rotate(slot: number, head: number, c: number): void {
    const ring = this.ring;
    const bu = slot * this.s16 + U16_BUCKETS;
    let removed = 0;
    const from = c - head >= ring ? c - ring + 1 : head + 1;
    for (let b = from; b <= c; b++) {
      const pos = ((b % ring) + ring) % ring;
      const v = this.u16[bu + pos] ?? 0;
      if (v === 0) continue;
      if (v === WIDE) {
        removed += this.wideGet(slot, pos);
        this.wideBuckets.delete(slot * ring + pos);
      } else {
        removed += v;
      }
      this.u16[bu + pos] = 0;
    }
    const at = slot * this.s32 + U32_SUM;
    this.u32[at] = (this.u32[at] ?? 0) - removed;
  }

  private bucketCount(slot: number, b: number): number {
    const pos = ((b % this.ring) + this.ring) % this.ring;
    const v = this.u16[slot * this.s16 + U16_BUCKETS + pos] ?? 0;
    return v === WIDE ? this.wideGet(slot, pos) : v;
  }

  private wideGet(slot: number, pos: number): number {
    return this.wideBuckets.get(slot * this.ring + pos) ?? WIDE;
  }

  /** Bucket counts only; the caller keeps the cached sum in step. */
  private addToBucket(slot: number, pos: number, count: number): void {
    const at = slot * this.s16 + U16_BUCKETS + pos;
    const v = this.u16[at] ?? 0;
    if (v !== WIDE && v + count < WIDE) {
      this.u16[at] = v + count;
      return;
    }
    const key = slot * this.ring + pos;
    const prev = v === WIDE ? (this.wideBuckets.get(key) ?? WIDE) : v;
    this.wideBuckets.set(key, prev + count);
    this.u16[at] = WIDE;
  }

  /** Counted in the window at tRel: the whole bucket is not yet older than the window. */
  private counted(b: number, tRel: number): boolean {
    return (b + 1) * this.bucketMs + this.windowMs > tRel;
  }

  private liveSum(slot: number, tRel: number): number {
    const head = this.i32[slot * this.s32 + I32_HEAD] ?? 0;
    let sum = 0;
    for (let b = head - this.ring + 1; b <= head; b++) {
      if (this.counted(b, tRel)) sum += this.bucketCount(slot, b);
    }
    return sum;
  }

  private quotaUntil(slot: number, head: number, excess: number, tRel: number): number {
    for (let b = head - this.ring + 1; b <= head; b++) {
      if (!this.counted(b, tRel)) continue;
      excess -= this.bucketCount(slot, b);
      if (excess <= 0) return this.epoch + (b + 1) * this.bucketMs + this.windowMs;
    }
    // Unreachable while count <= dailyQuota: everything in the ring has expired by then.
    return this.epoch + (head + 1) * this.bucketMs + this.windowMs;
  }

  // ---- parked (evicted) identities ---------------------------------------------------------

  /** 53-bit key from the 64-bit hash; a clash merges two parked identities, which is conservative. */
  private parkKey(): number {
    return (this.h1 >>> 0) * TWO_POW_21 + ((this.h0 >>> 11) & (TWO_POW_21 - 1));
  }

  private park(slot: number, tRel: number): void {
    const head = this.i32[slot * this.s32 + I32_HEAD] ?? 0;
    const pairs: number[] = [];
    for (let b = head - this.ring + 1; b <= head; b++) {
      if (!this.counted(b, tRel)) continue;
      const v = this.bucketCount(slot, b);
      if (v > 0) pairs.push(b, v);
    }
    if (pairs.length === 0) return;
    const key = this.parkKey();
    const prev = this.parked.get(key);
    if (prev !== undefined) pairs.push(...this.parkedPairs(prev));
    this.parked.set(key, this.encodeParked(pairs));
  }

  private encodeParked(pairs: number[]): Parked {
    const b = pairs[0] ?? 0;
    const v = pairs[1] ?? 0;
    if (pairs.length === 2 && b >= 0 && b < 0x100000000 && v < TWO_POW_20) return b * TWO_POW_20 + v;
    return pairs;
  }

  private parkedPairs(p: Parked): number[] {
    if (typeof p !== 'number') return p;
    const b = Math.floor(p / TWO_POW_20);
    return [b, p - b * TWO_POW_20];
  }

  private unpark(slot: number, p: Parked, c: number): void {
    const pairs = this.parkedPairs(p);
    let head = c;
    for (let i = 0; i < pairs.length; i += 2) head = Math.max(head, pairs[i] ?? 0);
    const r32 = slot * this.s32;
    this.i32[r32 + I32_HEAD] = head;
    let sum = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const b = pairs[i] ?? 0;
      const v = pairs[i + 1] ?? 0;
      if (b <= head - this.ring) continue;
      this.addToBucket(slot, ((b % this.ring) + this.ring) % this.ring, v);
      sum += v;
    }
    this.u32[r32 + U32_SUM] = sum;
  }

  private parkedSum(p: Parked, tRel: number): number {
    const pairs = this.parkedPairs(p);
    let sum = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      if (this.counted(pairs[i] ?? 0, tRel)) sum += pairs[i + 1] ?? 0;
    }
    return sum;
  }

  /** The parked record without expired buckets, undefined when nothing is left. */
  private parkedPrune(p: Parked, tRel: number): Parked | undefined {
    const pairs = this.parkedPairs(p);
    const kept: number[] = [];
    for (let i = 0; i < pairs.length; i += 2) {
      const b = pairs[i] ?? 0;
      if (this.counted(b, tRel)) kept.push(b, pairs[i + 1] ?? 0);
    }
    if (kept.length === 0) return undefined;
    return kept.length === pairs.length ? p : this.encodeParked(kept);
  }
}

/** Little-endian writer for snapshots, growing by doubling. */
class ByteWriter {
  private buf: Uint8Array;
  private view: DataView;
  private n = 0;
  constructor(initial: number) {
    this.buf = new Uint8Array(Math.max(64, initial));
    this.view = new DataView(this.buf.buffer);
  }
  /** makes room for k more bytes; the *Fast writers below rely on it having been called */
  room(k: number): void {
    if (this.n + k <= this.buf.byteLength) return;
    let size = this.buf.byteLength * 2;
    while (size < this.n + k) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.room(1);
    this.buf[this.n++] = v;
  }
  i32(v: number): void {
    this.room(4);
    this.view.setInt32(this.n, v, true);
    this.n += 4;
  }
  u32(v: number): void {
    this.room(4);
    this.view.setUint32(this.n, v >>> 0, true);
    this.n += 4;
  }
  f64(v: number): void {
    this.room(8);
    this.view.setFloat64(this.n, v, true);
    this.n += 8;
  }
  reserveU32(): number {
    const at = this.n;
    this.u32(0);
    return at;
  }
  setU32(at: number, v: number): void {
    this.view.setUint32(at, v >>> 0, true);
  }
  u32Fast(v: number): void {
    const b = this.buf;
    let n = this.n;
    b[n++] = v & 0xff;
    b[n++] = (v >>> 8) & 0xff;
    b[n++] = (v >>> 16) & 0xff;
    b[n++] = (v >>> 24) & 0xff;
    this.n = n;
  }
  /** unsigned LEB128 below 2^31 (bucket deltas, counts), room already made */
  varintFast(v: number): void {
    const b = this.buf;
    let n = this.n;
    while (v >= 0x80) {
      b[n++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[n++] = v;
    this.n = n;
  }
  /** unsigned LEB128, for integers up to 2^53 */
  varint(v: number): void {
    this.room(8);
    while (v >= 0x80) {
      this.buf[this.n++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.n++] = v;
  }
  done(): Uint8Array {
    return this.buf.slice(0, this.n);
  }
}

class ByteReader {
  pos = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u32(): number {
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(): number {
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  varint(): number {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (this.pos >= this.buf.byteLength) throw new RangeError('truncated limiter snapshot');
      const b = this.buf[this.pos++] ?? 0;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 0x80;
    }
  }
}
