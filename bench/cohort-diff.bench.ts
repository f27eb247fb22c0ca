/**
 * Diff of two 2,000,000-member cohort snapshots (the previous run's and the current export's,
 * 100,000 members in and 100,000 out), the gateway's packed member sets against the plain way: a
 * JavaScript `Set` of the same identifier strings per snapshot and `has()` both ways, measured in
 * the same run. Speed: members of the current snapshot diffed per second (the diff alone, both
 * snapshots already built). Memory: what the two snapshots and the diff's result hold at the end
 * of the diff, their peak (after a full GC, heap plus array buffers, above what was there before
 * the snapshots were built). Goal: at least the Set's speed at a quarter of its memory or less.
 *
 *   BENCH_COHORT_DIFF_MEMBERS  members per snapshot (default 2,000,000)
 *   BENCH_COHORT_DIFF_CHURN    members in and out (default 100,000 each)
 */
import { MemberSetBuilder, diffMembers, type MemberSet } from '../src/cohorts/member-set.js';
import { envInt, fmt, gcIfExposed, note, roundRatio, type BenchResult } from './common.js';

function heldBytes(): number {
  gcIfExposed();
  gcIfExposed();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

// Identifier keys as the sync writes them (`e:<external_id>`), one fresh string per call, as two
// snapshots read from two sources (the stored snapshot, the export) would be.
const key = (i: number): string => `e:user-${i}`;

export async function runCohortDiffBench(): Promise<BenchResult[]> {
  const n = envInt('BENCH_COHORT_DIFF_MEMBERS', 2_000_000);
  const churn = envInt('BENCH_COHORT_DIFF_CHURN', 100_000);
  if (typeof (globalThis as { gc?: unknown }).gc !== 'function') note('  (no --expose-gc: the memory figures are rough)');
  note(`  two snapshots of ${fmt(n)} members, ${fmt(churn)} in and ${fmt(churn)} out`);

  // --- the plain way: a Set of strings per snapshot ---
  let setMs: number;
  let setBytes: number;
  {
    const before = heldBytes();
    const prev = new Set<string>();
    for (let i = 0; i < n; i++) prev.add(key(i));
    const cur = new Set<string>();
    for (let i = churn; i < n + churn; i++) cur.add(key(i));
    heldBytes();
    const t = performance.now();
    const adds: string[] = [];
    const removes: string[] = [];
    for (const k of cur) if (!prev.has(k)) adds.push(k);
    for (const k of prev) if (!cur.has(k)) removes.push(k);
    setMs = performance.now() - t;
    setBytes = heldBytes() - before;
    if (adds.length !== churn || removes.length !== churn || prev.size !== n || cur.size !== n) throw new Error(`Set diff: ${adds.length} adds, ${removes.length} removes`);
  }
  note(`  Set: diff ${setMs.toFixed(0)} ms, ${(setBytes / 1e6).toFixed(1)} MB held`);

  // --- the gateway's packed member sets ---
  let ms: number;
  let bytes: number;
  let buildMs: number;
  {
    const before = heldBytes();
    const tb = performance.now();
    const build = (from: number): MemberSet => {
      const b = new MemberSetBuilder();
      for (let i = from; i < from + n; i++) b.add(key(i));
      return b.build();
    };
    const prev = build(0);
    const cur = build(churn);
    buildMs = performance.now() - tb;
    heldBytes();
    const t = performance.now();
    const d = diffMembers(prev, cur);
    ms = performance.now() - t;
    bytes = heldBytes() - before;
    if (d.adds.length !== churn || d.removes.length !== churn || d.unchanged !== n - churn || prev.size !== n || cur.size !== n) throw new Error(`packed diff: ${d.adds.length} adds, ${d.removes.length} removes`);
    note(`  packed: diff ${ms.toFixed(0)} ms, ${(bytes / 1e6).toFixed(1)} MB held (${((prev.byteSize + cur.byteSize) / n / 2).toFixed(1)} bytes a member); building both took ${buildMs.toFixed(0)} ms`);
  }

  const setRate = n / (setMs / 1000);
  const rate = n / (ms / 1000);
  return [
    { bench: 'cohort_diff_set_baseline', value: Math.round(setRate), unit: 'members/s', baseline: 'cohort_diff_set_baseline', ratio: 1 },
    { bench: 'cohort_diff', value: Math.round(rate), unit: 'members/s', baseline: 'cohort_diff_set_baseline', ratio: roundRatio(rate / setRate) },
    { bench: 'cohort_diff_memory_set_baseline', value: Math.round(setBytes / 1e6), unit: 'MB', baseline: 'cohort_diff_memory_set_baseline', ratio: 1 },
    { bench: 'cohort_diff_memory', value: Math.round(bytes / 1e6), unit: 'MB', baseline: 'cohort_diff_memory_set_baseline', ratio: roundRatio(bytes / setBytes) },
  ];
}
