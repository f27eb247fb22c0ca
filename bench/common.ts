/**
 * Shared pieces of the benchmarks: the result shape every benchmark returns, the one-JSON-line
 * output format `npm run bench` prints, and small helpers (timing, CPU accounting, a silent logger).
 *
 * Benchmarks report; they never assert. A missed target is a number in the output, not a failure.
 */
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

/** Runs the garbage collector when the process was started with `--expose-gc` (bench/run.ts makes sure of it). */
export function gcIfExposed(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === 'function') gc();
}

/** 123456.7 -> "123,457" */
export function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
