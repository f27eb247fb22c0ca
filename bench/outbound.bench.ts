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
 * `dist/src/demo/standins/braze.js`), so its request parsing is not charged to the gateway's event
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
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type { Message } from 'kafkajs';
import { loadConfig } from '../src/config/config.js';
import { sampleEvent } from '../src/demo/sample-events.js';
import { Gateway } from '../src/gateway.js';
import { startMockCluster } from '../src/demo/mock-cluster.js';
import { startBrazeStandIn, type BrazeStandIn, type BrazeStandInOptions } from '../src/demo/standins/braze.js';
import { envInt, fmt, note, printResult, roundRatio, silentLogger, versusResults, type BenchResult } from './common.js';
import {
  alternate,
  brokerPid,
  measureDelivery,
  measureDeliveryAtStandIn,
  workerCpu,
  MOCK_PARTITION_BYTES,
  produceTopic,
  runBareConsumer,
  startStandIn,
  wholeTopic,
} from './support.js';
import type { DeliveryProgress, RunResult, StandInHandle } from './support.js';

const EVENTS = envInt('BENCH_OUTBOUND_EVENTS', 160_000);
const PARTITIONS = envInt('BENCH_OUTBOUND_PARTITIONS', 40);
/** 4, 8, 16 and 32 measured the same within noise here (requests are not what limits); 8 keeps connections few */
const CONCURRENCY = envInt('BENCH_BRAZE_CONCURRENCY', 8);
const LINGER_MS = envInt('BENCH_BRAZE_LINGER_MS', 5);
const RUNS = envInt('BENCH_OUTBOUND_RUNS', 2);
/** GATEWAY_WORKERS of the `outbound_pipeline_workers` runs (processes consuming; one per core) */
const WORKERS = envInt('BENCH_OUTBOUND_WORKERS', 2);
const USERS = 50_000;
const TOPIC = 'bench.amplitude.events';
const API_KEY = 'bench-braze-key';
const PROFILE_DIR = process.env.BENCH_OUTBOUND_CPU_PROFILE;
/** BENCH_OUTBOUND_TRACE=1: every 250 ms of a gateway run, print consumed, delivered, pending and event-loop use */
const TRACE = process.env.BENCH_OUTBOUND_TRACE === '1';

// ---------------------------------------------------------------------------------------------
// Data

/**
 * `sampleEvent` (90 % export shape) filled out with the fields a real Amplitude export row carries
 * (upload and processing times, device, location, session, `data`...), which the mapper reads past
 * or drops: about 1 KB per event, like production traffic, instead of sampleEvent's ~460 B.
 */
export function benchEvent(i: number, users = USERS): { key: string; value: string } {
  const s = sampleEvent(i, { users, ingestShare: 0.1 });
  const v = s.value;
  const props = v.event_properties as Record<string, unknown>;
  props.path = `/app/${['home', 'search', 'settings', 'reports', 'billing'][i % 5]}/${i % 997}`;
  props.referrer = i % 2 === 0 ? 'https://www.google.com/' : '';
  props.duration_ms = (i * 7919) % 30_000;
  if (typeof v.client_event_time === 'string') {
    const t = v.client_event_time;
    const user = i % users;
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

/** Fills the topic with events 0..n-1; every partition must still start at offset 0 and hold them all. */
async function produceAndVerify(bootstrap: string, n: number): Promise<{ valueBytes: number; seconds: number; perPartitionMax: number; perPartitionMin: number }> {
  const produced = await produceTopic(bootstrap, TOPIC, n, (from, to) => {
    const messages: Message[] = [];
    for (let i = from; i < to; i++) messages.push(benchEvent(i));
    return messages;
  });
  const offsets = await wholeTopic('outbound bench', bootstrap, TOPIC, n, PARTITIONS, { partitions: 'BENCH_OUTBOUND_PARTITIONS', events: 'BENCH_OUTBOUND_EVENTS' });
  return { ...produced, perPartitionMax: offsets.maxHigh, perPartitionMin: offsets.minHigh };
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

const STANDIN_OPTIONS: BrazeStandInOptions = { apiKey: API_KEY, rateLimit: false, validate: false };

const STAND_IN = {
  module: new URL('../src/demo/standins/braze.js', import.meta.url),
  start: 'startBrazeStandIn',
  options: STANDIN_OPTIONS,
  stats: 'requests: s.stats.requests, acceptedObjects: s.stats.acceptedObjects, events: s.received.events.length, byStatus: s.stats.byStatus',
  startHere: () => startBrazeStandIn(STANDIN_OPTIONS),
  statsHere: (s: BrazeStandIn) => ({ requests: s.stats.requests, acceptedObjects: s.stats.acceptedObjects, events: s.received.events.length, byStatus: { ...s.stats.byStatus } }),
};

// ---------------------------------------------------------------------------------------------
// The two contenders (the baseline is support.ts's runBareConsumer)

async function runGateway(
  bootstrap: string,
  n: number,
  run: number,
  standIn: StandInHandle<StandInStats>,
  broker: number | undefined,
  workers = 1,
): Promise<RunResult> {
  const config = loadConfig({
    GATEWAY_WORKERS: String(workers),
    KAFKA_BROKERS: bootstrap,
    KAFKA_GROUP_ID: `bench-gateway-${run}-${Date.now()}`,
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    TOPIC_AMPLITUDE_EVENTS: TOPIC,
    TOPIC_DEAD_LETTER: 'bench.dead-letter',
    // a fresh attribute state per run: a later run restoring an earlier one's would find every
    // attribute of these same events already sent, and send far fewer objects than a first run
    TOPIC_ATTRIBUTE_STATE: `bench.attribute-state.${run}-${Date.now()}`,
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
  let elu = performance.eventLoopUtilization();
  let prev = { consumed: 0, delivered: 0, at: performance.now() };
  const trace = TRACE
    ? ({ first, consumed, delivered }: Readonly<DeliveryProgress>): void => {
        const now = performance.now();
        const e = performance.eventLoopUtilization(elu);
        elu = performance.eventLoopUtilization();
        const dt = (now - prev.at) / 1000;
        note(
          `    t=${first === undefined ? '-' : ((now - first) / 1000).toFixed(2)}s consumed ${fmt((consumed - prev.consumed) / dt)}/s delivered ${fmt((delivered - prev.delivered) / dt)}/s ` +
            `pending ${fmt(gateway.outboundPending)} loop ${(e.utilization * 100).toFixed(0)} %`,
        );
        prev = { consumed, delivered, at: now };
      }
    : undefined;
  const r = workers > 1
    ? await measureDeliveryAtStandIn(gateway, n, broker, { label: 'outbound bench (workers)', arrived: async () => (await standIn.stats()).events })
    : await measureDelivery(gateway, n, broker, {
    label: 'outbound bench',
    lostMetrics: ['gateway_events_skipped_total', 'gateway_events_dead_lettered_total'],
    trace,
  });
  const requests = await gateway.metrics.value('gateway_destination_requests_total');
  const ok = await gateway.metrics.value('gateway_destination_requests_total', { status: '201' });
  const latency = await histogramMeanMs(gateway, 'gateway_destination_request_duration_seconds');
  const commits = await gateway.metrics.value('gateway_offset_commits_total');
  return {
    ...r,
    extra: `${fmt(requests)} requests (${fmt(ok)} answered 201), ${(r.count / Math.max(1, requests)).toFixed(1)} events/request, mean request time ${
      latency === undefined ? '?' : latency.toFixed(1)
    } ms (as the gateway sees it, event-loop delays included), ${fmt(commits)} offset commits${
      r.lost > 0 ? `, ${fmt(r.lost)} skipped or dead-lettered` : ''
    }`,
  };
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

// ---------------------------------------------------------------------------------------------

export async function runOutboundBench(): Promise<BenchResult[]> {
  const cluster = await startMockCluster();
  let standIn: StandInHandle<StandInStats> | undefined;
  try {
    await cluster.createTopic(TOPIC, PARTITIONS);
    const produced = await produceAndVerify(cluster.bootstrap, EVENTS);
    const avg = produced.valueBytes / EVENTS;
    const { perPartitionMax, perPartitionMin } = produced;
    note(
      `  topic ${TOPIC}: ${fmt(EVENTS)} events, ${PARTITIONS} partitions (${fmt(perPartitionMin)}..${fmt(perPartitionMax)} per partition, ` +
        `~${((perPartitionMax * avg) / 1024 / 1024).toFixed(1)} of ${MOCK_PARTITION_BYTES / 1024 / 1024} MB retention at most), avg value ${Math.round(avg)} B; ` +
        `produced in ${produced.seconds.toFixed(1)} s; low watermarks all 0`,
    );
    const braze = await startStandIn<BrazeStandIn, StandInStats>('Braze stand-in', STAND_IN);
    standIn = braze;
    note(
      `  Braze stand-in at ${standIn.url} (${standIn.separate ? 'child process' : 'in this process'}; rate limit and validation off); ` +
        `gateway BRAZE_CONCURRENCY=${CONCURRENCY} BRAZE_LINGER_MS=${LINGER_MS} KAFKA_FETCH_MAX_WAIT_MS=50, per-array cap 75`,
    );
    const broker = brokerPid(cluster);

    const { baseline: bestBaseline, contender: bestGateway } = await alternate(
      'outbound bench',
      RUNS,
      PROFILE_DIR,
      {
        bench: 'kafkajs_bare_consume',
        profile: 'outbound-kafkajs_bare_consume',
        run: (run) =>
          runBareConsumer({ label: 'outbound bench', bootstrap: cluster.bootstrap, topic: TOPIC, groupId: `bench-baseline-${run}-${Date.now()}`, n: EVENTS, broker }),
      },
      {
        bench: 'outbound_pipeline',
        profile: 'outbound-outbound_pipeline',
        reset: () => braze.reset(),
        run: (run) => runGateway(cluster.bootstrap, EVENTS, run, braze, broker),
        detail: async () => {
          const st = await braze.stats();
          return Number.isFinite(st.cpuMs)
            ? `; Braze stand-in ${fmt(st.cpuMs)} ms CPU (${((st.cpuMs * 1000) / Math.max(1, st.events)).toFixed(1)} us/event, ${fmt(st.requests)} requests, ${fmt(st.events)} events stored)`
            : `; Braze stand-in: ${fmt(st.requests)} requests, ${fmt(st.events)} events (in-process, CPU included above)`;
        },
      },
    );
    // The same gateway consuming in WORKERS processes (GATEWAY_WORKERS), against the same baseline.
    let bestWorkers: RunResult | undefined;
    for (let run = 1; run <= RUNS; run++) {
      await braze.reset();
      await new Promise((r) => setTimeout(r, 200));
      const r = await runGateway(cluster.bootstrap, EVENTS, 100 + run, braze, broker, WORKERS);
      note(`  run ${run} outbound_pipeline_workers (GATEWAY_WORKERS=${WORKERS}): ${fmt(r.count)} events in ${r.seconds.toFixed(2)} s = ${fmt(r.rate)} events/s, timed at the stand-in; ${workerCpu(r)}; machine ${r.window.machineBusy === undefined ? '?' : (r.window.machineBusy * 100).toFixed(0)} % busy`);
      if (!bestWorkers || r.rate > bestWorkers.rate) bestWorkers = r;
    }
    note(
      `  best: gateway ${fmt(bestGateway.rate)} events/s (one process), ${fmt(bestWorkers?.rate ?? 0)} events/s (GATEWAY_WORKERS=${WORKERS}), bare KafkaJS ${fmt(bestBaseline.rate)} events/s, ` +
        `ratios ${roundRatio(bestGateway.rate / bestBaseline.rate)} and ${roundRatio((bestWorkers?.rate ?? 0) / bestBaseline.rate)} (target: 75,000 events/s and ratio >= 0.8)`,
    );
    return [
      ...versusResults({ bench: 'kafkajs_bare_consume', rate: bestBaseline.rate }, { bench: 'outbound_pipeline', rate: bestGateway.rate }),
      ...(bestWorkers ? versusResults({ bench: 'kafkajs_bare_consume', rate: bestBaseline.rate }, { bench: 'outbound_pipeline_workers', rate: bestWorkers.rate }).slice(1) : []),
    ];
  } finally {
    await standIn?.close().catch(() => undefined);
    await cluster.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await runOutboundBench();
  for (const r of results) printResult(r);
  process.exit(0);
}
