/**
 * How the gateway's cost grows, for sizing a deployment: the outbound leg (Kafka -> Braze) and the
 * Amplitude leg (Kafka -> Amplitude) over topics of 1, 8 and 64 partitions and with events drawn
 * from 10,000 and 1,000,000 distinct users, each next to a bare KafkaJS consumer of the same topic
 * in the same run; then the latency the gateway adds per event at a paced 10,000 events/s.
 *
 * 1. Scale (`outbound_scale_p<P>_u<U>`, `amplitude_scale_p<P>_u<U>`): events/s and the peak RSS of
 *    this process during the run (MB, sampled every 25 ms; the broker and the stand-in run in
 *    their own processes), against `kafkajs_bare_consume_scale_<leg>_p<P>_u<U>` (events/s and
 *    peak RSS of the bare consumer on the same topic). The mock broker keeps only ~5 MB per
 *    partition, so a topic holds at most ~4,000 of the outbound's 1 KB events per partition (6,000
 *    of the inbound's 700 B ones): the 1-partition figure is a short burst of that many events, the
 *    others hold BENCH_SCALE_EVENTS (default 120,000) or what fits. With 1,000,000 users every event
 *    of a run is a different user (the worst case for per-user state and for batching per key).
 *
 *    Default matrix (`npm run bench`): each leg at 1, 8 and 64 partitions with 10,000 users, and at
 *    64 partitions with 1,000,000 users, one run each. BENCH_SCALE=full: both user counts at every
 *    partition count, BENCH_SCALE_RUNS (default 2 in full, 1 otherwise) runs each, best kept.
 *
 * 2. Latency (`outbound_added_latency_p50` / `_p99`, ms): a producer in a child process writes
 *    10,000 events/s (BENCH_LATENCY_RATE) for BENCH_LATENCY_SECONDS (default 8) to a 32-partition
 *    topic, each event carrying its send time (record timestamp and an event property); a Braze
 *    stand-in in another child records when each event arrives. Added latency = arrival - send -
 *    the configured linger (BRAZE_LINGER_MS, 5 here), over the events sent after the first second.
 *    Baseline: a bare KafkaJS consumer of the same paced stream, time from send to the value parsed
 *    (`kafkajs_bare_consume_latency_p50` / `_p99`): what any consumer pays for the Kafka hop (the
 *    50 ms fetch wait included). Goal: p99 <= 50 ms.
 *
 * Settings: BENCH_SCALE (`full`), BENCH_SCALE_EVENTS, BENCH_SCALE_RUNS, BENCH_SCALE_ONLY (`outbound`,
 * `amplitude` or `latency`: one part), BENCH_LATENCY_RATE, BENCH_LATENCY_SECONDS, BENCH_LATENCY_TRACE=1
 * (the worst latency per 250 ms of send time, and the gateway's event loop and backlog: tells a
 * periodic stall from a lack of CPU), BENCH_LATENCY_ATTRIBUTE_USERS (0: the attribute state off).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kafka, logLevel, type Message } from 'kafkajs';
import { loadConfig } from '../src/config/config.js';
import { Gateway } from '../src/gateway.js';
import { startMockCluster, type MockCluster } from '../src/demo/mock-cluster.js';
import { startBrazeStandIn, type BrazeStandIn, type BrazeStandInOptions } from '../src/demo/standins/braze.js';
import { startAmplitudeStandIn, type AmplitudeStandIn, type AmplitudeStandInOptions } from '../src/demo/standins/amplitude.js';
import { envInt, fmt, gcIfExposed, note, printResult, roundRatio, silentLogger, sleep, type BenchResult } from './common.js';
import { brokerPid, describe, measureDelivery, produceTopic, runBareConsumer, spawnLineChild, startStandIn, wholeTopic, type RunResult, type StandInHandle } from './support.js';
import { benchEvent } from './outbound.bench.js';
import { storedForm } from './inbound.bench.js';
import { RECEIVED_AT_HEADER } from '../src/currents-ingest/currents-route.js';

const FULL = process.env.BENCH_SCALE === 'full';
const EVENTS = envInt('BENCH_SCALE_EVENTS', 120_000);
const RUNS = envInt('BENCH_SCALE_RUNS', FULL ? 2 : 1);
const ONLY = process.env.BENCH_SCALE_ONLY;
const LATENCY_RATE = envInt('BENCH_LATENCY_RATE', 10_000);
const LATENCY_SECONDS = envInt('BENCH_LATENCY_SECONDS', 8);
const LATENCY_PARTITIONS = 32;
const LINGER_MS = 5;
const CHILD_FLAG = '--scale-latency-child';
const BRAZE_KEY = 'bench-braze-key';
const AMP_KEY = 'bench-amplitude-key';
/** events per partition that fit the mock's ~5 MB retention, with room to spare */
const FIT = { outbound: 4_000, amplitude: 6_000 } as const;

type LegName = 'outbound' | 'amplitude';

interface Config {
  partitions: number;
  users: number;
}

function matrix(): Config[] {
  if (FULL) return [1, 8, 64].flatMap((partitions) => [10_000, 1_000_000].map((users) => ({ partitions, users })));
  return [
    { partitions: 1, users: 10_000 },
    { partitions: 8, users: 10_000 },
    { partitions: 64, users: 10_000 },
    { partitions: 64, users: 1_000_000 },
  ];
}

const usersLabel = (u: number): string => (u >= 1_000_000 ? `${u / 1_000_000}m` : `${u / 1_000}k`);

// ---------------------------------------------------------------------------------------------
// Peak RSS of this process over a run

function rssSampler(): () => number {
  let peak = process.memoryUsage.rss();
  const t = setInterval(() => {
    const r = process.memoryUsage.rss();
    if (r > peak) peak = r;
  }, 25);
  return () => {
    clearInterval(t);
    return Math.max(peak, process.memoryUsage.rss()) / (1024 * 1024);
  };
}

async function withRss<R>(fn: () => Promise<R>): Promise<{ r: R; peakMb: number; startMb: number }> {
  gcIfExposed();
  const startMb = process.memoryUsage.rss() / (1024 * 1024);
  const stop = rssSampler();
  try {
    const r = await fn();
    return { r, peakMb: stop(), startMb };
  } catch (err) {
    stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// The gateways

function outboundGateway(bootstrap: string, topic: string, standInUrl: string, stamp: string): Gateway {
  const config = loadConfig({
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-scale-out-${stamp}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_AMPLITUDE_EVENTS: topic,
    TOPIC_DEAD_LETTER: 'bench.scale.dead-letter',
    // fresh per run: a later run must not restore what an earlier one sent for the same users
    TOPIC_ATTRIBUTE_STATE: `bench.scale.attribute-state.${stamp}`,
    BRAZE_REST_ENDPOINT: standInUrl,
    BRAZE_API_KEY: BRAZE_KEY,
    BRAZE_CONCURRENCY: '8',
    BRAZE_LINGER_MS: String(LINGER_MS),
    // BENCH_LATENCY_ATTRIBUTE_USERS=0: the attribute state off, to see what it adds
    ...(process.env.BENCH_LATENCY_ATTRIBUTE_USERS ? { OUTBOUND_ATTRIBUTE_STATE_USERS: process.env.BENCH_LATENCY_ATTRIBUTE_USERS } : {}),
    BRAZE_RATE_LIMIT_REQUESTS: '10000000',
    BRAZE_RATE_LIMIT_WINDOW_MS: '1000',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  });
  return new Gateway({ config, listen: false, logger: silentLogger() });
}

function amplitudeGateway(bootstrap: string, topic: string, standInUrl: string, stamp: string): Gateway {
  const config = loadConfig({
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-scale-amp-${stamp}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_BRAZE_CURRENTS: topic,
    TOPIC_DEAD_LETTER: 'bench.scale.dead-letter',
    TOPIC_RETRY: `bench.scale.retry-${stamp}`,
    TOPIC_RETRY_QUOTA: `bench.scale.retry-quota-${stamp}`,
    // fresh per run: a later run must not wait to restore an earlier one's daily counts
    TOPIC_LIMITS: `bench.scale.limits-${stamp}`,
    AMPLITUDE_API_KEY: AMP_KEY,
    AMPLITUDE_HTTP_API_URL: standInUrl,
    AMPLITUDE_LINGER_MS: String(LINGER_MS),
    AMPLITUDE_CONCURRENCY: '8',
    AMPLITUDE_LIMITS_ENABLED: 'true',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  });
  return new Gateway({ config, listen: false, logger: silentLogger() });
}

const BRAZE_OPTIONS: BrazeStandInOptions = { apiKey: BRAZE_KEY, rateLimit: false, validate: false };
const AMP_OPTIONS: AmplitudeStandInOptions = { apiKey: AMP_KEY, perIdPerSecond: false };

interface Stats {
  requests: number;
  cpuMs: number;
}

function standIn(leg: LegName): Promise<StandInHandle<Stats>> {
  return leg === 'outbound'
    ? startStandIn<BrazeStandIn, Stats>('Braze stand-in', {
        module: new URL('../src/demo/standins/braze.js', import.meta.url),
        start: 'startBrazeStandIn',
        options: BRAZE_OPTIONS,
        stats: 'requests: s.stats.requests',
        startHere: () => startBrazeStandIn(BRAZE_OPTIONS),
        statsHere: (s: BrazeStandIn) => ({ requests: s.stats.requests }),
      })
    : startStandIn<AmplitudeStandIn, Stats>('Amplitude stand-in', {
        module: new URL('../src/demo/standins/amplitude.js', import.meta.url),
        start: 'startAmplitudeStandIn',
        options: AMP_OPTIONS,
        stats: 'requests: s.stats.requests',
        startHere: () => startAmplitudeStandIn(AMP_OPTIONS),
        statsHere: (s: AmplitudeStandIn) => ({ requests: s.stats.requests }),
      });
}

// ---------------------------------------------------------------------------------------------
// 1. Scale

async function scaleLeg(cluster: MockCluster, leg: LegName, broker: number | undefined): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const stand = await standIn(leg);
  try {
    for (const c of matrix()) {
      const n = Math.min(EVENTS, c.partitions * FIT[leg]);
      const name = `${leg}_scale_p${c.partitions}_u${usersLabel(c.users)}`;
      const base = `kafkajs_bare_consume_scale_${leg}_p${c.partitions}_u${usersLabel(c.users)}`;
      const topic = `bench.scale.${leg}.p${c.partitions}.u${c.users}`;
      await cluster.createTopic(topic, c.partitions);
      const now = String(Date.now());
      await produceTopic(cluster.bootstrap, topic, n, (from, to) => {
        const messages: Message[] = [];
        for (let i = from; i < to; i++) {
          if (leg === 'outbound') messages.push(benchEvent(i, c.users));
          else messages.push({ ...storedForm(i, c.users), headers: { [RECEIVED_AT_HEADER]: now } });
        }
        return messages;
      });
      await wholeTopic(`scale bench ${name}`, cluster.bootstrap, topic, n, c.partitions, { partitions: '(fixed)', events: 'BENCH_SCALE_EVENTS' });
      note(`  ${name}: ${fmt(n)} events over ${c.partitions} partition(s), users drawn from ${fmt(c.users)}`);
      let bestBase: { r: RunResult; peakMb: number } | undefined;
      let bestGw: { r: RunResult; peakMb: number } | undefined;
      for (let run = 1; run <= RUNS; run++) {
        const stamp = `${leg}-${c.partitions}-${c.users}-${run}-${Date.now()}`;
        await sleep(200);
        const b = await withRss(() => runBareConsumer({ label: `scale bench ${base}`, bootstrap: cluster.bootstrap, topic, groupId: `bench-scale-base-${stamp}`, n, broker }));
        note(`    run ${run} ${describe(base, b.r)}; peak RSS ${b.peakMb.toFixed(0)} MB (from ${b.startMb.toFixed(0)})`);
        if (!bestBase || b.r.rate > bestBase.r.rate) bestBase = b;
        await stand.reset();
        await sleep(200);
        const g = await withRss(async () => {
          const gw = leg === 'outbound' ? outboundGateway(cluster.bootstrap, topic, stand.url, stamp) : amplitudeGateway(cluster.bootstrap, topic, stand.url, stamp);
          const d = await measureDelivery(gw, n, broker, {
            label: `scale bench ${name}`,
            lostMetrics: ['gateway_events_skipped_total', 'gateway_events_dead_lettered_total', 'gateway_limiter_parked_total'],
          });
          let limiter = '';
          if (leg === 'amplitude') {
            const v = async (decision: string): Promise<string> => fmt(await gw.metrics.value('gateway_limiter_decisions_total', { decision }));
            limiter = `limiter decisions allow ${await v('allow')} / wait ${await v('wait')} / quota ${await v('quota')}, parked ${fmt(await gw.metrics.value('gateway_limiter_parked_total'))}`;
          }
          const r: RunResult = { ...d, extra: [d.lost > 0 ? `${fmt(d.lost)} skipped, dead-lettered or parked` : '', limiter].filter((x) => x !== '').join('; ') };
          return r;
        });
        const st = await stand.stats();
        note(
          `    run ${run} ${describe(name, g.r)}; peak RSS ${g.peakMb.toFixed(0)} MB (from ${g.startMb.toFixed(0)})` +
            (Number.isFinite(st.cpuMs) ? `; stand-in ${fmt(st.cpuMs)} ms CPU, ${fmt(st.requests)} requests` : ''),
        );
        if (!bestGw || g.r.rate > bestGw.r.rate) bestGw = g;
      }
      if (!bestBase || !bestGw) throw new Error('scale bench: no runs');
      results.push(
        { bench: base, value: Math.round(bestBase.r.rate), unit: 'events/s', baseline: base, ratio: 1 },
        { bench: name, value: Math.round(bestGw.r.rate), unit: 'events/s', baseline: base, ratio: roundRatio(bestGw.r.rate / bestBase.r.rate) },
        { bench: `${base}_peak_rss`, value: Math.round(bestBase.peakMb), unit: 'MB', baseline: `${base}_peak_rss`, ratio: 1 },
        { bench: `${name}_peak_rss`, value: Math.round(bestGw.peakMb), unit: 'MB', baseline: `${base}_peak_rss`, ratio: roundRatio(bestGw.peakMb / bestBase.peakMb) },
      );
    }
  } finally {
    await stand.close().catch(() => undefined);
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// 2. Latency at a paced rate

interface LatencyStats {
  count: number;
  p50: number;
  p99: number;
}

function percentiles(xs: number[]): LatencyStats {
  const a = Float64Array.from(xs).sort();
  const at = (q: number): number => a[Math.min(a.length - 1, Math.floor(a.length * q))] ?? Number.NaN;
  return { count: a.length, p50: at(0.5), p99: at(0.99) };
}

/** The child: a Braze stand-in that records each event's arrival minus its send time, and a paced producer. */
async function latencyChild(): Promise<void> {
  const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
  /** (send time, latency) pairs of the events received */
  let latencies: number[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const now = Date.now();
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events?: Array<{ properties?: { bench_sent_ms?: number } }> };
        for (const e of body.events ?? []) {
          const sent = e.properties?.bench_sent_ms;
          if (typeof sent === 'number') latencies.push(sent, now - sent);
        }
      } catch {
        // not ours to judge
      }
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end('{"message":"success"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  out({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  const rl = createInterface({ input: process.stdin });
  let work: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    work = work.then(async () => {
      try {
        const cmd = JSON.parse(line) as { cmd: string; bootstrap?: string; topic?: string; rate?: number; seconds?: number; from?: number };
        if (cmd.cmd === 'stats') {
          const from = cmd.from ?? 0;
          const xs: number[] = [];
          for (let i = 0; i < latencies.length; i += 2) if ((latencies[i] as number) >= from) xs.push(latencies[i + 1] as number);
          const timeline: string[] = [];
          if (process.env.BENCH_LATENCY_TRACE === '1') {
            // the worst latency of the events sent in each 250 ms, to tell periodic stalls from load
            const worst = new Map<number, number>();
            for (let i = 0; i < latencies.length; i += 2) {
              const b = Math.floor(((latencies[i] as number) - from) / 250);
              if (b >= 0) worst.set(b, Math.max(worst.get(b) ?? 0, latencies[i + 1] as number));
            }
            for (const [b, w] of [...worst].sort((a, c) => a[0] - c[0])) timeline.push(`${(b * 0.25).toFixed(2)}s:${w}`);
          }
          out({ ...percentiles(xs), ...(timeline.length > 0 ? { timeline: timeline.join(' ') } : {}) });
          latencies = [];
        } else if (cmd.cmd === 'produce') {
          out(await pacedProduce(cmd.bootstrap ?? '', cmd.topic ?? '', cmd.rate ?? 10_000, cmd.seconds ?? 8));
        }
      } catch (err) {
        out({ error: (err as Error).stack ?? String(err) });
      }
    });
  });
  await new Promise<void>((resolve) => rl.on('close', () => resolve()));
  await work;
  server.close();
}

/** `rate` events/s for `seconds`, in a send every 10 ms; events sent after the first second are measured. */
async function pacedProduce(bootstrap: string, topic: string, rate: number, seconds: number): Promise<{ produced: number; lateTicks: number; measureFrom: number; ackP50: number; ackP99: number; ackMax: number }> {
  const kafka = new Kafka({ clientId: 'bench-paced', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const perTick = Math.max(1, Math.round(rate / 100));
  const started = Date.now();
  let produced = 0;
  let lateTicks = 0;
  const sends: Array<Promise<unknown>> = [];
  const ackMs: number[] = [];
  try {
    for (let tick = 0; tick < seconds * 100; tick++) {
      const due = started + tick * 10;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -10) lateTicks++;
      const now = Date.now();
      const messages: Message[] = [];
      for (let k = 0; k < perTick; k++) {
        const i = produced++;
        const e = benchEvent(i, 100_000);
        const v = JSON.parse(e.value) as { event_properties: Record<string, unknown> };
        v.event_properties.bench_sent_ms = now;
        messages.push({ key: e.key, value: JSON.stringify(v), timestamp: String(now) });
      }
      sends.push(producer.send({ topic, acks: -1, messages }).then(() => ackMs.push(Date.now() - now)));
    }
    await Promise.all(sends);
  } finally {
    await producer.disconnect();
  }
  // how long a send took to be acknowledged (appended): latency that is the producer's, not the consumer's
  const acks = percentiles(ackMs);
  return { produced, lateTicks, measureFrom: started + 1_000, ackP50: acks.p50, ackP99: acks.p99, ackMax: Math.max(...ackMs) };
}

async function latency(cluster: MockCluster): Promise<BenchResult[]> {
  // Two children: the paced producer, and the stand-in that timestamps arrivals (its event loop
  // must not be busy producing when a request comes in).
  const child = await spawnLineChild(['--expose-gc', fileURLToPath(import.meta.url), CHILD_FLAG], 'latency producer child');
  const sinkChild = await spawnLineChild(['--expose-gc', fileURLToPath(import.meta.url), CHILD_FLAG], 'latency stand-in child');
  try {
    await child.next('startup', 15_000);
    const first = await sinkChild.next('startup', 15_000);
    const url = String(first.url);
    const ask = async (o: object, what: string, timeoutMs: number, c = child): Promise<Record<string, unknown>> => {
      c.send(JSON.stringify(o));
      return c.next(what, timeoutMs);
    };

    // Baseline: a bare consumer of the paced stream.
    const baseTopic = `bench.latency.base-${Date.now()}`;
    await cluster.createTopic(baseTopic, LATENCY_PARTITIONS);
    const kafka = new Kafka({ clientId: 'bench-latency-base', brokers: cluster.bootstrap.split(','), logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: `bench-latency-base-${Date.now()}`, maxWaitTimeInMs: 50, maxBytesPerPartition: 4 * 1024 * 1024 });
    const baseLat: number[] = [];
    let measureFrom = Number.POSITIVE_INFINITY;
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, () => (joined = true));
    await consumer.connect();
    await consumer.subscribe({ topic: baseTopic, fromBeginning: true });
    let sink = 0;
    await consumer.run({
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const v = JSON.parse(m.value ? m.value.toString('utf8') : 'null') as { event_type?: string } | null;
          sink += v?.event_type?.length ?? 0;
          const ts = Number(m.timestamp);
          if (ts >= measureFrom) baseLat.push(Date.now() - ts);
        }
      },
    });
    for (let i = 0; i < 300 && !joined; i++) await sleep(100);
    measureFrom = Date.now() + 1_000;
    const pb = await ask({ cmd: 'produce', bootstrap: cluster.bootstrap, topic: baseTopic, rate: LATENCY_RATE, seconds: LATENCY_SECONDS }, 'produce', 120_000);
    await sleep(1_000);
    await consumer.disconnect();
    const base = percentiles(baseLat);
    note(`  latency baseline (bare KafkaJS, ${fmt(LATENCY_RATE)} events/s for ${LATENCY_SECONDS} s, ${LATENCY_PARTITIONS} partitions): ${fmt(base.count)} events measured, p50 ${base.p50.toFixed(1)} ms, p99 ${base.p99.toFixed(1)} ms; producer ${JSON.stringify(pb)}${sink > 0 ? '' : ' (nothing parsed?)'}`);

    // The gateway
    const topic = `bench.latency.out-${Date.now()}`;
    await cluster.createTopic(topic, LATENCY_PARTITIONS);
    const gw = outboundGateway(cluster.bootstrap, topic, url, `lat-${Date.now()}`);
    let delivered = 0;
    await gw.start();
    try {
      for (let i = 0; i < 300 && !gw.ready; i++) await sleep(100);
      await sleep(500);
      let tracer: NodeJS.Timeout | undefined;
      let traceLine: string[] = [];
      if (process.env.BENCH_LATENCY_TRACE === '1') {
        // the gateway's event loop and backlog every 250 ms: CPU-bound, or waiting on something?
        let elu = performance.eventLoopUtilization();
        const t0 = Date.now();
        const line: string[] = [];
        tracer = setInterval(() => {
          const e = performance.eventLoopUtilization(elu);
          elu = performance.eventLoopUtilization();
          line.push(`${((Date.now() - t0) / 1000).toFixed(2)}s:loop ${(e.utilization * 100).toFixed(0)}% pending ${gw.outboundPending}`);
        }, 250);
        tracer.unref();
        traceLine = line;
      }
      const pg = await ask({ cmd: 'produce', bootstrap: cluster.bootstrap, topic, rate: LATENCY_RATE, seconds: LATENCY_SECONDS }, 'produce', 120_000);
      const produced = Number(pg.produced);
      for (let i = 0; i < 300; i++) {
        delivered = await gw.metrics.value('gateway_events_delivered_total');
        if (delivered >= produced) break;
        await sleep(100);
      }
      clearInterval(tracer);
      if (traceLine.length > 0) note(`  gateway trace: ${traceLine.join(' | ')}`);
      const s = (await ask({ cmd: 'stats', from: Number(pg.measureFrom) }, 'stats', 15_000, sinkChild)) as unknown as LatencyStats & { timeline?: string };
      if (s.timeline) note(`  worst latency per 250 ms of send time (ms): ${s.timeline}`);
      const added = { p50: s.p50 - LINGER_MS, p99: s.p99 - LINGER_MS };
      note(
        `  latency gateway (outbound, linger ${LINGER_MS} ms): ${fmt(s.count)} events measured of ${fmt(produced)} produced (${fmt(delivered)} delivered), ` +
          `Kafka append to stand-in arrival p50 ${s.p50.toFixed(1)} ms p99 ${s.p99.toFixed(1)} ms; minus linger: p50 ${added.p50.toFixed(1)} ms, p99 ${added.p99.toFixed(1)} ms (goal p99 <= 50 ms); producer ${JSON.stringify(pg)}`,
      );
      return [
        { bench: 'kafkajs_bare_consume_latency_p50', value: base.p50, unit: 'ms', baseline: 'kafkajs_bare_consume_latency_p50', ratio: 1 },
        { bench: 'outbound_added_latency_p50', value: added.p50, unit: 'ms', baseline: 'kafkajs_bare_consume_latency_p50', ratio: roundRatio(added.p50 / base.p50) },
        { bench: 'kafkajs_bare_consume_latency_p99', value: base.p99, unit: 'ms', baseline: 'kafkajs_bare_consume_latency_p99', ratio: 1 },
        { bench: 'outbound_added_latency_p99', value: added.p99, unit: 'ms', baseline: 'kafkajs_bare_consume_latency_p99', ratio: roundRatio(added.p99 / base.p99) },
      ];
    } finally {
      await gw.stop(10_000);
    }
  } finally {
    await child.close();
    await sinkChild.close();
  }
}

// ---------------------------------------------------------------------------------------------

export async function runScaleBench(): Promise<BenchResult[]> {
  if (ONLY !== undefined && !['outbound', 'amplitude', 'latency'].includes(ONLY)) throw new Error(`BENCH_SCALE_ONLY must be outbound, amplitude or latency, got ${JSON.stringify(ONLY)}`);
  const cluster = await startMockCluster();
  const started = performance.now();
  try {
    const broker = brokerPid(cluster);
    note(`  matrix: ${FULL ? 'full (BENCH_SCALE=full)' : 'default (BENCH_SCALE=full for every partition count with both user counts)'}; ${RUNS} run(s) each`);
    const results: BenchResult[] = [];
    if (ONLY === undefined || ONLY === 'outbound') results.push(...(await scaleLeg(cluster, 'outbound', broker)));
    if (ONLY === undefined || ONLY === 'amplitude') results.push(...(await scaleLeg(cluster, 'amplitude', broker)));
    if (ONLY === undefined || ONLY === 'latency') results.push(...(await latency(cluster)));
    note(`  scale bench took ${((performance.now() - started) / 1000).toFixed(0)} s`);
    return results;
  } finally {
    await cluster.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.includes(CHILD_FLAG)) {
    await latencyChild();
    process.exit(0);
  }
  const results = await runScaleBench();
  for (const r of results) printResult(r);
  process.exit(0);
}
