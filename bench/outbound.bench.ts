/**
 * The whole outbound leg against the floor of any Kafka consumer in Node.
 *
 * One run, one mock Kafka cluster, one topic of N realistic Amplitude export-shape events
 * (about 1 KB each), read from the beginning four times, alternating:
 *
 *   baseline, gateway, baseline, gateway      (best of each, to damp drift on a shared machine)
 *
 * - baseline `kafkajs_bare_consume`: a bare KafkaJS consumer group with `eachBatch`, the same fetch
 *   settings as the gateway's consumer (50 ms max wait, 4 MB per partition, one partition at a
 *   time), `JSON.parse` of every value, nothing else. This is what any KafkaJS consumer pays.
 * - `outbound_pipeline`: the real Gateway (config parsed by loadConfig, fresh consumer group)
 *   doing Kafka -> map -> batch -> HTTP POST /users/track to a Braze stand-in that accepts
 *   everything (its rate limit and per-object validation off; the gateway's own limiter set far
 *   above what it can reach), offsets committed as in production.
 *
 * Timing, the same definition on both sides: from the first message in hand (the baseline's first
 * `eachBatch` call; the gateway's first `gateway_events_consumed_total` increment, which comes
 * after the first batch of at most 256 messages was mapped) to the last message finished (the
 * baseline: parsed; the gateway: acknowledged by the stand-in, `gateway_events_delivered_total`
 * reaching N). Consumer group join time is excluded from both.
 *
 * The Braze stand-in runs in a child process (`node --input-type=module -e` importing the compiled
 * `dist/src/standins/braze.js`), so its request parsing is not charged to the gateway's event
 * loop. It still shares the machine's cores with the gateway and the broker; its CPU time is
 * reported on stderr.
 *
 * The mock broker keeps only about 5 MB per partition, so the topic gets enough partitions for
 * N events to fit, and the low watermarks are checked to be 0 before anything is measured.
 *
 * Settings (environment, optional): BENCH_OUTBOUND_EVENTS (default 160000),
 * BENCH_OUTBOUND_PARTITIONS (40), BENCH_BRAZE_CONCURRENCY (8), BENCH_BRAZE_LINGER_MS (5),
 * BENCH_OUTBOUND_RUNS (2 of each), BENCH_OUTBOUND_CPU_PROFILE (a directory: each run is profiled with
 * the inspector and written there as `outbound-<bench>-run<N>.cpuprofile`; profiling slows the runs).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kafka, logLevel, type Consumer } from 'kafkajs';
import { loadConfig } from '../src/config/config.js';
import { sampleEvent } from '../src/demo/sample-events.js';
import { Gateway } from '../src/gateway.js';
import { startMockCluster, type MockCluster } from '../src/kafka/mock-cluster.js';
import { startBrazeStandIn, type BrazeStandIn } from '../src/standins/braze.js';
import { cpuMeter, fmt, gcIfExposed, note, printResult, roundRatio, silentLogger, sleep, type BenchResult } from './common.js';

const EVENTS = envInt('BENCH_OUTBOUND_EVENTS', 160_000);
const PARTITIONS = envInt('BENCH_OUTBOUND_PARTITIONS', 40);
/** 4, 8, 16 and 32 measured the same within noise here (requests are not what limits); 8 keeps connections few */
const CONCURRENCY = envInt('BENCH_BRAZE_CONCURRENCY', 8);
const LINGER_MS = envInt('BENCH_BRAZE_LINGER_MS', 5);
const RUNS = envInt('BENCH_OUTBOUND_RUNS', 2);
const USERS = 50_000;
const TOPIC = 'bench.amplitude.events';
const API_KEY = 'bench-braze-key';
/** the mock's retention per partition (rdkafka_mock.c: 5 MiB); staying under 90 % of it leaves room for batch overhead */
const MOCK_PARTITION_BYTES = 5 * 1024 * 1024;
const RUN_TIMEOUT_MS = 180_000;
const PROFILE_DIR = process.env.BENCH_OUTBOUND_CPU_PROFILE;
/** BENCH_OUTBOUND_TRACE=1: every 250 ms of a gateway run, print consumed, delivered, pending and event-loop use */
const TRACE = process.env.BENCH_OUTBOUND_TRACE === '1';

function envInt(name: string, def: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Data

/**
 * `sampleEvent` (90 % export shape) filled out with the fields a real Amplitude export row carries
 * (upload and processing times, device, location, session, `data`...), which the mapper reads past
 * or drops: about 1 KB per event, like production traffic, instead of sampleEvent's ~460 B.
 */
export function benchEvent(i: number): { key: string; value: string } {
  const s = sampleEvent(i, { users: USERS, ingestShare: 0.1 });
  const v = s.value;
  const props = v.event_properties as Record<string, unknown>;
  props.path = `/app/${['home', 'search', 'settings', 'reports', 'billing'][i % 5]}/${i % 997}`;
  props.referrer = i % 2 === 0 ? 'https://www.google.com/' : '';
  props.duration_ms = (i * 7919) % 30_000;
  if (typeof v.client_event_time === 'string') {
    const t = v.client_event_time;
    const user = i % USERS;
    Object.assign(v, {
      app: 187520,
      client_upload_time: t,
      server_received_time: t,
      server_upload_time: t,
      processed_time: t,
      session_id: Date.parse(t) - 60_000,
      event_id: i % 5000,
      groups: {},
      group_properties: {},
      version_name: '3.14.2',
      os_version: '122',
      device_type: 'Mac',
      device_family: 'Mac',
      region: 'Bavaria',
      city: 'Munich',
      dma: null,
      language: 'English',
      ip_address: `10.${user % 251}.${(user >> 8) % 251}.${i % 251}`,
      paying: null,
      is_attribution_event: false,
      sample_rate: null,
      data: { first_event: false, group_first_event: {}, group_ids: {} },
    });
  }
  return { key: s.key, value: JSON.stringify(v) };
}

interface Produced {
  count: number;
  valueBytes: number;
  seconds: number;
}

async function produceTopic(bootstrap: string, n: number): Promise<Produced> {
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
        const messages: Array<{ key: string; value: string }> = [];
        for (let i = b; i < Math.min(n, b + BATCH); i++) {
          const m = benchEvent(i);
          valueBytes += Buffer.byteLength(m.value);
          messages.push(m);
        }
        sends.push(producer.send({ topic: TOPIC, acks: -1, messages }));
      }
      await Promise.all(sends);
    }
  } finally {
    await producer.disconnect();
  }
  return { count: n, valueBytes, seconds: (performance.now() - started) / 1000 };
}

/** Every partition must still start at offset 0 (the mock drops old data past ~5 MB) and the total must be N. */
async function verifyTopic(bootstrap: string, n: number): Promise<{ perPartitionMax: number; perPartitionMin: number }> {
  const admin = new Kafka({ clientId: 'bench-admin', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(TOPIC);
    let total = 0;
    let max = 0;
    let min = Number.POSITIVE_INFINITY;
    const truncated: string[] = [];
    for (const p of offsets) {
      const low = Number(p.low);
      const high = Number(p.high);
      if (low !== 0) truncated.push(`partition ${p.partition} starts at ${low}`);
      total += high - low;
      max = Math.max(max, high);
      min = Math.min(min, high);
    }
    if (offsets.length !== PARTITIONS) throw new Error(`outbound bench: topic has ${offsets.length} partitions, expected ${PARTITIONS}`);
    if (truncated.length > 0 || total !== n) {
      throw new Error(
        `outbound bench: the mock broker dropped data (it keeps ~5 MB per partition): ${total} of ${n} events left; ` +
          `${truncated.slice(0, 5).join('; ')}. Use more partitions (BENCH_OUTBOUND_PARTITIONS) or fewer events (BENCH_OUTBOUND_EVENTS).`,
      );
    }
    return { perPartitionMax: max, perPartitionMin: min };
  } finally {
    await admin.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// The Braze stand-in, preferably in its own process

interface StandInStats {
  requests: number;
  acceptedObjects: number;
  events: number;
  byStatus: Record<string, number>;
  /** CPU the stand-in used since the last reset */
  cpuMs: number;
}

interface StandInHandle {
  url: string;
  /** true when it runs in a child process */
  separate: boolean;
  reset(): Promise<void>;
  stats(): Promise<StandInStats>;
  close(): Promise<void>;
}

const CHILD_SCRIPT = (moduleUrl: string): string => `
import { startBrazeStandIn } from ${JSON.stringify(moduleUrl)};
import { createInterface } from 'node:readline';
const s = await startBrazeStandIn({ apiKey: ${JSON.stringify(API_KEY)}, rateLimit: false, validate: false });
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
    out({ requests: s.stats.requests, acceptedObjects: s.stats.acceptedObjects, events: s.received.events.length,
          byStatus: s.stats.byStatus, cpuMs: (c.user + c.system) / 1000 });
  }
});
rl.on('close', () => { s.close().finally(() => process.exit(0)); });
`;

async function startStandInChild(moduleUrl: string): Promise<StandInHandle> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD_SCRIPT(moduleUrl)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  child.stdin.on('error', () => undefined);
  const lines = createInterface({ input: child.stdout });
  const waiting: Array<(line: string) => void> = [];
  lines.on('line', (line) => waiting.shift()?.(line));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const next = (what: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Braze stand-in child: no answer to ${what}\n${stderr}`)), 15_000);
      void exited.then(() => reject(new Error(`Braze stand-in child exited (${what})\n${stderr}`)));
      waiting.push((line) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line) as Record<string, unknown>);
        } catch {
          reject(new Error(`Braze stand-in child: unexpected output ${JSON.stringify(line)}`));
        }
      });
    });
  let queue: Promise<unknown> = Promise.resolve();
  const ask = (cmd: string): Promise<Record<string, unknown>> => {
    const p = queue.then(() => {
      const answer = next(cmd);
      child.stdin.write(`${cmd}\n`);
      return answer;
    });
    queue = p.catch(() => undefined);
    return p;
  };
  const first = await next('startup');
  if (typeof first.url !== 'string') throw new Error(`Braze stand-in child: no URL (${JSON.stringify(first)})`);
  return {
    url: first.url,
    separate: true,
    reset: async () => void (await ask('reset')),
    stats: async () => (await ask('stats')) as unknown as StandInStats,
    close: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function startStandInHere(): Promise<StandInHandle> {
  const s: BrazeStandIn = await startBrazeStandIn({ apiKey: API_KEY, rateLimit: false, validate: false });
  return {
    url: s.url,
    separate: false,
    reset: async () => s.reset(),
    // in-process: its CPU cannot be told apart from the gateway's
    stats: async () => ({ requests: s.stats.requests, acceptedObjects: s.stats.acceptedObjects, events: s.received.events.length, byStatus: { ...s.stats.byStatus }, cpuMs: Number.NaN }),
    close: () => s.close(),
  };
}

async function startStandIn(): Promise<StandInHandle> {
  const compiled = new URL('../src/standins/braze.js', import.meta.url);
  if (compiled.pathname.includes('/dist/') && existsSync(fileURLToPath(compiled))) {
    try {
      return await startStandInChild(compiled.href);
    } catch (err) {
      note(`  (could not start the Braze stand-in in a child process, running it in-process: ${(err as Error).message})`);
    }
  } else {
    note('  (not running from dist/: the Braze stand-in runs in-process and shares the gateway\'s event loop)');
  }
  return startStandInHere();
}

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
function brokerPid(cluster: MockCluster): number | undefined {
  const child = (cluster as unknown as { child?: { pid?: number } }).child;
  return typeof child?.pid === 'number' ? child.pid : undefined;
}

interface Window {
  cpuMs: number;
  brokerCpuMs: number | undefined;
  /** machine-wide busy share over the window, 0..1 of all cores */
  machineBusy: number | undefined;
}

function windowMeter(broker: number | undefined): () => Window {
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
// The two contenders

interface RunResult {
  rate: number;
  seconds: number;
  count: number;
  window: Window;
  extra: string;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`outbound bench: ${what()} after ${ms} ms`)), ms);
    }),
  ]);
}

async function runBaseline(bootstrap: string, n: number, run: number, broker: number | undefined): Promise<RunResult> {
  const kafka = new Kafka({ clientId: 'bench-baseline', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  // Fetch settings as in src/kafka/consumer-loop.ts, so the comparison is about what happens after the fetch.
  const consumer: Consumer = kafka.consumer({
    groupId: `bench-baseline-${run}-${Date.now()}`,
    maxWaitTimeInMs: 50,
    maxBytesPerPartition: 4 * 1024 * 1024,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
  });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
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
              meter = windowMeter(broker);
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
      () => `baseline consumer read ${count} of ${n}`,
    );
  } finally {
    await consumer.disconnect();
  }
  if (sink === 0 || first === undefined || window === undefined) throw new Error('outbound bench: baseline read nothing');
  const seconds = (last - first) / 1000;
  return { rate: count / seconds, seconds, count, window, extra: '' };
}

/** Calls `onInc(n)` whenever the counter is incremented (prom-client: inc(), inc(n), inc(labels), inc(labels, n)). */
function tapCounter(counter: object, onInc: (n: number) => void): void {
  const c = counter as { inc: (...args: unknown[]) => void };
  const original = c.inc.bind(counter);
  c.inc = (...args: unknown[]): void => {
    const n = typeof args[0] === 'number' ? args[0] : typeof args[1] === 'number' ? args[1] : 1;
    onInc(n);
    original(...args);
  };
}

async function runGateway(
  bootstrap: string,
  n: number,
  run: number,
  standIn: StandInHandle,
  broker: number | undefined,
): Promise<RunResult> {
  const config = loadConfig({
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-gateway-${run}-${Date.now()}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_AMPLITUDE_EVENTS: TOPIC,
    TOPIC_DEAD_LETTER: 'bench.dead-letter',
    BRAZE_REST_ENDPOINT: standIn.url,
    BRAZE_API_KEY: API_KEY,
    BRAZE_CONCURRENCY: String(CONCURRENCY),
    BRAZE_LINGER_MS: String(LINGER_MS),
    // far above the ~1,000 requests/s the target needs: the limiter must not be what binds
    BRAZE_RATE_LIMIT_REQUESTS: '10000000',
    BRAZE_RATE_LIMIT_WINDOW_MS: '1000',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  });
  const gateway = new Gateway({ config, listen: false, logger: silentLogger() });
  let first: number | undefined;
  let last = 0;
  let delivered = 0;
  let meter: (() => Window) | undefined;
  let window: Window | undefined;
  let finished: (() => void) | undefined;
  const allDelivered = new Promise<void>((resolve) => (finished = resolve));
  let consumed = 0;
  tapCounter(gateway.metrics.consumed, (k) => {
    consumed += k;
    if (first === undefined) {
      first = performance.now();
      meter = windowMeter(broker);
    }
  });
  tapCounter(gateway.metrics.delivered, (k) => {
    delivered += k;
    if (delivered >= n && window === undefined) {
      last = performance.now();
      window = meter?.();
      finished?.();
    }
  });
  // Events skipped or dead-lettered would never count as delivered: watch for them so a run ends.
  let lost = 0;
  const watch = setInterval(() => {
    void Promise.all([gateway.metrics.value('gateway_events_skipped_total'), gateway.metrics.value('gateway_events_dead_lettered_total')]).then(
      ([s, d]) => {
        lost = s + d;
        if (delivered + lost >= n && window === undefined) {
          last = performance.now();
          window = meter?.();
          finished?.();
        }
      },
    );
  }, 250);
  let elu = performance.eventLoopUtilization();
  let prev = { consumed: 0, delivered: 0, at: performance.now() };
  const trace = TRACE
    ? setInterval(() => {
        const now = performance.now();
        const e = performance.eventLoopUtilization(elu);
        elu = performance.eventLoopUtilization();
        const dt = (now - prev.at) / 1000;
        note(
          `    t=${first === undefined ? '-' : ((now - first) / 1000).toFixed(2)}s consumed ${fmt((consumed - prev.consumed) / dt)}/s delivered ${fmt((delivered - prev.delivered) / dt)}/s ` +
            `pending ${fmt(gateway.outboundPending)} loop ${(e.utilization * 100).toFixed(0)} %`,
        );
        prev = { consumed, delivered, at: now };
      }, 250)
    : undefined;
  try {
    await gateway.start();
    await withTimeout(allDelivered, RUN_TIMEOUT_MS, () => `gateway delivered ${delivered} of ${n}`);
  } finally {
    clearInterval(watch);
    if (trace) clearInterval(trace);
    await gateway.stop(10_000);
  }
  if (first === undefined || window === undefined) throw new Error('outbound bench: the gateway delivered nothing');
  const seconds = (last - first) / 1000;
  const requests = await gateway.metrics.value('gateway_destination_requests_total');
  const ok = await gateway.metrics.value('gateway_destination_requests_total', { status: '201' });
  const latency = await histogramMeanMs(gateway, 'gateway_destination_request_duration_seconds');
  const commits = await gateway.metrics.value('gateway_offset_commits_total');
  return {
    rate: delivered / seconds,
    seconds,
    count: delivered,
    window,
    extra: `${fmt(requests)} requests (${fmt(ok)} answered 201), ${(delivered / Math.max(1, requests)).toFixed(1)} events/request, mean request time ${
      latency === undefined ? '?' : latency.toFixed(1)
    } ms (as the gateway sees it, event-loop delays included), ${fmt(commits)} offset commits${
      lost > 0 ? `, ${fmt(lost)} skipped or dead-lettered` : ''
    }`,
  };
}

/** Runs `fn` under the V8 CPU profiler when BENCH_OUTBOUND_CPU_PROFILE names a directory. */
async function profiled<T>(label: string, fn: () => Promise<T>): Promise<T> {
  if (!PROFILE_DIR) return fn();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(PROFILE_DIR, { recursive: true });
    const file = join(PROFILE_DIR, `outbound-${label}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    note(`  CPU profile: ${file}`);
  }
}

/** mean of a prom-client histogram, in ms (undefined when absent or empty) */
async function histogramMeanMs(gateway: Gateway, name: string): Promise<number | undefined> {
  const metric = gateway.metrics.registry.getSingleMetric(name);
  if (!metric) return undefined;
  const data = await metric.get();
  let sum = 0;
  let count = 0;
  for (const v of data.values) {
    const m = (v as { metricName?: string }).metricName;
    if (m === `${name}_sum`) sum += v.value;
    else if (m === `${name}_count`) count += v.value;
  }
  return count > 0 ? (sum / count) * 1000 : undefined;
}

function describe(name: string, r: RunResult): string {
  const w = r.window;
  const parts = [
    `${name}: ${fmt(r.count)} events in ${r.seconds.toFixed(2)} s = ${fmt(r.rate)} events/s`,
    `this process ${fmt(w.cpuMs)} ms CPU (${((w.cpuMs * 1000) / r.count).toFixed(1)} us/event, ${((w.cpuMs / 1000 / r.seconds) * 100).toFixed(0)} % of a core)`,
  ];
  if (w.brokerCpuMs !== undefined) parts.push(`broker ${fmt(w.brokerCpuMs)} ms CPU`);
  if (w.machineBusy !== undefined) parts.push(`machine ${(w.machineBusy * 100).toFixed(0)} % busy`);
  if (r.extra) parts.push(r.extra);
  return parts.join('; ');
}

// ---------------------------------------------------------------------------------------------

export async function runOutboundBench(): Promise<BenchResult[]> {
  const cluster = await startMockCluster();
  let standIn: StandInHandle | undefined;
  try {
    await cluster.createTopic(TOPIC, PARTITIONS);
    const produced = await produceTopic(cluster.bootstrap, EVENTS);
    const avg = produced.valueBytes / produced.count;
    const { perPartitionMax, perPartitionMin } = await verifyTopic(cluster.bootstrap, EVENTS);
    note(
      `  topic ${TOPIC}: ${fmt(EVENTS)} events, ${PARTITIONS} partitions (${fmt(perPartitionMin)}..${fmt(perPartitionMax)} per partition, ` +
        `~${((perPartitionMax * avg) / 1024 / 1024).toFixed(1)} of ${MOCK_PARTITION_BYTES / 1024 / 1024} MB retention at most), avg value ${Math.round(avg)} B; ` +
        `produced in ${produced.seconds.toFixed(1)} s; low watermarks all 0`,
    );
    const braze = await startStandIn();
    standIn = braze;
    note(
      `  Braze stand-in at ${standIn.url} (${standIn.separate ? 'child process' : 'in this process'}; rate limit and validation off); ` +
        `gateway BRAZE_CONCURRENCY=${CONCURRENCY} BRAZE_LINGER_MS=${LINGER_MS} KAFKA_FETCH_MAX_WAIT_MS=50, per-array cap 75`,
    );
    const broker = brokerPid(cluster);

    let bestBaseline: RunResult | undefined;
    let bestGateway: RunResult | undefined;
    for (let run = 1; run <= RUNS; run++) {
      gcIfExposed();
      await sleep(200);
      const b = await profiled(`kafkajs_bare_consume-run${run}`, () => runBaseline(cluster.bootstrap, EVENTS, run, broker));
      note(`  run ${run} ${describe('kafkajs_bare_consume', b)}`);
      if (!bestBaseline || b.rate > bestBaseline.rate) bestBaseline = b;

      gcIfExposed();
      await standIn.reset();
      await sleep(200);
      const g = await profiled(`outbound_pipeline-run${run}`, () => runGateway(cluster.bootstrap, EVENTS, run, braze, broker));
      const st = await standIn.stats();
      const standInCost = Number.isFinite(st.cpuMs)
        ? `; Braze stand-in ${fmt(st.cpuMs)} ms CPU (${((st.cpuMs * 1000) / Math.max(1, st.events)).toFixed(1)} us/event, ${fmt(st.requests)} requests, ${fmt(st.events)} events stored)`
        : `; Braze stand-in: ${fmt(st.requests)} requests, ${fmt(st.events)} events (in-process, CPU included above)`;
      note(`  run ${run} ${describe('outbound_pipeline', g)}${standInCost}`);
      if (!bestGateway || g.rate > bestGateway.rate) bestGateway = g;
    }
    if (!bestBaseline || !bestGateway) throw new Error('outbound bench: no runs');
    const ratio = bestGateway.rate / bestBaseline.rate;
    note(
      `  best: gateway ${fmt(bestGateway.rate)} events/s, bare KafkaJS ${fmt(bestBaseline.rate)} events/s, ratio ${roundRatio(ratio)} ` +
        `(target: 75,000 events/s and ratio >= 0.8)`,
    );
    return [
      { bench: 'kafkajs_bare_consume', value: Math.round(bestBaseline.rate), unit: 'events/s', baseline: 'kafkajs_bare_consume', ratio: 1 },
      { bench: 'outbound_pipeline', value: Math.round(bestGateway.rate), unit: 'events/s', baseline: 'kafkajs_bare_consume', ratio: roundRatio(ratio) },
    ];
  } finally {
    await standIn?.close().catch(() => undefined);
    await cluster.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await runOutboundBench();
  for (const r of results) printResult(r);
}
