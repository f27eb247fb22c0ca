/**
 * The inbound leg (Braze Currents -> Kafka -> Amplitude) in two measurements, one run, one mock
 * Kafka cluster, each against the floor of what any Node service doing the same job pays:
 *
 * 1. Ingestion, `currents_ingest` vs `fastify_parse_only`: events/s accepted by `POST /currents`.
 *    A load generator in a child process posts batches of 100 realistic Currents events
 *    (`benchCurrentsEvent`, ~700 B each, ~70 KB per body; `Authorization: Bearer`) over an undici
 *    Pool of BENCH_INBOUND_CONNECTIONS keep-alive connections, one request in flight on each.
 *    - `currents_ingest`: the real Gateway (config parsed by loadConfig) with only the Currents
 *      route on (`AMPLITUDE_API_KEY` empty, no Braze settings), so every 200 means: token checked,
 *      body parsed and validated, every event written to a fresh Currents topic and acknowledged by
 *      Kafka (acks=all). After each run the topic's high watermarks must add up to the events that
 *      were answered 200.
 *    - baseline `fastify_parse_only`: a bare Fastify app (the same fastify package) with one
 *      `POST /currents` route whose content-type parser hands over the raw Buffer, then
 *      `JSON.parse` of it, answering 200 with the same small JSON body. No auth, no Kafka.
 *    Both are served from this process, driven by the same load generator with the same bodies.
 *    Timing, the same definition on both sides, taken by the load generator: from the first request
 *    of the measured phase sent to the last response of it received, after a warm-up phase
 *    (BENCH_INBOUND_WARMUP_BATCHES, uncounted) at the same concurrency.
 *
 * 2. Delivery, `amplitude_delivery` vs `kafkajs_bare_consume`: events/s from the Currents topic to
 *    an Amplitude stand-in. The topic is filled first with N events written as the route writes
 *    them (JSON of the validated event, key = device_id, the `received-at` header).
 *    - `amplitude_delivery`: the real Gateway with only the Amplitude leg on (no `CURRENTS_TOKEN`, no
 *      Braze settings), per-id limiter on at its defaults (30 events/s per id) over 100,000
 *      devices/users, so it never binds (checked: no `wait` decisions, nothing parked), a small
 *      `AMPLITUDE_LINGER_MS`, fresh consumer group, offsets committed as in production; the
 *      Amplitude stand-in accepts everything (`perIdPerSecond: false`) and runs in a child process.
 *    - baseline `kafkajs_bare_consume`: a bare KafkaJS consumer group with `eachBatch`, the gateway
 *      consumer's fetch settings (50 ms max wait, 4 MB per partition, one partition at a time),
 *      `JSON.parse` of every value, nothing else (as in bench/outbound.bench.ts).
 *    Timing as in the outbound bench: first message in hand (baseline: first `eachBatch`; gateway:
 *    first `gateway_events_consumed_total` increment) to the last message finished (parsed;
 *    acknowledged by the stand-in, `gateway_events_delivered_total` reaching N). Group joins are
 *    excluded from both.
 *
 * Runs alternate (baseline, gateway, baseline, gateway; best of each), to damp drift on a shared
 * machine. The load generator, the stand-in and the broker share the machine's cores with this
 * process; their CPU time is reported on stderr.
 *
 * Settings (environment, optional): BENCH_INBOUND_BATCHES (measured batches per ingestion run,
 * default 3000), BENCH_INBOUND_WARMUP_BATCHES (300), BENCH_INBOUND_CONNECTIONS (32),
 * BENCH_INBOUND_INGEST_PARTITIONS (64), BENCH_INBOUND_EVENTS (delivery events, 160000),
 * BENCH_INBOUND_PARTITIONS (delivery topic partitions, 40), BENCH_AMPLITUDE_CONCURRENCY (8),
 * BENCH_AMPLITUDE_LINGER_MS (5), BENCH_INBOUND_RUNS (2 of each), BENCH_INBOUND_ONLY (`ingest` or
 * `delivery`: run one half), BENCH_INBOUND_RECEIVED_AT (`0`: fill the delivery topic without the
 * route's `received-at` header, a diagnostic of the leg's linger), BENCH_INBOUND_CPU_PROFILE (a directory: each run of this process is
 * profiled with the inspector and written there as `inbound-<bench>-run<N>.cpuprofile`).
 *
 * Run directly: `node dist/bench/inbound.bench.js`. The same file is the load generator's child
 * process (`node dist/bench/inbound.bench.js --inbound-load-generator`).
 */
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Fastify from 'fastify';
import type { Message } from 'kafkajs';
import { Pool } from 'undici';
import { loadConfig } from '../src/config/config.js';
import { sampleCurrentsEvent } from '../src/demo/sample-currents.js';
import { Gateway } from '../src/gateway.js';
import { validateCurrentsEvent } from '../src/currents-ingest/currents-body.js';
import { RECEIVED_AT_HEADER } from '../src/currents-ingest/currents-route.js';
import type { CurrentsEvent } from '../src/currents-ingest/currents-types.js';
import { startMockCluster, type MockCluster } from '../src/demo/mock-cluster.js';
import { startAmplitudeStandIn, type AmplitudeStandIn, type AmplitudeStandInOptions } from '../src/demo/standins/amplitude.js';
import { cpuMeter, envInt, fmt, gcIfExposed, note, printResult, roundRatio, silentLogger, versusResults, type BenchResult } from './common.js';
import {
  alternate,
  brokerPid,
  inChildOrHere,
  measureDelivery,
  measureDeliveryAtStandIn,
  workerCpu,
  MOCK_PARTITION_BYTES,
  produceTopic,
  RUN_TIMEOUT_MS,
  runBareConsumer,
  spawnLineChild,
  startStandIn,
  topicOffsets,
  wholeTopic,
  windowMeter,
} from './support.js';
import type { RunResult, StandInHandle, Window } from './support.js';

const BATCHES = envInt('BENCH_INBOUND_BATCHES', 3_000);
const WARMUP_BATCHES = envInt('BENCH_INBOUND_WARMUP_BATCHES', 300);
const CONNECTIONS = envInt('BENCH_INBOUND_CONNECTIONS', 32);
const INGEST_PARTITIONS = envInt('BENCH_INBOUND_INGEST_PARTITIONS', 64);
const EVENTS = envInt('BENCH_INBOUND_EVENTS', 160_000);
const PARTITIONS = envInt('BENCH_INBOUND_PARTITIONS', 40);
const AMP_CONCURRENCY = envInt('BENCH_AMPLITUDE_CONCURRENCY', 8);
const AMP_LINGER_MS = envInt('BENCH_AMPLITUDE_LINGER_MS', 5);
const RUNS = envInt('BENCH_INBOUND_RUNS', 2);
/** GATEWAY_WORKERS of the `amplitude_delivery_workers` runs */
const WORKERS = envInt('BENCH_INBOUND_WORKERS', 2);
const ONLY = process.env.BENCH_INBOUND_ONLY;
/** what Braze's Custom HTTP connector sends per request by default */
const EVENTS_PER_BATCH = 100;
/** distinct devices and users: at most a couple of events each per run, far under 30/s per id */
const DEVICES = 100_000;
const TOKEN = 'bench-currents-token';
const AMP_KEY = 'bench-amplitude-key';
const DELIVERY_TOPIC = 'braze.currents';
const PROFILE_DIR = process.env.BENCH_INBOUND_CPU_PROFILE;
const LOAD_GENERATOR_FLAG = '--inbound-load-generator';
const INGEST_TARGET = 30_000;
/** BENCH_INBOUND_RECEIVED_AT=0: fill the delivery topic without the route's `received-at` header (a diagnostic, not what the route writes) */
const WITH_RECEIVED_AT = process.env.BENCH_INBOUND_RECEIVED_AT !== '0';

// ---------------------------------------------------------------------------------------------
// Data

const hex = (n: number, len: number): string => (n >>> 0).toString(16).padStart(len, '0').slice(-len);
/** a deterministic UUID-shaped id */
const uuid = (a: number, b: number): string => `${hex(a * 2654435761, 8)}-${hex(b, 4)}-4${hex(a, 3)}-a${hex(b * 40503, 3)}-${hex(a ^ (b * 7919), 8)}${hex(b, 4)}`;
const APP_GROUP_ID = uuid(17, 3);
const USER_AGENT =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36';

/**
 * `sampleCurrentsEvent` filled out with the fields a real Custom HTTP connector event carries
 * (braze-currents.md §2 and §4: workspace id, ad ids, campaign / Canvas / variation ids and names,
 * send ids, user agent and mailbox details, nulls where Braze sends nulls), which the mapping passes
 * through as event properties or reads past: about 700 B per event instead of ~350 B.
 */
export function benchCurrentsEvent(i: number, users = DEVICES): CurrentsEvent {
  const e = sampleCurrentsEvent(i, { users });
  const u = i % users;
  const p = e.properties;
  p.app_group_id = APP_GROUP_ID;
  const ad = { ad_id: uuid(u, 11), ad_id_type: 'ios_idfa', ad_tracking_enabled: u % 3 !== 0 };
  switch (i % 4) {
    case 0:
      Object.assign(p, ad);
      Object.assign(p.custom_properties as Record<string, unknown>, {
        world: `world-${i % 12}`,
        difficulty: ['easy', 'normal', 'hard'][i % 3],
        duration_s: (i * 7919) % 900,
        boosters_used: i % 4,
        source: i % 2 === 0 ? 'push' : 'organic',
      });
      break;
    case 1:
      Object.assign(p, {
        campaign_id: uuid(i % 40, 1),
        campaign_name: 'Welcome series – day 3',
        message_variation_id: uuid(i % 40, 2),
        message_variation_name: 'Variant B',
        canvas_id: null,
        canvas_name: null,
        canvas_variation_id: null,
        canvas_variation_name: null,
        canvas_step_id: null,
        canvas_step_name: null,
        send_id: `send-${hex(i, 12)}`,
        user_agent: USER_AGENT,
        ip_pool: 'marketing-pool-1',
        esp: 'SendGrid',
        from_domain: 'mail.example.com',
        is_amp: false,
        machine_open: null,
        device_class: 'Desktop',
        device_os: 'Mac OS X',
        browser: 'Chrome',
        mailbox_provider: 'Gmail',
      });
      break;
    case 2:
      Object.assign(p, ad);
      Object.assign(p.purchase_properties as Record<string, unknown>, { sku: `SKU-${i % 500}`, quantity: 1 + (i % 3), coupon: i % 5 === 0 ? 'SPRING24' : null, store: 'app_store' });
      break;
    default:
      Object.assign(p, ad, { session_id: uuid(i, 5) });
  }
  return e;
}

/** One request body: `{"events": [...]}` with events `from`..`from+count-1`. */
function batchBody(from: number, count: number): Buffer {
  const events: CurrentsEvent[] = [];
  for (let i = from; i < from + count; i++) events.push(benchCurrentsEvent(i));
  return Buffer.from(JSON.stringify({ events }));
}

/** What the route writes for an event: the validated event as JSON, keyed by its device id. */
export function storedForm(i: number, users = DEVICES): { key: string; value: string } {
  const v = validateCurrentsEvent(benchCurrentsEvent(i, users));
  if (!v.ok) throw new Error(`inbound bench: sample event ${i} does not validate: ${v.message}`);
  return { key: v.event.user.device_id ?? '', value: JSON.stringify(v.event) };
}

// ---------------------------------------------------------------------------------------------
// The load generator (runs in a child process, or here as a fallback)

interface LoadRequest {
  url: string;
  token: string;
  warmup: number;
  batches: number;
  connections: number;
}

interface LoadResult {
  seconds: number;
  requests: number;
  events: number;
  byStatus: Record<string, number>;
  /** responses whose body did not say `stored: 100` (the baseline answers the same way) */
  unexpectedBodies: number;
  firstError: string;
  p50Ms: number;
  p99Ms: number;
  /** CPU of the load generator during the measured phase */
  cpuMs: number;
}

/** The bodies, one per batch index; event ids stay unique within a run (warm-up included). */
function makeBodies(n: number): { bodies: Buffer[]; bytes: number } {
  const bodies: Buffer[] = [];
  let bytes = 0;
  for (let b = 0; b < n; b++) {
    const body = batchBody(b * EVENTS_PER_BATCH, EVENTS_PER_BATCH);
    bytes += body.length;
    bodies.push(body);
  }
  return { bodies, bytes };
}

async function generateLoad(req: LoadRequest, bodies: Buffer[], onMeasuring: () => void): Promise<LoadResult> {
  const u = new URL(req.url);
  const pool = new Pool(u.origin, { connections: req.connections, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${req.token}`, 'braze-currents-version': '1' };
  const byStatus: Record<string, number> = {};
  let unexpectedBodies = 0;
  let firstError = '';
  const phase = async (fromBatch: number, count: number, latencies: Float64Array | undefined): Promise<void> => {
    let next = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        const k = next++;
        if (k >= count) return;
        const body = bodies[(fromBatch + k) % bodies.length] as Buffer;
        const t0 = performance.now();
        try {
          const res = await pool.request({ path: u.pathname, method: 'POST', headers, body });
          const text = await res.body.text();
          if (latencies) latencies[k] = performance.now() - t0;
          const s = String(res.statusCode);
          byStatus[s] = (byStatus[s] ?? 0) + 1;
          if (res.statusCode !== 200) {
            if (!firstError) firstError = `${s} ${text.slice(0, 200)}`;
          } else if (!text.includes(`"stored":${EVENTS_PER_BATCH}`)) {
            unexpectedBodies++;
            if (!firstError) firstError = `200 ${text.slice(0, 200)}`;
          }
        } catch (err) {
          byStatus.error = (byStatus.error ?? 0) + 1;
          if (!firstError) firstError = (err as Error).message;
        }
      }
    };
    await Promise.all(Array.from({ length: req.connections }, worker));
  };
  try {
    await phase(0, req.warmup, undefined);
    for (const k of Object.keys(byStatus)) delete byStatus[k];
    unexpectedBodies = 0;
    firstError = '';
    gcIfExposed();
    const latencies = new Float64Array(req.batches);
    onMeasuring();
    const cpu = cpuMeter();
    const t0 = performance.now();
    await phase(req.warmup, req.batches, latencies);
    const seconds = (performance.now() - t0) / 1000;
    const cpuMs = cpu().totalMs;
    latencies.sort();
    const ok = byStatus['200'] ?? 0;
    return {
      seconds,
      requests: req.batches,
      events: (ok - unexpectedBodies) * EVENTS_PER_BATCH,
      byStatus,
      unexpectedBodies,
      firstError,
      p50Ms: latencies[Math.floor(latencies.length * 0.5)] ?? Number.NaN,
      p99Ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? Number.NaN,
      cpuMs,
    };
  } finally {
    await pool.close();
  }
}

/** Entry of the child process: `prepare N` builds the bodies, a JSON LoadRequest runs one load. */
async function loadGeneratorChild(): Promise<void> {
  const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
  let bodies: Buffer[] = [];
  const rl = createInterface({ input: process.stdin });
  let work: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    work = work.then(async () => {
      try {
        if (line.startsWith('prepare ')) {
          const made = makeBodies(Number(line.slice('prepare '.length)));
          bodies = made.bodies;
          out({ bodies: bodies.length, bytes: made.bytes });
        } else {
          const req = JSON.parse(line) as LoadRequest;
          const r = await generateLoad(req, bodies, () => out({ measuring: true }));
          out(r);
        }
      } catch (err) {
        out({ error: (err as Error).stack ?? String(err) });
      }
    });
  });
  await new Promise<void>((resolve) => rl.on('close', () => resolve()));
  await work;
}

// ---------------------------------------------------------------------------------------------
// Starting the load generator: this file, compiled, as its own child process

interface LoadGenerator {
  separate: boolean;
  pid: number | undefined;
  prepare(n: number): Promise<{ bytes: number }>;
  run(req: LoadRequest, onMeasuring: () => void): Promise<LoadResult>;
  close(): Promise<void>;
}

function startLoadGenerator(): Promise<LoadGenerator> {
  return inChildOrHere<LoadGenerator>(
    'load generator',
    'server',
    new URL(import.meta.url),
    async (self) => {
      const c = await spawnLineChild(['--expose-gc', fileURLToPath(self), LOAD_GENERATOR_FLAG], 'load generator child');
      return {
        separate: true,
        pid: c.pid,
        prepare: async (n) => {
          c.send(`prepare ${n}`);
          return (await c.next('prepare', 120_000)) as unknown as { bytes: number };
        },
        run: async (req, onMeasuring) => {
          c.send(JSON.stringify(req));
          await c.next('warm-up', RUN_TIMEOUT_MS);
          onMeasuring();
          return (await c.next('load', RUN_TIMEOUT_MS)) as unknown as LoadResult;
        },
        close: () => c.close(),
      };
    },
    async () => {
      let bodies: Buffer[] = [];
      return {
        separate: false,
        pid: undefined,
        prepare: async (n) => {
          const made = makeBodies(n);
          bodies = made.bodies;
          return { bytes: made.bytes };
        },
        run: (req, onMeasuring) => generateLoad(req, bodies, onMeasuring),
        close: async () => undefined,
      };
    },
  );
}

// ---------------------------------------------------------------------------------------------
// The Amplitude stand-in, preferably in its own process

interface StandInStats {
  requests: number;
  acceptedEvents: number;
  duplicateEvents: number;
  byStatus: Record<string, number>;
  cpuMs: number;
}

const STANDIN_OPTIONS: AmplitudeStandInOptions = { apiKey: AMP_KEY, perIdPerSecond: false };

const STAND_IN = {
  module: new URL('../src/demo/standins/amplitude.js', import.meta.url),
  start: 'startAmplitudeStandIn',
  options: STANDIN_OPTIONS,
  stats: 'requests: s.stats.requests, acceptedEvents: s.stats.acceptedEvents, duplicateEvents: s.stats.duplicateEvents, byStatus: s.stats.byStatus',
  startHere: () => startAmplitudeStandIn(STANDIN_OPTIONS),
  statsHere: (s: AmplitudeStandIn) => ({ requests: s.stats.requests, acceptedEvents: s.stats.acceptedEvents, duplicateEvents: s.stats.duplicateEvents, byStatus: { ...s.stats.byStatus } }),
};

// ---------------------------------------------------------------------------------------------
// 1. Ingestion

interface Server {
  url: string;
  close(): Promise<void>;
}

/** The floor: Fastify, the raw body as a Buffer, JSON.parse, 200. */
async function startBareFastify(): Promise<Server> {
  const app = Fastify({ logger: false, bodyLimit: 5 * 1024 * 1024 });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/currents', async (req, res) => {
    const body = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
    const parsed = JSON.parse(body.toString('utf8')) as { events?: unknown[] };
    const n = Array.isArray(parsed.events) ? parsed.events.length : 0;
    return res.code(200).send({ stored: n, dead_lettered: 0 });
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const a = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${a.port}/currents`, close: () => app.close() };
}

async function runIngest(
  name: string,
  load: LoadGenerator,
  start: () => Promise<Server>,
  broker: number | undefined,
): Promise<RunResult & { load: LoadResult }> {
  const server = await start();
  let meter: (() => Window) | undefined;
  try {
    const r = await load.run({ url: server.url, token: TOKEN, warmup: WARMUP_BATCHES, batches: BATCHES, connections: CONNECTIONS }, () => {
      meter = windowMeter(broker);
    });
    const window = meter?.() ?? { cpuMs: Number.NaN, brokerCpuMs: undefined, machineBusy: undefined };
    const bad = r.requests - (r.byStatus['200'] ?? 0) + r.unexpectedBodies;
    const loadCpu = Number.isFinite(r.cpuMs) ? `; load generator ${fmt(r.cpuMs)} ms CPU` : '';
    return {
      rate: r.events / r.seconds,
      seconds: r.seconds,
      count: r.events,
      window,
      load: r,
      extra: `${fmt(r.requests)} requests of ${EVENTS_PER_BATCH} events over ${CONNECTIONS} connections, latency p50 ${r.p50Ms.toFixed(1)} ms p99 ${r.p99Ms.toFixed(1)} ms${
        bad > 0 ? `, ${fmt(bad)} NOT answered 200 {stored:${EVENTS_PER_BATCH}} (${JSON.stringify(r.byStatus)}; first: ${r.firstError})` : ''
      }${loadCpu} (${name})`,
    };
  } finally {
    await server.close();
  }
}

/** The real Gateway with only the Currents route on, writing to `topic`. */
function ingestGateway(bootstrap: string, run: number, topic: string): Gateway {
  const config = loadConfig({
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-ingest-${run}-${Date.now()}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_BRAZE_CURRENTS: topic,
    TOPIC_DEAD_LETTER: 'bench.inbound.dead-letter',
    CURRENTS_TOKEN: TOKEN,
    // the delivery leg off: only ingestion is measured
    AMPLITUDE_API_KEY: '',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  });
  return new Gateway({ config, logger: silentLogger() });
}

async function ingestion(cluster: MockCluster, broker: number | undefined): Promise<BenchResult[]> {
  const load = await startLoadGenerator();
  try {
    const prepared = await load.prepare(WARMUP_BATCHES + BATCHES);
    const avgBody = prepared.bytes / (WARMUP_BATCHES + BATCHES);
    const perRun = (WARMUP_BATCHES + BATCHES) * EVENTS_PER_BATCH;
    note(
      `  ingestion: ${fmt(WARMUP_BATCHES)} warm-up + ${fmt(BATCHES)} measured batches of ${EVENTS_PER_BATCH} events per run, avg body ${fmt(avgBody)} B ` +
        `(~${Math.round(avgBody / EVENTS_PER_BATCH)} B/event), ${CONNECTIONS} connections, load generator ${load.separate ? 'in a child process' : 'in this process'}; ` +
        `gateway topic: fresh per run, ${INGEST_PARTITIONS} partitions (~${((perRun * (avgBody / EVENTS_PER_BATCH)) / INGEST_PARTITIONS / 1024 / 1024).toFixed(1)} of ${MOCK_PARTITION_BYTES / 1024 / 1024} MB each)`,
    );
    let topic = '';
    let gateway: Gateway | undefined;
    const { baseline: bestBase, contender: bestGw } = await alternate(
      'inbound bench: ingestion',
      RUNS,
      PROFILE_DIR,
      {
        bench: 'fastify_parse_only',
        profile: 'inbound-fastify_parse_only',
        run: () => runIngest('bare fastify', load, startBareFastify, broker),
      },
      {
        bench: 'currents_ingest',
        profile: 'inbound-currents_ingest',
        prepare: async (run) => {
          topic = `${DELIVERY_TOPIC}.ingest-run${run}-${Date.now()}`;
          gateway = undefined;
          await cluster.createTopic(topic, INGEST_PARTITIONS);
        },
        run: (run) =>
          runIngest('gateway POST /currents', load, async () => {
            const gw = ingestGateway(cluster.bootstrap, run, topic);
            gateway = gw;
            await gw.start();
            const address = gw.address;
            if (!address) throw new Error('inbound bench: the gateway does not listen');
            return { url: `${address}/currents`, close: () => gw.stop(10_000) };
          }, broker),
        detail: async (g) => {
          const stored = gateway ? await gateway.metrics.value('gateway_currents_events_total', { outcome: 'stored' }) : Number.NaN;
          const offsets = await topicOffsets(cluster.bootstrap, topic);
          const answered = ((g.load.byStatus['200'] ?? 0) + WARMUP_BATCHES) * EVENTS_PER_BATCH;
          const check =
            offsets.total === answered && stored === answered
              ? `Kafka holds all ${fmt(answered)} events answered 200 (warm-up included)`
              : `MISMATCH: ${fmt(answered)} events answered 200 (warm-up included), gateway counted ${fmt(stored)} stored, topic high watermarks add up to ${fmt(offsets.total)}`;
          return `; ${check}${offsets.low0 ? '' : ` (retention dropped old data: ${offsets.truncated.slice(0, 3).join('; ')})`}`;
        },
      },
    );
    note(
      `  best: gateway ${fmt(bestGw.rate)} events/s, bare fastify + JSON.parse ${fmt(bestBase.rate)} events/s, ratio ${roundRatio(bestGw.rate / bestBase.rate)} ` +
        `(target: ${fmt(INGEST_TARGET)} events/s and ratio >= 0.5)`,
    );
    return versusResults({ bench: 'fastify_parse_only', rate: bestBase.rate }, { bench: 'currents_ingest', rate: bestGw.rate });
  } finally {
    await load.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Delivery

/** Fills the delivery topic with events 0..n-1 as the route writes them (one `received-at` per request of 1000). */
function fillTopic(bootstrap: string, n: number): Promise<{ valueBytes: number; seconds: number }> {
  return produceTopic(bootstrap, DELIVERY_TOPIC, n, (from, to) => {
    const now = String(Date.now());
    const messages: Message[] = [];
    for (let i = from; i < to; i++) {
      const m = storedForm(i);
      messages.push(WITH_RECEIVED_AT ? { ...m, headers: { [RECEIVED_AT_HEADER]: now } } : m);
    }
    return messages;
  });
}

async function runDelivery(bootstrap: string, n: number, run: number, standIn: StandInHandle<StandInStats>, broker: number | undefined, workers = 1): Promise<RunResult> {
  const stamp = `${run}-${Date.now()}`;
  const config = loadConfig({
    GATEWAY_WORKERS: String(workers),
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-delivery-${stamp}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_BRAZE_CURRENTS: DELIVERY_TOPIC,
    TOPIC_DEAD_LETTER: 'bench.inbound.dead-letter',
    TOPIC_RETRY: `bench.inbound.retry-${stamp}`,
    TOPIC_RETRY_QUOTA: `bench.inbound.retry-quota-${stamp}`,
    // fresh per run, as the consumer group is: a later run restoring an earlier one's daily counts
    // would make its events wait for that restore (60,000 `wait` decisions) and measure a restart
    TOPIC_LIMITS: `bench.inbound.limits-${stamp}`,
    AMPLITUDE_API_KEY: AMP_KEY,
    AMPLITUDE_HTTP_API_URL: standIn.url,
    AMPLITUDE_LINGER_MS: String(AMP_LINGER_MS),
    AMPLITUDE_CONCURRENCY: String(AMP_CONCURRENCY),
    // the per-id limiter stays on at its defaults (30 events/s per id); 100,000 ids keep it from binding
    AMPLITUDE_LIMITS_ENABLED: 'true',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  });
  const gateway = new Gateway({ config, listen: false, logger: silentLogger() });
  const r = workers > 1
    ? await measureDeliveryAtStandIn(gateway, n, broker, { label: 'inbound bench (workers)', arrived: async () => (await standIn.stats()).acceptedEvents })
    : await measureDelivery(gateway, n, broker, {
    label: 'inbound bench',
    lostMetrics: ['gateway_events_skipped_total', 'gateway_events_dead_lettered_total', 'gateway_limiter_parked_total'],
  });
  const requests = await gateway.metrics.value('gateway_destination_requests_total');
  const ok = await gateway.metrics.value('gateway_destination_requests_total', { status: '200' });
  const allow = await gateway.metrics.value('gateway_limiter_decisions_total', { decision: 'allow' });
  const wait = await gateway.metrics.value('gateway_limiter_decisions_total', { decision: 'wait' });
  const quota = await gateway.metrics.value('gateway_limiter_decisions_total', { decision: 'quota' });
  const commits = await gateway.metrics.value('gateway_offset_commits_total');
  return {
    ...r,
    extra:
      `${fmt(requests)} requests (${fmt(ok)} answered 200), ${(r.count / Math.max(1, requests)).toFixed(0)} events/request, ` +
      `limiter decisions allow ${fmt(allow)} / wait ${fmt(wait)} / quota ${fmt(quota)}, ${fmt(commits)} offset commits` +
      (r.lost > 0 ? `, ${fmt(r.lost)} skipped, dead-lettered or parked` : ''),
  };
}

async function delivery(cluster: MockCluster, broker: number | undefined): Promise<BenchResult[]> {
  await cluster.createTopic(DELIVERY_TOPIC, PARTITIONS);
  const filled = await fillTopic(cluster.bootstrap, EVENTS);
  const avg = filled.valueBytes / EVENTS;
  const offsets = await wholeTopic('inbound bench', cluster.bootstrap, DELIVERY_TOPIC, EVENTS, PARTITIONS, {
    partitions: 'BENCH_INBOUND_PARTITIONS',
    events: 'BENCH_INBOUND_EVENTS',
  });
  note(
    `  delivery: topic ${DELIVERY_TOPIC}: ${fmt(EVENTS)} events over ${fmt(DEVICES)} devices/users, ${PARTITIONS} partitions (${fmt(offsets.minHigh)}..${fmt(offsets.maxHigh)} per partition, ` +
      `~${((offsets.maxHigh * avg) / 1024 / 1024).toFixed(1)} of ${MOCK_PARTITION_BYTES / 1024 / 1024} MB retention at most), avg value ${Math.round(avg)} B; ` +
      `filled in ${filled.seconds.toFixed(1)} s; low watermarks all 0${WITH_RECEIVED_AT ? '' : '; WITHOUT the received-at header (diagnostic)'}`,
  );
  const standIn = await startStandIn<AmplitudeStandIn, StandInStats>('Amplitude stand-in', STAND_IN);
  try {
    note(
      `  Amplitude stand-in at ${standIn.url} (${standIn.separate ? 'child process' : 'in this process'}; accepts everything, perIdPerSecond off); ` +
        `gateway AMPLITUDE_CONCURRENCY=${AMP_CONCURRENCY} AMPLITUDE_LINGER_MS=${AMP_LINGER_MS} KAFKA_FETCH_MAX_WAIT_MS=50, per-id limiter on (30/s per id)`,
    );
    const { baseline: bestBase, contender: bestGw } = await alternate(
      'inbound bench: delivery',
      RUNS,
      PROFILE_DIR,
      {
        bench: 'kafkajs_bare_consume_currents',
        profile: 'inbound-kafkajs_bare_consume',
        run: (run) =>
          runBareConsumer({
            label: 'inbound bench',
            bootstrap: cluster.bootstrap,
            topic: DELIVERY_TOPIC,
            groupId: `bench-inbound-baseline-${run}-${Date.now()}`,
            n: EVENTS,
            broker,
          }),
      },
      {
        bench: 'amplitude_delivery',
        profile: 'inbound-amplitude_delivery',
        reset: () => standIn.reset(),
        run: (run) => runDelivery(cluster.bootstrap, EVENTS, run, standIn, broker),
        detail: async () => {
          const st = await standIn.stats();
          return Number.isFinite(st.cpuMs)
            ? `; Amplitude stand-in ${fmt(st.cpuMs)} ms CPU (${((st.cpuMs * 1000) / Math.max(1, st.acceptedEvents)).toFixed(1)} us/event, ${fmt(st.requests)} requests, ${fmt(st.acceptedEvents)} events accepted, ${fmt(st.duplicateEvents)} duplicates)`
            : `; Amplitude stand-in: ${fmt(st.requests)} requests, ${fmt(st.acceptedEvents)} events accepted, ${fmt(st.duplicateEvents)} duplicates (in-process, CPU included above)`;
        },
      },
    );
    // The same gateway consuming in WORKERS processes (GATEWAY_WORKERS), against the same baseline.
    let bestWorkers: RunResult | undefined;
    for (let run = 1; run <= RUNS; run++) {
      await standIn.reset();
      await new Promise((r) => setTimeout(r, 200));
      const r = await runDelivery(cluster.bootstrap, EVENTS, 100 + run, standIn, broker, WORKERS);
      const st = await standIn.stats();
      note(
        `  run ${run} amplitude_delivery_workers (GATEWAY_WORKERS=${WORKERS}): ${fmt(r.count)} events in ${r.seconds.toFixed(2)} s = ${fmt(r.rate)} events/s, timed at the stand-in; ` +
          `${workerCpu(r)}; machine ${r.window.machineBusy === undefined ? '?' : (r.window.machineBusy * 100).toFixed(0)} % busy; ${fmt(st.duplicateEvents)} duplicates`,
      );
      if (!bestWorkers || r.rate > bestWorkers.rate) bestWorkers = r;
    }
    note(
      `  best: gateway ${fmt(bestGw.rate)} events/s (one process), ${fmt(bestWorkers?.rate ?? 0)} events/s (GATEWAY_WORKERS=${WORKERS}), bare KafkaJS ${fmt(bestBase.rate)} events/s, ` +
        `ratios ${roundRatio(bestGw.rate / bestBase.rate)} and ${roundRatio((bestWorkers?.rate ?? 0) / bestBase.rate)}`,
    );
    return [
      ...versusResults({ bench: 'kafkajs_bare_consume_currents', rate: bestBase.rate }, { bench: 'amplitude_delivery', rate: bestGw.rate }),
      ...(bestWorkers ? versusResults({ bench: 'kafkajs_bare_consume_currents', rate: bestBase.rate }, { bench: 'amplitude_delivery_workers', rate: bestWorkers.rate }).slice(1) : []),
    ];
  } finally {
    await standIn.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------

export async function runInboundBench(): Promise<BenchResult[]> {
  if (ONLY !== undefined && ONLY !== 'ingest' && ONLY !== 'delivery') throw new Error(`BENCH_INBOUND_ONLY must be ingest or delivery, got ${JSON.stringify(ONLY)}`);
  const cluster = await startMockCluster();
  try {
    const broker = brokerPid(cluster);
    const results: BenchResult[] = [];
    if (ONLY !== 'delivery') results.push(...(await ingestion(cluster, broker)));
    if (ONLY !== 'ingest') results.push(...(await delivery(cluster, broker)));
    return results;
  } finally {
    await cluster.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.includes(LOAD_GENERATOR_FLAG)) {
    await loadGeneratorChild();
    process.exit(0);
  }
  const results = await runInboundBench();
  for (const r of results) printResult(r);
  process.exit(0);
}
