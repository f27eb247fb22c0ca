/**
 * `npm run bench` (`npm run build && node dist/bench/run.js`): runs every benchmark module present,
 * in a fixed order, then prints all result lines again as a summary block.
 *
 *   node dist/bench/run.js             all of them
 *   node dist/bench/run.js outbound    only benchmarks whose name contains "outbound" (several
 *                                      names may be given; any match runs)
 *
 * Known modules run first, in this order: mapping, outbound, limiter, inbound, scale (then the cohort
 * and attribute-state ones). A known module
 * that is not there (not written yet) is skipped with a note. Any other `*.bench.js` next to this
 * file runs after them, through its exported `run...Bench()` function.
 *
 * Each result is one JSON line on stdout: {"bench":...,"value":...,"unit":...,"baseline":...,"ratio":...}.
 * Progress and details go to stderr. Benchmarks report, they do not assert: the exit status is 0
 * whatever the numbers are, and non-zero only when a benchmark crashed.
 *
 * `--expose-gc`: some benchmarks (the limiter's memory figures) need `global.gc`. Rather than
 * changing the npm script, this entry re-executes itself with `--expose-gc` when `gc` is missing,
 * keeping any other Node flags it was given (e.g. `--cpu-prof`).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatResult, note, type BenchResult } from './common.js';

const REEXEC_MARK = 'GATEWAY_BENCH_REEXEC';

interface BenchModule {
  name: string;
  file: string;
  /** exported function; undefined: the first export named run...Bench */
  fn?: string;
}

const KNOWN: BenchModule[] = [
  { name: 'mapping', file: './mapping.bench.js', fn: 'runMappingBench' },
  { name: 'outbound', file: './outbound.bench.js', fn: 'runOutboundBench' },
  { name: 'limiter', file: './limiter.bench.js', fn: 'runLimiterBench' },
  { name: 'inbound', file: './inbound.bench.js', fn: 'runInboundBench' },
  { name: 'scale', file: './scale.bench.js', fn: 'runScaleBench' },
  { name: 'cohort-diff', file: './cohort-diff.bench.js', fn: 'runCohortDiffBench' },
  { name: 'cohort-sync', file: './cohort-sync.bench.js', fn: 'runCohortSyncBench' },
  { name: 'attribute-state', file: './attribute-state.bench.js', fn: 'runAttributeStateBench' },
];

function reexecWithGc(): Promise<number> {
  const args = [...process.execArgv, '--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)];
  const child = spawn(process.execPath, args, { stdio: 'inherit', env: { ...process.env, [REEXEC_MARK]: '1' } });
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) => {
    child.on('error', (err) => {
      note(`bench: cannot re-run with --expose-gc: ${err.message}`);
      resolve(1);
    });
    child.on('close', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

/** the known modules, then any other *.bench.js in this directory */
function modules(): BenchModule[] {
  const here = new URL('.', import.meta.url);
  const list = [...KNOWN];
  let files: string[] = [];
  try {
    files = readdirSync(here).filter((f) => f.endsWith('.bench.js')).sort();
  } catch {
    // no directory listing: the known list is all there is
  }
  for (const f of files) {
    if (!list.some((m) => basename(m.file) === f)) list.push({ name: f.slice(0, -'.bench.js'.length), file: `./${f}` });
  }
  return list;
}

function isResult(r: unknown): r is BenchResult {
  if (typeof r !== 'object' || r === null) return false;
  const o = r as Record<string, unknown>;
  return typeof o.bench === 'string' && typeof o.value === 'number' && typeof o.unit === 'string' && typeof o.baseline === 'string' && typeof o.ratio === 'number';
}

async function runOne(m: BenchModule): Promise<BenchResult[]> {
  const mod = (await import(m.file)) as Record<string, unknown>;
  const name = m.fn ?? Object.keys(mod).find((k) => /^run\w*Bench$/.test(k) && typeof mod[k] === 'function');
  const fn = name === undefined ? undefined : mod[name];
  if (typeof fn !== 'function') throw new Error(`${m.file} exports no ${m.fn ?? 'run...Bench'} function`);
  const out: unknown = await (fn as () => Promise<unknown>)();
  const results = Array.isArray(out) ? out : [out];
  const bad = results.filter((r) => !isResult(r));
  if (bad.length > 0) throw new Error(`${m.file}: ${name}() returned something that is not a BenchResult: ${JSON.stringify(bad[0])}`);
  return results as BenchResult[];
}

async function main(): Promise<number> {
  const filters = process.argv.slice(2).filter((a) => !a.startsWith('-')).map((a) => a.toLowerCase());
  const selected = modules().filter((m) => filters.length === 0 || filters.some((f) => m.name.toLowerCase().includes(f)));
  if (selected.length === 0) {
    note(`bench: no benchmark matches ${filters.join(', ')} (known: ${modules().map((m) => m.name).join(', ')})`);
    return 0;
  }

  const all: BenchResult[] = [];
  const skipped: string[] = [];
  const crashed: string[] = [];
  for (const m of selected) {
    if (!existsSync(fileURLToPath(new URL(m.file, import.meta.url)))) {
      skipped.push(m.name);
      note(`\n=== ${m.name}: skipped (${m.file} is not there yet) ===`);
      continue;
    }
    note(`\n=== ${m.name} (${m.file}) ===`);
    const started = performance.now();
    try {
      const results = await runOne(m);
      for (const r of results) process.stdout.write(`${formatResult(r)}\n`);
      all.push(...results);
      note(`=== ${m.name}: done in ${((performance.now() - started) / 1000).toFixed(1)} s ===`);
    } catch (err) {
      crashed.push(m.name);
      note(`=== ${m.name}: CRASHED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)} ===`);
    }
  }

  note('\n=== summary ===');
  for (const r of all) process.stdout.write(`${formatResult(r)}\n`);
  if (skipped.length > 0) note(`skipped (not present): ${skipped.join(', ')}`);
  if (crashed.length > 0) note(`crashed: ${crashed.join(', ')}`);
  return crashed.length > 0 ? 1 : 0;
}

let code: number;
if (typeof (globalThis as { gc?: unknown }).gc !== 'function' && process.env[REEXEC_MARK] !== '1') {
  code = await reexecWithGc();
} else {
  code = await main();
}
// Exit explicitly: a benchmark that left a timer or socket behind must not keep `npm run bench` hanging.
process.exit(code);
