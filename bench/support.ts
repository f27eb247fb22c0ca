/**
 * What the benchmarks that run the whole gateway against a mock Kafka cluster share
 * (bench/outbound.bench.ts, bench/inbound.bench.ts):
 *
 * - CPU accounting outside this process (the broker, the machine), over a measured window;
 * - the per-run figures (`RunResult`) and their one-line description on stderr;
 * - topics: filling one, reading its watermarks;
 * - the bare-KafkaJS baseline consumer, and the gateway-side delivery measurement with the same
 *   definition of timing (first message in hand to last message finished);
 * - child processes that talk JSON lines over stdin/stdout, and stand-ins run in one.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel, type Consumer, type Message } from 'kafkajs';
import type { Gateway } from '../src/gateway.js';
import type { MockCluster } from '../src/demo/mock-cluster.js';
import { cpuMeter, fmt, gcIfExposed, note, profiled, sleep, withTimeout } from './common.js';

/** the mock's retention per partition (rdkafka_mock.c: 5 MiB) */
export const MOCK_PARTITION_BYTES = 5 * 1024 * 1024;
/** how long one measured run may take before it counts as stuck */
export const RUN_TIMEOUT_MS = 180_000;

// ---------------------------------------------------------------------------------------------
// CPU accounting outside this process (Linux /proc; absent elsewhere)

const CLK_TCK = 100;

/** user+system ms of another process, from /proc/PID/stat */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11] is utime, fields[12] stime (fields 14 and 15 of the man page, counted from state)
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** busy and total jiffies of the whole machine, from /proc/stat */
function machineCpu(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** The mock broker's pid: not part of MockCluster's interface, read defensively for the CPU report only. */
export function brokerPid(cluster: MockCluster): number | undefined {
  const child = (cluster as unknown as { child?: { pid?: number } }).child;
  return typeof child?.pid === 'number' ? child.pid : undefined;
}

/** CPU use over a measured window. */
export interface Window {
  /** this process, ms */
  cpuMs: number;
  brokerCpuMs: number | undefined;
  /** machine-wide busy share over the window, 0..1 of all cores */
  machineBusy: number | undefined;
}

/** Starts a window now; the returned function ends it. */
export function windowMeter(broker: number | undefined): () => Window {
  const cpu = cpuMeter();
  const b0 = processCpuMs(broker);
  const m0 = machineCpu();
  return () => {
    const b1 = processCpuMs(broker);
    const m1 = machineCpu();
    return {
      cpuMs: cpu().totalMs,
      brokerCpuMs: b0 !== undefined && b1 !== undefined ? b1 - b0 : undefined,
      machineBusy: m0 && m1 && m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : undefined,
    };
  };
}

// ---------------------------------------------------------------------------------------------
// One measured run

export interface RunResult {
  rate: number;
  seconds: number;
  count: number;
  window: Window;
  /** benchmark-specific detail for the run's line */
  extra: string;
  /** the CPU of a gateway's child processes (GATEWAY_WORKERS) over the window */
  childCpuMs?: number | undefined;
}

/** the CPU of a multi-process gateway over a run: its primary, its children, per event in all */
export function workerCpu(r: RunResult): string {
  const children = r.childCpuMs;
  if (children === undefined) return `primary process ${fmt(r.window.cpuMs)} ms CPU (children: not readable)`;
  const total = r.window.cpuMs + children;
  return (
    `gateway processes ${fmt(total)} ms CPU (primary ${fmt(r.window.cpuMs)}, children ${fmt(children)}): ` +
    `${((total * 1000) / Math.max(1, r.count)).toFixed(1)} us/event, ${((total / 1000 / r.seconds) * 100).toFixed(0)} % of a core`
  );
}

/** `name: N events in S s = R events/s; this process ... ms CPU ...; broker ...; machine ...; extra` */
export function describe(name: string, r: RunResult): string {
  const w = r.window;
  const parts = [
    `${name}: ${fmt(r.count)} events in ${r.seconds.toFixed(2)} s = ${fmt(r.rate)} events/s`,
    `this process ${fmt(w.cpuMs)} ms CPU (${((w.cpuMs * 1000) / Math.max(1, r.count)).toFixed(1)} us/event, ${((w.cpuMs / 1000 / r.seconds) * 100).toFixed(0)} % of a core)`,
  ];
  if (w.brokerCpuMs !== undefined) parts.push(`broker ${fmt(w.brokerCpuMs)} ms CPU`);
  if (w.machineBusy !== undefined) parts.push(`machine ${(w.machineBusy * 100).toFixed(0)} % busy`);
  if (r.extra) parts.push(r.extra);
  return parts.join('; ');
}

/** One side of a comparison. */
export interface Side<R extends RunResult> {
  /** its name on the run's line */
  bench: string;
  /** the CPU profile's file name, `-run<N>` appended */
  profile: string;
  /** before the GC that precedes a run (e.g. creating a fresh topic) */
  prepare?: (run: number) => Promise<void>;
  /** after that GC, before the 200 ms pause (e.g. resetting a stand-in) */
  reset?: () => Promise<void>;
  run: (run: number) => Promise<R>;
  /** appended to the run's line (e.g. what a stand-in saw) */
  detail?: (r: R, run: number) => Promise<string>;
}

/**
 * `runs` rounds of the baseline then the contender, alternating to damp drift on a shared machine.
 * Each run follows a GC and a 200 ms pause, runs under the CPU profiler when `profileDir` is set
 * (see `profiled`), and is described on stderr. Returns the best (highest rate) run of each side.
 */
export async function alternate<B extends RunResult, C extends RunResult>(
  label: string,
  runs: number,
  profileDir: string | undefined,
  baseline: Side<B>,
  contender: Side<C>,
): Promise<{ baseline: B; contender: C }> {
  const once = async <R extends RunResult>(side: Side<R>, run: number): Promise<R> => {
    await side.prepare?.(run);
    gcIfExposed();
    await side.reset?.();
    await sleep(200);
    const r = await profiled(profileDir, `${side.profile}-run${run}`, () => side.run(run));
    const detail = side.detail ? await side.detail(r, run) : '';
    note(`  run ${run} ${describe(side.bench, r)}${detail}`);
    return r;
  };
  let bestBaseline: B | undefined;
  let bestContender: C | undefined;
  for (let run = 1; run <= runs; run++) {
    const b = await once(baseline, run);
    if (!bestBaseline || b.rate > bestBaseline.rate) bestBaseline = b;
    const c = await once(contender, run);
    if (!bestContender || c.rate > bestContender.rate) bestContender = c;
  }
  if (!bestBaseline || !bestContender) throw new Error(`${label}: no runs`);
  return { baseline: bestBaseline, contender: bestContender };
}

/** Calls `onInc(n)` whenever the counter is incremented (prom-client: inc(), inc(n), inc(labels), inc(labels, n)). */
export function tapCounter(counter: object, onInc: (n: number) => void): void {
  const c = counter as { inc: (...args: unknown[]) => void };
  const original = c.inc.bind(counter);
  c.inc = (...args: unknown[]): void => {
    const n = typeof args[0] === 'number' ? args[0] : typeof args[1] === 'number' ? args[1] : 1;
    onInc(n);
    original(...args);
  };
}

// ---------------------------------------------------------------------------------------------
// Topics

/**
 * Writes `n` messages to `topic`, 1000 per request, 4 requests in flight; `batch(from, to)` makes
 * messages `from`..`to - 1` of one request. `valueBytes`: the values' total size.
 */
export async function produceTopic(
  bootstrap: string,
  topic: string,
  n: number,
  batch: (from: number, to: number) => Message[],
): Promise<{ valueBytes: number; seconds: number }> {
  const kafka = new Kafka({ clientId: 'bench-producer', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const started = performance.now();
  let valueBytes = 0;
  const BATCH = 1000;
  const IN_FLIGHT = 4;
  try {
    for (let base = 0; base < n; base += BATCH * IN_FLIGHT) {
      const sends: Array<Promise<unknown>> = [];
      for (let b = base; b < Math.min(n, base + BATCH * IN_FLIGHT); b += BATCH) {
        const messages = batch(b, Math.min(n, b + BATCH));
        for (const m of messages) valueBytes += m.value === null ? 0 : Buffer.byteLength(m.value);
        sends.push(producer.send({ topic, acks: -1, messages }));
      }
      await Promise.all(sends);
    }
  } finally {
    await producer.disconnect();
  }
  return { valueBytes, seconds: (performance.now() - started) / 1000 };
}

export interface TopicOffsets {
  partitions: number;
  /** sum of the high watermarks */
  total: number;
  /** messages still there: sum of high - low */
  held: number;
  /** every partition still starts at offset 0 */
  low0: boolean;
  maxHigh: number;
  minHigh: number;
  /** `partition P starts at L` for those that do not */
  truncated: string[];
}

export async function topicOffsets(bootstrap: string, topic: string): Promise<TopicOffsets> {
  const admin = new Kafka({ clientId: 'bench-admin', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    let total = 0;
    let held = 0;
    let maxHigh = 0;
    let minHigh = Number.POSITIVE_INFINITY;
    const truncated: string[] = [];
    for (const p of offsets) {
      const low = Number(p.low);
      const high = Number(p.high);
      if (low !== 0) truncated.push(`partition ${p.partition} starts at ${low}`);
      total += high;
      held += high - low;
      maxHigh = Math.max(maxHigh, high);
      minHigh = Math.min(minHigh, high);
    }
    return { partitions: offsets.length, total, held, low0: truncated.length === 0, maxHigh, minHigh, truncated };
  } finally {
    await admin.disconnect();
  }
}

/**
 * The topic's offsets, after checking that it has `partitions` partitions holding all `n` events
 * from offset 0 (the mock drops old data past ~5 MB per partition). `settings`: the benchmark's
 * environment variables for partitions and events, named in the error.
 */
export async function wholeTopic(
  label: string,
  bootstrap: string,
  topic: string,
  n: number,
  partitions: number,
  settings: { partitions: string; events: string },
): Promise<TopicOffsets> {
  const offsets = await topicOffsets(bootstrap, topic);
  if (offsets.partitions !== partitions || !offsets.low0 || offsets.total !== n) {
    throw new Error(
      `${label}: the mock broker dropped data (it keeps ~5 MB per partition): ${offsets.held} of ${n} events left in ${offsets.partitions} partitions; ` +
        `${offsets.truncated.slice(0, 5).join('; ')}. Use more partitions (${settings.partitions}) or fewer events (${settings.events}).`,
    );
  }
  return offsets;
}

// ---------------------------------------------------------------------------------------------
// The two sides of a consume comparison

/**
 * The floor of any KafkaJS consumer: a consumer group with `eachBatch`, the gateway consumer's
 * fetch settings, `JSON.parse` of every value, nothing else. Timed from the first `eachBatch` call
 * to the `n`th message parsed; group join excluded.
 */
export async function runBareConsumer(o: {
  label: string;
  bootstrap: string;
  topic: string;
  groupId: string;
  n: number;
  broker: number | undefined;
}): Promise<RunResult> {
  const { n } = o;
  const kafka = new Kafka({ clientId: 'bench-baseline', brokers: o.bootstrap.split(','), logLevel: logLevel.NOTHING });
  // Fetch settings as in src/kafka/consumer-loop.ts, so the comparison is about what happens after the fetch.
  const consumer: Consumer = kafka.consumer({
    groupId: o.groupId,
    maxWaitTimeInMs: 50,
    maxBytesPerPartition: 4 * 1024 * 1024,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
  });
  await consumer.connect();
  await consumer.subscribe({ topic: o.topic, fromBeginning: true });
  let count = 0;
  let first: number | undefined;
  let last = 0;
  let sink = 0;
  let meter: (() => Window) | undefined;
  let window: Window | undefined;
  try {
    await withTimeout(
      new Promise<void>((resolve) => {
        void consumer.run({
          eachBatch: async ({ batch }) => {
            if (first === undefined) {
              first = performance.now();
              meter = windowMeter(o.broker);
            }
            for (const m of batch.messages) {
              // what a real consumer does with each value; a field is read so the parse is not dead code
              const v = JSON.parse(m.value ? m.value.toString('utf8') : 'null') as { event_type?: string } | null;
              sink += v?.event_type?.length ?? 0;
              count++;
            }
            if (count >= n && window === undefined) {
              last = performance.now();
              window = meter?.();
              resolve();
            }
          },
        });
      }),
      RUN_TIMEOUT_MS,
      () => `${o.label}: baseline consumer read ${count} of ${n}`,
    );
  } finally {
    await consumer.disconnect();
  }
  if (sink === 0 || first === undefined || window === undefined) throw new Error(`${o.label}: baseline read nothing`);
  const seconds = (last - first) / 1000;
  return { rate: count / seconds, seconds, count, window, extra: '' };
}

/** Where a gateway run stands, for a trace while it runs. */
export interface DeliveryProgress {
  /** when the first message was in hand (performance.now()) */
  first: number | undefined;
  consumed: number;
  delivered: number;
}

/** The run's figures (`count`: events delivered), `extra` left to the benchmark. */
export interface DeliveryRun extends Omit<RunResult, 'extra'> {
  /** events counted by the `lostMetrics` (they never count as delivered) */
  lost: number;
}

/**
 * Starts `gateway` and waits until it delivered `n` events (or delivered + lost reach `n`, the
 * `lostMetrics` counters being read every 250 ms), then stops it. Timed from the first
 * `gateway_events_consumed_total` increment to `gateway_events_delivered_total` reaching `n`;
 * group join excluded. `trace`, when given, is called every 250 ms while it runs.
 */
export async function measureDelivery(
  gateway: Gateway,
  n: number,
  broker: number | undefined,
  o: { label: string; lostMetrics: readonly string[]; trace?: (p: Readonly<DeliveryProgress>) => void },
): Promise<DeliveryRun> {
  const progress: DeliveryProgress = { first: undefined, consumed: 0, delivered: 0 };
  let last = 0;
  let meter: (() => Window) | undefined;
  let window: Window | undefined;
  let finished: (() => void) | undefined;
  const allDelivered = new Promise<void>((resolve) => (finished = resolve));
  tapCounter(gateway.metrics.consumed, (k) => {
    progress.consumed += k;
    if (progress.first === undefined) {
      progress.first = performance.now();
      meter = windowMeter(broker);
    }
  });
  tapCounter(gateway.metrics.delivered, (k) => {
    progress.delivered += k;
    if (progress.delivered >= n && window === undefined) {
      last = performance.now();
      window = meter?.();
      finished?.();
    }
  });
  // Events skipped, dead-lettered (or parked) would never count as delivered: watch for them so a run ends.
  let lost = 0;
  const watch = setInterval(() => {
    void Promise.all(o.lostMetrics.map((m) => gateway.metrics.value(m))).then((values) => {
      lost = values.reduce((a, b) => a + b, 0);
      if (progress.delivered + lost >= n && window === undefined) {
        last = performance.now();
        window = meter?.();
        finished?.();
      }
    });
  }, 250);
  const { trace } = o;
  const tracing = trace ? setInterval(() => trace(progress), 250) : undefined;
  try {
    await gateway.start();
    await withTimeout(allDelivered, RUN_TIMEOUT_MS, () => `${o.label}: gateway delivered ${progress.delivered} of ${n}`);
  } finally {
    clearInterval(watch);
    if (tracing) clearInterval(tracing);
    await gateway.stop(10_000);
  }
  if (progress.first === undefined || window === undefined) throw new Error(`${o.label}: the gateway delivered nothing`);
  const seconds = (last - progress.first) / 1000;
  return { rate: progress.delivered / seconds, seconds, count: progress.delivered, window, lost };
}

/**
 * measureDelivery for a gateway that consumes in several processes (GATEWAY_WORKERS > 1): the
 * children's counters are not in this process, so progress is read at the stand-in instead, every
 * 20 ms: from its first event to its n-th (group joins and the rebalance when the children join are
 * inside that span, as they are for a gateway that starts on a full topic). `arrived()` is the
 * stand-in's count of events received. The window's CPU is this (the primary) process only.
 */
/** BENCH_TRACE_WORKERS=1: print the stand-in's count at every poll */
const TRACE_WORKERS = process.env.BENCH_TRACE_WORKERS === '1';

export async function measureDeliveryAtStandIn(
  gateway: Gateway,
  n: number,
  broker: number | undefined,
  o: { label: string; arrived: () => Promise<number> },
): Promise<DeliveryRun & { childCpuMs: number | undefined }> {
  let first: number | undefined;
  // the children's CPU over the same window, from /proc (undefined where that is not readable)
  let childCpu0: number | undefined;
  let childCpuMs: number | undefined;
  const childCpu = (): number | undefined => {
    let sum = 0;
    for (const pid of gateway.workerPids) {
      const ms = processCpuMs(pid);
      if (ms === undefined) return undefined;
      sum += ms;
    }
    return sum;
  };
  let last: number | undefined;
  let meter: (() => Window) | undefined;
  let window: Window | undefined;
  let count = 0;
  let finished: (() => void) | undefined;
  const allDelivered = new Promise<void>((resolve) => (finished = resolve));
  let polling = false;
  const poll = setInterval(() => {
    if (polling) return;
    polling = true;
    void o
      .arrived()
      .then((k) => {
        const now = performance.now();
        if (k > 0 && first === undefined) {
          first = now;
          meter = windowMeter(broker);
          childCpu0 = childCpu();
        }
        if (TRACE_WORKERS && first !== undefined) note(`    t=${((now - first) / 1000).toFixed(2)}s arrived ${k} (+${k - count}) ready ${gateway.ready}`);
        count = k;
        if (k >= n && last === undefined) {
          last = now;
          window = meter?.();
          const c1 = childCpu();
          childCpuMs = childCpu0 !== undefined && c1 !== undefined ? c1 - childCpu0 : undefined;
          finished?.();
        }
      })
      .finally(() => (polling = false));
  }, 20);
  try {
    await gateway.start();
    await withTimeout(allDelivered, RUN_TIMEOUT_MS, () => `${o.label}: the stand-in received ${count} of ${n}`);
  } finally {
    clearInterval(poll);
    await gateway.stop(10_000);
  }
  if (first === undefined || last === undefined || window === undefined) throw new Error(`${o.label}: the gateway delivered nothing`);
  const seconds = (last - first) / 1000;
  return { rate: count / seconds, seconds, count, window, lost: 0, childCpuMs };
}

// ---------------------------------------------------------------------------------------------
// Child processes speaking JSON lines

export interface LineChild {
  pid: number | undefined;
  send(line: string): void;
  /** the next line, parsed; rejects on `{"error": ...}`, on anything not JSON, on exit, after `timeoutMs` */
  next(what: string, timeoutMs: number): Promise<Record<string, unknown>>;
  /** ends its stdin and waits for it to exit (SIGKILL after 5 s) */
  close(): Promise<void>;
}

/** Starts `node <args>` with JSON lines on stdin/stdout; `name` is for error messages. */
export async function spawnLineChild(args: string[], name: string): Promise<LineChild> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  child.stdin.on('error', () => undefined);
  const lines = createInterface({ input: child.stdout });
  const buffered: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  lines.on('line', (line) => {
    const w = waiting.shift();
    if (w) w(line);
    else buffered.push(line);
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.on('close', () => {
      exited = true;
      resolve();
    }),
  );
  const next = (what: string, timeoutMs: number): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const parse = (line: string): void => {
        clearTimeout(timer);
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          if (typeof o.error === 'string') reject(new Error(`${name}: ${o.error}`));
          else resolve(o);
        } catch {
          reject(new Error(`${name}: unexpected output ${JSON.stringify(line)}`));
        }
      };
      const timer = setTimeout(() => reject(new Error(`${name}: no answer to ${what} within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
      const early = buffered.shift();
      if (early !== undefined) return parse(early);
      if (exited) {
        clearTimeout(timer);
        return reject(new Error(`${name} exited (${what})\n${stderr}`));
      }
      void exit.then(() => reject(new Error(`${name} exited (${what})\n${stderr}`)));
      waiting.push(parse);
    });
  return {
    pid: child.pid,
    send: (line) => void child.stdin.write(`${line}\n`),
    next,
    close: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(t);
    },
  };
}

/**
 * `inChild(module)` when `module` (a file URL) is compiled JavaScript under dist/ (what a child
 * process can run); otherwise, or when that fails, `inProcess()`, with a note on stderr saying so.
 * `what` names the thing started ("load generator"), `sharing` whose event loop it then shares.
 */
export async function inChildOrHere<T>(
  what: string,
  sharing: string,
  module: URL,
  inChild: (module: URL) => Promise<T>,
  inProcess: () => Promise<T>,
): Promise<T> {
  const path = fileURLToPath(module);
  if (path.includes('/dist/') && path.endsWith('.js') && existsSync(path)) {
    try {
      return await inChild(module);
    } catch (err) {
      note(`  (could not start the ${what} in a child process, running it in-process: ${(err as Error).message})`);
    }
  } else {
    note(`  (not running from dist/: the ${what} runs in-process and shares the ${sharing}'s event loop)`);
  }
  return inProcess();
}

// ---------------------------------------------------------------------------------------------
// Stand-ins, preferably in their own process

export interface StandInHandle<S> {
  url: string;
  /** true when it runs in a child process */
  separate: boolean;
  reset(): Promise<void>;
  /** its counters, with `cpuMs`: CPU it used since the last reset (NaN in-process: not told apart from ours) */
  stats(): Promise<S>;
  close(): Promise<void>;
}

/** The stand-ins' common shape (src/standins). */
interface StandIn {
  url: string;
  reset(): void;
  close(): Promise<void>;
}

/**
 * Starts a stand-in: in a child process when running from dist/ (so that its request handling is
 * not charged to the gateway's event loop), else in this process.
 *
 * - `module`: the stand-in's module (`new URL('../src/demo/standins/x.js', import.meta.url)`), exporting
 *   `start(options)`; `startHere()` is the same call, imported, for the in-process fallback;
 * - `stats`: the JavaScript of an object literal's fields over the stand-in `s` for the child
 *   (e.g. `requests: s.stats.requests`); `statsHere(s)` the same in this process. `cpuMs` is added:
 *   the child's CPU since the last reset, NaN in this process (not told apart from ours).
 */
export function startStandIn<T extends StandIn, S extends { cpuMs: number }>(
  name: string,
  o: { module: URL; start: string; options: object; stats: string; startHere: () => Promise<T>; statsHere: (s: T) => Omit<S, 'cpuMs'> },
): Promise<StandInHandle<S>> {
  return inChildOrHere(
    name,
    'gateway',
    o.module,
    (module) => startStandInChild<S>(name, module.href, o.start, o.options, o.stats),
    async () => {
      const s = await o.startHere();
      return {
        url: s.url,
        separate: false,
        reset: async () => s.reset(),
        stats: async () => ({ ...o.statsHere(s), cpuMs: Number.NaN }) as S,
        close: () => s.close(),
      };
    },
  );
}

/** `start(options)` of the compiled module `moduleUrl` in a child process, answering `reset` and `stats` lines. */
async function startStandInChild<S>(
  name: string,
  moduleUrl: string,
  start: string,
  options: object,
  stats: string,
): Promise<StandInHandle<S>> {
  const script = `
import { ${start} } from ${JSON.stringify(moduleUrl)};
import { createInterface } from 'node:readline';
const s = await ${start}(${JSON.stringify(options)});
let cpu0 = process.cpuUsage();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
out({ url: s.url });
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line === 'reset') {
    s.reset();
    if (typeof globalThis.gc === 'function') globalThis.gc();
    cpu0 = process.cpuUsage();
    out({ ok: true });
  } else if (line === 'stats') {
    const c = process.cpuUsage(cpu0);
    out({ ${stats}, cpuMs: (c.user + c.system) / 1000 });
  }
});
rl.on('close', () => { s.close().finally(() => process.exit(0)); });
`;
  const c = await spawnLineChild(['--expose-gc', '--input-type=module', '-e', script], `${name} child`);
  const first = await c.next('startup', 15_000);
  if (typeof first.url !== 'string') throw new Error(`no URL (${JSON.stringify(first)})`);
  let queue: Promise<unknown> = Promise.resolve();
  const ask = (cmd: string): Promise<Record<string, unknown>> => {
    const p = queue.then(() => {
      c.send(cmd);
      return c.next(cmd, 15_000);
    });
    queue = p.catch(() => undefined);
    return p;
  };
  return {
    url: first.url,
    separate: true,
    reset: async () => void (await ask('reset')),
    stats: async () => (await ask('stats')) as unknown as S,
    close: () => c.close(),
  };
}

