/**
 * Per-identity limiter benchmark: decisions/s and bytes per tracked identity for IdentityLimiter,
 * next to bottleneck's Group (one Bottleneck limiter per key) measured in the same run.
 *
 * Both ratios are oriented so that > 1 means IdentityLimiter is better:
 *   decisions/s: ours / bottleneck      bytes per identity: bottleneck / ours
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

export async function runLimiterBench(): Promise<BenchResult[]> {
  const gc = findGc();
  note(`limiter bench: ${fmt(IDENTITIES)} identities, ${fmt(DECISIONS)} random decisions; bottleneck.Group ${fmt(BN_KEYS)} keys`);
  const ids = makeIds(IDENTITIES);
  const order = randomOrder(DECISIONS, IDENTITIES);
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
      `(ratios > 1 mean IdentityLimiter is better)`,
  );
  // Keeps the limiter reachable until here so the memory figure is not of a collected object.
  if (lim.size !== IDENTITIES) note(`warning: tracked ${lim.size} identities`);
  return results;
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  for (const r of await runLimiterBench()) process.stdout.write(`${JSON.stringify(r)}\n`);
}
