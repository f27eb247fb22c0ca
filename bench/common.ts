/**
 * Shared pieces of the benchmarks: the result shape every benchmark returns, the one-JSON-line
 * output format `npm run bench` prints, and small helpers (settings, timing, CPU accounting and
 * profiling, a silent logger). What only the Kafka / gateway benchmarks share is in support.ts.
 *
 * Benchmarks report; they never assert. A missed target is a number in the output, not a failure.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { createLogger, type Logger } from '../src/observability/logger.js';

export interface BenchResult {
  /** what was measured, snake_case (e.g. `outbound_pipeline`) */
  bench: string;
  value: number;
  unit: string;
  /** the `bench` name of what `value` is compared against (itself for a baseline) */
  baseline: string;
  /** value / baseline value (1 for a baseline) */
  ratio: number;
}

/** Integers for large values (rates), three significant decimals for small ones (latencies, ratios). */
export function roundValue(v: number): number {
  if (!Number.isFinite(v)) return v;
  if (Math.abs(v) >= 100) return Math.round(v);
  return Math.round(v * 1000) / 1000;
}

export function roundRatio(r: number): number {
  return Number.isFinite(r) ? Math.round(r * 1000) / 1000 : r;
}

/** The result as it is printed: value and ratio rounded, fields in a fixed order. */
export function formatResult(r: BenchResult): string {
  return JSON.stringify({
    bench: r.bench,
    value: roundValue(r.value),
    unit: r.unit,
    baseline: r.baseline,
    ratio: roundRatio(r.ratio),
  });
}

/** Prints exactly one line, `{"bench":...,"value":...,"unit":...,"baseline":...,"ratio":...}`, on stdout. */
export function printResult(r: BenchResult): void {
  process.stdout.write(`${formatResult(r)}\n`);
}

/**
 * The two results of a comparison, rates rounded to whole events/s: the baseline (ratio 1) and the
 * contender measured against it.
 */
export function versusResults(base: { bench: string; rate: number }, contender: { bench: string; rate: number }): BenchResult[] {
  return [
    { bench: base.bench, value: Math.round(base.rate), unit: 'events/s', baseline: base.bench, ratio: 1 },
    { bench: contender.bench, value: Math.round(contender.rate), unit: 'events/s', baseline: base.bench, ratio: roundRatio(contender.rate / base.rate) },
  ];
}

/** A positive integer setting from the environment; `def` when unset or empty. */
export function envInt(name: string, def: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Progress and detail go to stderr, so stdout carries only the result lines. */
export function note(text: string): void {
  process.stderr.write(`${text}\n`);
}

/** Milliseconds, monotonic, sub-millisecond resolution. */
export function nowMs(): number {
  return performance.now();
}

/** A stopwatch: `const t = timer(); ...; t.ms()`. */
export function timer(): { ms: () => number; seconds: () => number } {
  const start = process.hrtime.bigint();
  const ms = (): number => Number(process.hrtime.bigint() - start) / 1e6;
  return { ms, seconds: () => ms() / 1000 };
}

/** CPU time this process used (user + system, ms) since the returned function was created. */
export function cpuMeter(): () => { userMs: number; systemMs: number; totalMs: number } {
  const start = process.cpuUsage();
  return () => {
    const d = process.cpuUsage(start);
    return { userMs: d.user / 1000, systemMs: d.system / 1000, totalMs: (d.user + d.system) / 1000 };
  };
}

/** A pino logger that writes nothing, for components that need one. */
export function silentLogger(): Logger {
  return createLogger('silent');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `p`, or a rejection `<what()> after <ms> ms` when it takes longer than `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what()} after ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * Runs `fn` under the V8 CPU profiler when `dir` names a directory (a benchmark's
 * BENCH_..._CPU_PROFILE setting), writing the profile there as `<name>.cpuprofile`; otherwise just runs it.
 */
export async function profiled<T>(dir: string | undefined, name: string, fn: () => Promise<T>): Promise<T> {
  if (!dir) return fn();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${name}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    note(`  CPU profile: ${file}`);
  }
}

/** Runs the garbage collector when the process was started with `--expose-gc` (bench/run.ts makes sure of it). */
export function gcIfExposed(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === 'function') gc();
}

/** 123456.7 -> "123,457" */
export function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
