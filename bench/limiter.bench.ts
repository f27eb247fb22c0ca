/**
 * Per-identity limiter benchmark: decisions/s and bytes per tracked identity for IdentityLimiter,
 * next to bottleneck's Group (one Bottleneck limiter per key) measured in the same run.
 *
 * Both ratios are oriented so that > 1 means IdentityLimiter is better:
 *   decisions/s: ours / bottleneck      bytes per identity: bottleneck / ours
 *
 * With persistence (issue 9): the gateway keeps one limiter per Kafka partition and saves each
 * partition's daily counts (IdentityLimiter.exportDaily, then the LimiterStore's encoding) to the
 * limits topic. The same decisions over the same 1,000,000 ids are measured that way, exporting
 * partitions inside the timed loop at the rate the default AMPLITUDE_ID_SAVE_INTERVAL_MS (30 s)
 * asks for at that decision rate (at least one partition per run), and compared with the single
 * limiter without persistence, in the same run. The cost of one save of every partition is
 * printed too (and what the ratio would be with one such save in every timed run).
 *   decisions/s: persisted / plain      bytes per identity: plain / persisted   (goal >= 0.9 both)
 *
 * Run directly: `node --expose-gc dist/bench/limiter.bench.js` prints one JSON line per result on
 * stdout; the human-readable report goes to stderr so the JSON stays machine-readable.
 */
import Bottleneck from 'bottleneck';
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { systemClock } from '../src/clock.js';
import { IdentityLimiter, type IdentityLimits } from '../src/limits/identity-limiter.js';
import { encodeSnapshot } from '../src/braze-to-amplitude/limiter-store.js';
import { fmt, note, type BenchResult } from './common.js';

const IDENTITIES = 1_000_000;
const DECISIONS = 5_000_000;
// Bottleneck is orders of magnitude slower and heavier; a tenth of the keys keeps the run short
// and both of its figures are per-key rates, so they compare directly.
const BN_KEYS = 100_000;
const BN_DECISIONS = 500_000;
// Concurrent check() calls per await: every Bottleneck datastore call yields through
// setTimeout(0), so awaiting one at a time would measure the timer, not the limiter.
const BN_BATCH = 10_000;
const HOT_SET = 10_000;
/** Events per tryTakeMany call, about one Kafka fetch worth of events. */
const BATCH = 500;
const LIMITS: IdentityLimits = { eventsPerSecond: 30, dailyQuota: 500_000 };
const TARGET_DECISIONS = 5_000_000;
const TARGET_BYTES = 100;
/** Partitions of the Currents topic in the persisted layout (one limiter each). */
const PARTITIONS = 16;
const TARGET_PERSISTED_RATIO = 0.9;
const SAVE_INTERVAL_S = 30;

function findGc(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  // Without --expose-gc the flag can still be turned on at run time; a fresh context then sees gc.
  setFlagsFromString('--expose-gc');
  const fn: unknown = runInNewContext('gc');
  if (typeof fn === 'function') return fn as () => void;
  note('warning: gc not available, memory figures include garbage');
  return () => undefined;
}

function settledBytes(gc: () => void): number {
  // Two passes: the first can leave weak/finalizable objects for the second.
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * UUID device ids as they come out of parsed events: flat strings. randomUUID() alone returns
 * ~500-byte cons-string trees that collapse when first read, corrupting memory deltas and timings;
 * the JSON round trip flattens them. A separate function so the temporaries die with its frame
 * instead of staying in registers of the caller and inflating the "before" heap figure.
 */
function makeIds(n: number): string[] {
  return JSON.parse(JSON.stringify(Array.from({ length: n }, () => randomUUID()))) as string[];
}

/** Random access pattern, precomputed so neither RNG nor string building is timed. */
function randomOrder(length: number, range: number): Int32Array {
  const order = new Int32Array(length);
  for (let i = 0; i < length; i++) order[i] = Math.floor(Math.random() * range);
  return order;
}

function seconds(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e9;
}

function limiterDecisions(lim: IdentityLimiter, ids: string[], order: Int32Array): { rate: number; allowed: number } {
  let allowed = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < order.length; i++) {
    if (lim.tryTake(ids[order[i] ?? 0] ?? '') === 0) allowed++;
  }
  return { rate: order.length / seconds(t0), allowed };
}

/** The gateway's path: decisions in Kafka-batch-sized calls; gathering each batch is timed too. */
function limiterBatchDecisions(lim: IdentityLimiter, ids: string[], order: Int32Array): { rate: number; allowed: number } {
  const batch: string[] = new Array<string>(BATCH).fill('');
  const out = new Float64Array(BATCH);
  let allowed = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < order.length; i += BATCH) {
    const n = Math.min(BATCH, order.length - i);
    batch.length = n;
    for (let j = 0; j < n; j++) batch[j] = ids[order[i + j] ?? 0] ?? '';
    allowed += lim.tryTakeMany(batch, out);
  }
  return { rate: order.length / seconds(t0), allowed };
}

/** The same access pattern on a bare Map<string, number>: the floor set by random memory access. */
function mapLookups(ids: string[], order: Int32Array): number {
  const map = new Map<string, number>();
  for (let i = 0; i < ids.length; i++) map.set(ids[i] ?? '', i);
  let sum = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < order.length; i++) sum += map.get(ids[order[i] ?? 0] ?? '') ?? 0;
  const rate = order.length / seconds(t0);
  // Consumes the sum so the lookups cannot be optimised away.
  if (sum < 0) note('unreachable');
  return rate;
}

async function bottleneckDecisions(group: Bottleneck.Group, ids: string[], order: Int32Array): Promise<number> {
  const t0 = process.hrtime.bigint();
  let allowed = 0;
  for (let i = 0; i < order.length; i += BN_BATCH) {
    const batch: Promise<boolean>[] = [];
    const end = Math.min(order.length, i + BN_BATCH);
    for (let j = i; j < end; j++) batch.push(group.key(ids[order[j] ?? 0] ?? '').check());
    for (const ok of await Promise.all(batch)) if (ok) allowed++;
  }
  const rate = order.length / seconds(t0);
  if (allowed === 0) note('warning: bottleneck allowed nothing');
  return rate;
}

/**
 * Kafka-like access: each batch of BATCH events comes from one partition (a fetch is per
 * partition), ids drawn at random within it. partitionOf[i] is id i's partition.
 */
function partitionedOrder(length: number, partitionOf: Uint8Array, members: Int32Array[]): Int32Array {
  const order = new Int32Array(length);
  for (let i = 0; i < length; i += BATCH) {
    const m = members[Math.floor(Math.random() * members.length)] ?? new Int32Array(1);
    const end = Math.min(length, i + BATCH);
    for (let j = i; j < end; j++) order[j] = m[Math.floor(Math.random() * m.length)] ?? 0;
  }
  if (partitionOf.length === 0) note('unreachable');
  return order;
}

/** Exports every partition as the LimiterStore would write it; returns the bytes. */
function saveAll(parts: IdentityLimiter[]): number {
  let bytes = 0;
  for (const lim of parts) bytes += saveOne(lim);
  return bytes;
}

function saveOne(lim: IdentityLimiter): number {
  return encodeSnapshot({ daily: lim.exportDaily(), marks: [] }).length;
}

/** Saves `saves` partitions (round robin) spread evenly over a run of `length` decisions. */
class SaveSchedule {
  private next = 0;
  private done = 0;
  bytes = 0;
  constructor(
    private readonly parts: IdentityLimiter[],
    private readonly saves: number,
    private readonly length: number,
  ) {}
  /** called with the decision index; saves when the schedule says so */
  at(i: number): void {
    while (this.done < this.saves && i >= ((this.done + 0.5) * this.length) / this.saves) {
      this.bytes += saveOne(this.parts[this.next % this.parts.length] as IdentityLimiter);
      this.next++;
      this.done++;
    }
  }
}

function persistedDecisions(parts: IdentityLimiter[], partitionOf: Uint8Array, ids: string[], order: Int32Array, saves: number): { rate: number; allowed: number; snapshotBytes: number } {
  let allowed = 0;
  const sched = new SaveSchedule(parts, saves, order.length);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < order.length; i++) {
    if ((i & 4095) === 0) sched.at(i);
    const id = order[i] ?? 0;
    if ((parts[partitionOf[id] ?? 0] as IdentityLimiter).tryTake(ids[id] ?? '') === 0) allowed++;
  }
  return { rate: order.length / seconds(t0), allowed, snapshotBytes: sched.bytes };
}

function persistedBatchDecisions(parts: IdentityLimiter[], partitionOf: Uint8Array, ids: string[], order: Int32Array, saves: number): { rate: number; allowed: number; snapshotBytes: number } {
  const batch: string[] = new Array<string>(BATCH).fill('');
  const out = new Float64Array(BATCH);
  let allowed = 0;
  const sched = new SaveSchedule(parts, saves, order.length);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < order.length; i += BATCH) {
    sched.at(i);
    const n = Math.min(BATCH, order.length - i);
    batch.length = n;
    for (let j = 0; j < n; j++) batch[j] = ids[order[i + j] ?? 0] ?? '';
    // one Kafka batch is one partition's
    allowed += (parts[partitionOf[order[i] ?? 0] ?? 0] as IdentityLimiter).tryTakeMany(batch, out);
  }
  return { rate: order.length / seconds(t0), allowed, snapshotBytes: sched.bytes };
}

export async function runLimiterBench(): Promise<BenchResult[]> {
  const gc = findGc();
  note(`limiter bench: ${fmt(IDENTITIES)} identities, ${fmt(DECISIONS)} random decisions; bottleneck.Group ${fmt(BN_KEYS)} keys`);
  const ids = makeIds(IDENTITIES);
  const partitionOf = new Uint8Array(IDENTITIES);
  const counts = new Int32Array(PARTITIONS);
  for (let i = 0; i < IDENTITIES; i++) {
    const p = Math.floor(Math.random() * PARTITIONS);
    partitionOf[i] = p;
    counts[p] = (counts[p] ?? 0) + 1;
  }
  const members = Array.from({ length: PARTITIONS }, (_, p) => new Int32Array(counts[p] ?? 0));
  const fill = new Int32Array(PARTITIONS);
  for (let i = 0; i < IDENTITIES; i++) {
    const p = partitionOf[i] ?? 0;
    (members[p] as Int32Array)[fill[p] ?? 0] = i;
    fill[p] = (fill[p] ?? 0) + 1;
  }
  // Kafka-like batches (one partition each) for both layouts, so they see the same access pattern.
  const order = partitionedOrder(DECISIONS, partitionOf, members);
  const bnOrder = randomOrder(BN_DECISIONS, BN_KEYS);

  // ---- bytes per identity ----
  const base = settledBytes(gc);
  const lim = new IdentityLimiter(LIMITS, systemClock);
  for (let i = 0; i < IDENTITIES; i++) lim.tryTake(ids[i] ?? '');
  const filled = settledBytes(gc);
  const ourBytes = (filled - base) / lim.size;
  note(
    `IdentityLimiter: ${ourBytes.toFixed(1)} bytes/identity measured (heapUsed+arrayBuffers delta), ` +
      `${(lim.approximateBytes() / lim.size).toFixed(1)} by approximateBytes(); id strings are not retained`,
  );

  // ---- decisions/s ----
  // Warm-up passes so the JIT has optimised both paths before timing.
  limiterDecisions(lim, ids, order.subarray(0, 1_000_000));
  limiterBatchDecisions(lim, ids, order.subarray(0, 1_000_000));
  const single = limiterDecisions(lim, ids, order);
  note(`IdentityLimiter.tryTake: ${fmt(single.rate)} decisions/s over ${fmt(lim.size)} identities (${fmt(single.allowed)} allowed)`);
  const batched = limiterBatchDecisions(lim, ids, order);
  note(`IdentityLimiter.tryTakeMany (${BATCH}/call): ${fmt(batched.rate)} decisions/s (${fmt(batched.allowed)} allowed)`);
  const mapRate = mapLookups(ids, order);
  note(`  reference: bare Map<string, number>.get on the same pattern: ${fmt(mapRate)} lookups/s`);
  // Same calls on identities that fit in cache: separates the limiter's CPU cost from DRAM latency.
  const hot = new IdentityLimiter(LIMITS, systemClock);
  const hotOrder = randomOrder(DECISIONS, HOT_SET);
  limiterBatchDecisions(hot, ids, hotOrder.subarray(0, 1_000_000));
  const hotSingle = limiterDecisions(hot, ids, hotOrder);
  const hotBatch = limiterBatchDecisions(hot, ids, hotOrder);
  note(`  hot set of ${fmt(HOT_SET)} identities: tryTake ${fmt(hotSingle.rate)}/s, tryTakeMany ${fmt(hotBatch.rate)}/s`);

  // ---- with persistence: one limiter per partition, every partition exported once per timed run ----
  const pBase = settledBytes(gc);
  const parts = Array.from({ length: PARTITIONS }, () => new IdentityLimiter(LIMITS, systemClock));
  for (let i = 0; i < IDENTITIES; i++) (parts[partitionOf[i] ?? 0] as IdentityLimiter).tryTake(ids[i] ?? '');
  const pFilled = settledBytes(gc);
  const pTracked = parts.reduce((n, l) => n + l.size, 0);
  const persistedBytes = (pFilled - pBase) / pTracked;
  note(`persisted layout (${PARTITIONS} partition limiters): ${persistedBytes.toFixed(1)} bytes/identity measured, vs ${ourBytes.toFixed(1)} for one limiter`);
  persistedDecisions(parts, partitionOf, ids, order.subarray(0, 1_000_000), 1);
  persistedBatchDecisions(parts, partitionOf, ids, order.subarray(0, 1_000_000), 1);
  // partitions a 30 s save interval exports during one timed run at the plain rate (at least one)
  const savesFor = (rate: number): number => Math.max(1, Math.ceil((PARTITIONS * DECISIONS) / rate / SAVE_INTERVAL_S));
  // Interleaved and best of two each, so drift on this shared machine hits both layouts alike.
  const pSingle1 = persistedDecisions(parts, partitionOf, ids, order, savesFor(single.rate));
  const single2 = limiterDecisions(lim, ids, order);
  const pSingle2 = persistedDecisions(parts, partitionOf, ids, order, savesFor(single.rate));
  const pBatch1 = persistedBatchDecisions(parts, partitionOf, ids, order, savesFor(batched.rate));
  const batched2 = limiterBatchDecisions(lim, ids, order);
  const pBatch2 = persistedBatchDecisions(parts, partitionOf, ids, order, savesFor(batched.rate));
  const pSingle = pSingle1.rate >= pSingle2.rate ? pSingle1 : pSingle2;
  const pBatch = pBatch1.rate >= pBatch2.rate ? pBatch1 : pBatch2;
  const plainSingle = Math.max(single.rate, single2.rate);
  const plainBatch = Math.max(batched.rate, batched2.rate);
  const t0 = process.hrtime.bigint();
  const snapBytes = saveAll(parts);
  const saveSeconds = seconds(t0);
  const worstBatch = DECISIONS / (DECISIONS / pBatch.rate + saveSeconds);
  note(
    `persisted: tryTake ${fmt(pSingle.rate)}/s (plain ${fmt(plainSingle)}/s), tryTakeMany ${fmt(pBatch.rate)}/s (plain ${fmt(plainBatch)}/s), ` +
      `exporting ${savesFor(batched.rate)} partition(s) per timed run (${fmt(pBatch.snapshotBytes)} bytes); ` +
      `a save of all ${PARTITIONS} partitions: ${(snapBytes / pTracked).toFixed(1)} bytes/identity in ${(saveSeconds * 1000).toFixed(0)} ms ` +
      `(with one such save in every ${(DECISIONS / pBatch.rate).toFixed(1)} s run the batch ratio would be ${(worstBatch / plainBatch).toFixed(3)}); ` +
      `approximateBytes: ${(parts.reduce((n, l) => n + l.approximateBytes(), 0) / pTracked).toFixed(1)} bytes/identity persisted layout, ` +
      `${(lim.approximateBytes() / lim.size).toFixed(1)} plain`,
  );

  // ---- bottleneck.Group baseline ----
  // minTime spacing is Bottleneck's per-key "30/s"; the reservoir form would start one heartbeat
  // interval per key, which at 100k keys swamps the event loop. check() answers "could a job run
  // now" without consuming, which is less work than our consuming decision: a generous baseline.
  const bnBase = settledBytes(gc);
  const group = new Bottleneck.Group({ maxConcurrent: null, minTime: Math.ceil(1000 / LIMITS.eventsPerSecond) });
  for (let i = 0; i < BN_KEYS; i++) group.key(ids[i] ?? '');
  const bnFilled = settledBytes(gc);
  const bnBytes = (bnFilled - bnBase) / BN_KEYS;
  note(`bottleneck.Group: ${bnBytes.toFixed(1)} bytes/key (${fmt(BN_KEYS)} keys; key strings were already allocated)`);
  await bottleneckDecisions(group, ids, bnOrder.subarray(0, 50_000));
  const bnRate = await bottleneckDecisions(group, ids, bnOrder);
  note(`bottleneck.Group: ${fmt(bnRate)} check() decisions/s (${fmt(BN_KEYS)} keys, ${fmt(BN_BATCH)} concurrent)`);

  const bnLabel = `bottleneck.Group ${BN_KEYS} keys check() = ${Math.round(bnRate)} decisions/s`;
  const results: BenchResult[] = [
    {
      bench: 'identity_limiter.persisted.decisions_per_sec.batch',
      value: Math.round(pBatch.rate),
      unit: 'decisions/s',
      baseline: `identity_limiter.decisions_per_sec.batch without persistence = ${Math.round(plainBatch)} decisions/s`,
      ratio: pBatch.rate / plainBatch,
    },
    {
      bench: 'identity_limiter.persisted.decisions_per_sec.single',
      value: Math.round(pSingle.rate),
      unit: 'decisions/s',
      baseline: `identity_limiter.decisions_per_sec.single without persistence = ${Math.round(plainSingle)} decisions/s`,
      ratio: pSingle.rate / plainSingle,
    },
    {
      bench: 'identity_limiter.persisted.bytes_per_identity',
      value: Math.round(persistedBytes * 10) / 10,
      unit: 'bytes/identity',
      baseline: `identity_limiter.bytes_per_identity without persistence = ${Math.round(ourBytes * 10) / 10} (ratio = baseline/ours)`,
      ratio: ourBytes / persistedBytes,
    },
    {
      bench: 'identity_limiter.persisted.snapshot_bytes_per_identity',
      value: Math.round((snapBytes / pTracked) * 10) / 10,
      unit: 'bytes/identity',
      baseline: `identity_limiter.persisted.bytes_per_identity = ${Math.round(persistedBytes * 10) / 10} (ratio = snapshot/in memory)`,
      ratio: snapBytes / pTracked / persistedBytes,
    },
    {
      bench: 'identity_limiter.decisions_per_sec.batch',
      value: Math.round(batched.rate),
      unit: 'decisions/s',
      baseline: bnLabel,
      ratio: batched.rate / bnRate,
    },
    {
      bench: 'identity_limiter.decisions_per_sec.single',
      value: Math.round(single.rate),
      unit: 'decisions/s',
      baseline: bnLabel,
      ratio: single.rate / bnRate,
    },
    {
      bench: 'identity_limiter.bytes_per_identity',
      value: Math.round(ourBytes * 10) / 10,
      unit: 'bytes/identity',
      baseline: `bottleneck.Group ${BN_KEYS} keys = ${Math.round(bnBytes)} bytes/key (ratio = baseline/ours)`,
      ratio: bnBytes / ourBytes,
    },
  ];
  note(
    `targets: >= ${fmt(TARGET_DECISIONS)} decisions/s ${batched.rate >= TARGET_DECISIONS ? 'MET' : 'NOT MET'} (batch path); ` +
      `<= ${TARGET_BYTES} bytes/identity ${ourBytes <= TARGET_BYTES ? 'MET' : 'NOT MET'} ` +
      `(ratios > 1 mean IdentityLimiter is better); with persistence: decisions ${(pBatch.rate / plainBatch).toFixed(3)}x, ` +
      `memory ${(ourBytes / persistedBytes).toFixed(3)}x of the plain layout (goal >= ${TARGET_PERSISTED_RATIO}: ` +
      `${pBatch.rate / plainBatch >= TARGET_PERSISTED_RATIO && ourBytes / persistedBytes >= TARGET_PERSISTED_RATIO ? 'MET' : 'NOT MET'})`,
  );
  // Keeps the limiter reachable until here so the memory figure is not of a collected object.
  if (lim.size !== IDENTITIES) note(`warning: tracked ${lim.size} identities`);
  if (pTracked !== IDENTITIES) note(`warning: the persisted layout tracked ${pTracked} identities`);
  return results;
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  for (const r of await runLimiterBench()) process.stdout.write(`${JSON.stringify(r)}\n`);
}
