import { Kafka, logLevel } from 'kafkajs';
import { request } from 'undici';
import { loadConfig } from '../config/config.js';
import { choosePort } from '../http/free-port.js';
import { GATEWAY_PARTITIONER } from '../kafka/client.js';
import { Gateway } from '../gateway.js';
import { MockClusterUnavailableError, startMockCluster, type MockCluster } from './mock-cluster.js';
import { startBrazeStandIn } from './standins/braze.js';
import { startAmplitudeStandIn } from './standins/amplitude.js';
import { startCohortDemo } from './cohort-demo.js';
import { createLogger } from '../observability/logger.js';
import { sampleEvent } from './sample-events.js';
import { sampleCurrentsEvent } from './sample-currents.js';

const BRAZE_KEY = 'demo-braze-key';
const AMPLITUDE_KEY = 'demo-amplitude-key';
const CURRENTS_TOKEN = 'demo-currents-token';

interface DemoArgs {
  events: number;
  currents: number;
  keep: boolean;
}

function parseArgs(argv: string[]): DemoArgs {
  const a: DemoArgs = { events: 20_000, currents: 5_000, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '--keep') a.keep = true;
    else if (v === '--events') a.events = Number(argv[++i]);
    else if (v === '--currents') a.currents = Number(argv[++i]);
    else throw new Error(`unknown demo option ${v} (use --events N, --currents N, --keep)`);
  }
  if (!Number.isInteger(a.events) || a.events < 0 || !Number.isInteger(a.currents) || a.currents < 0) throw new Error('--events and --currents take whole numbers');
  return a;
}

/**
 * `npm run demo`: both legs on an embedded default. A local Kafka-protocol broker (unless
 * KAFKA_BROKERS names a cluster), local Braze and Amplitude stand-ins that enforce the documented
 * limits, the gateway, and sample traffic both ways, with a progress line and a closing summary.
 */
export async function runDemo(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  let cluster: MockCluster | undefined;
  let brokers = process.env.KAFKA_BROKERS;
  if (!brokers) {
    out('starting a local Kafka-protocol broker (librdkafka mock cluster)…');
    try {
      cluster = await startMockCluster({ brokers: 1 });
    } catch (err) {
      if (err instanceof MockClusterUnavailableError) {
        process.stderr.write(`${err.message}\n\nOr point the demo at a real cluster: KAFKA_BROKERS=host:9092 npm run demo\n`);
        return 1;
      }
      throw err;
    }
    brokers = cluster.bootstrap;
  }
  const topics = {
    events: process.env.TOPIC_AMPLITUDE_EVENTS ?? 'amplitude.events',
    currents: process.env.TOPIC_BRAZE_CURRENTS ?? 'braze.currents',
    dlq: process.env.TOPIC_DEAD_LETTER ?? 'gateway.dead-letter',
    retry: process.env.TOPIC_RETRY ?? 'gateway.retry',
    state: process.env.TOPIC_STATE ?? 'gateway.state',
  };
  if (cluster) {
    await cluster.createTopic(topics.events, 8);
    await cluster.createTopic(topics.currents, 8);
    await cluster.createTopic(topics.dlq, 2);
    await cluster.createTopic(topics.retry, 8);
    await cluster.createTopic(topics.state, 1);
  }

  const braze = await startBrazeStandIn({ apiKey: BRAZE_KEY });
  const amplitude = await startAmplitudeStandIn({ apiKey: AMPLITUDE_KEY });
  // a stand-in Amplitude cohort API with one cohort, synced to Braze by pull and webhook pushes
  const cohorts = await startCohortDemo(AMPLITUDE_KEY);
  out(`Braze stand-in at ${braze.url}, Amplitude stand-in at ${amplitude.url}`);

  const config = loadConfig({
    KAFKA_FETCH_MAX_WAIT_MS: '100',
    // the demo mixes in poison messages on purpose; their warnings would bury the progress line
    LOG_LEVEL: 'error',
    HTTP_PORT: '8080',
    // the demo is for this machine: loopback unless HTTP_HOST says otherwise
    HTTP_HOST: '127.0.0.1',
    ...process.env,
    KAFKA_BROKERS: brokers,
    KAFKA_GROUP_ID: process.env.KAFKA_GROUP_ID ?? `demo-${Date.now()}`,
    BRAZE_REST_ENDPOINT: braze.url,
    BRAZE_API_KEY: BRAZE_KEY,
    AMPLITUDE_API_KEY: AMPLITUDE_KEY,
    AMPLITUDE_HTTP_API_URL: amplitude.url,
    CURRENTS_TOKEN,
    ...cohorts.env,
    // the demo's own credentials win over any *_FILE in the environment (setting both is refused)
    ...withoutFileVariants(['BRAZE_API_KEY', 'AMPLITUDE_API_KEY', 'CURRENTS_TOKEN', ...Object.keys(cohorts.env)]),
  });
  // 8080 is often taken on a developer's machine: take a free port instead, and say which.
  for (const [which, setting] of [['port', 'HTTP_PORT'], ['adminPort', 'ADMIN_HTTP_PORT']] as const) {
    const wanted = config.http[which];
    if (wanted === undefined) continue;
    const chosen = await choosePort(wanted, which === 'port' ? config.http.host : config.http.adminHost);
    if (chosen.moved) {
      out(`port ${wanted} is taken: the gateway listens on port ${chosen.port} instead (${setting} chooses another)`);
      config.http[which] = chosen.port;
    }
  }
  const gateway = new Gateway({ config, logger: createLogger(config.logLevel) });
  try {
    await gateway.start();
  } catch (err) {
    if ((err as { code?: string }).code === 'EADDRINUSE') {
      process.stderr.write(`port ${config.http.port} is taken: set HTTP_PORT to a free port (or 0 for any)\n`);
      return 1;
    }
    throw err;
  }
  out(gateway.adminAddress === gateway.address ? `gateway up: ${gateway.address}/metrics, /connectors, /readyz` : `gateway up: ${gateway.address}/currents; ${gateway.adminAddress}/metrics, /connectors, /readyz`);

  // Outbound traffic: sample Amplitude events, with a few poison and Braze-originated ones mixed in.
  const kafka = new Kafka({ clientId: 'demo-traffic', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  // keyed by identity and partitioned like the Java client, as producers of amplitude.events should be
  const producer = kafka.producer({ allowAutoTopicCreation: true, createPartitioner: GATEWAY_PARTITIONER });
  await producer.connect();
  const started = Date.now();
  let poison = 0;
  let loop = 0;
  for (let i = 0; i < args.events; i += 1_000) {
    const messages: Array<{ key: string | null; value: string }> = [];
    for (let j = i; j < Math.min(args.events, i + 1_000); j++) {
      const s = sampleEvent(j, { users: 2_000 });
      messages.push({ key: s.key, value: JSON.stringify(s.value) });
      if (j % 2_000 === 1_999) {
        messages.push({ key: s.key, value: '{"event_type": "truncated' });
        poison++;
      }
      if (j % 5_000 === 4_999) {
        messages.push({ key: s.key, value: JSON.stringify({ event_type: '[Appboy] Email Open', user_id: s.key, library: 'Braze', time: Date.now() }) });
        loop++;
      }
    }
    await producer.send({ topic: topics.events, acks: -1, messages });
  }
  await producer.disconnect();

  // Inbound traffic: Currents batches of 100 posted to the gateway, as Braze would.
  let posted = 0;
  let answered503 = 0;
  // One hot device among them (a script or a bot): 200 events at once, far over Amplitude's 30/s
  // per device, to show the pacing hold the excess and park it without slowing the others.
  const hotDevice = Math.min(200, Math.floor(args.currents / 10));
  const postBatches = async () => {
    for (let i = 0; i < args.currents; i += 100) {
      const events = Array.from({ length: Math.min(100, args.currents - i) }, (_, k) => {
        const e = sampleCurrentsEvent(i + k, { users: 1_000 });
        return i + k < hotDevice ? { ...e, user: { ...e.user, device_id: 'device-hot-demo', external_user_id: 'user-hot-demo' } } : e;
      });
      const r = await request(`${gateway.address}/currents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${CURRENTS_TOKEN}`, 'content-type': 'application/json', 'braze-currents-version': '1' },
        body: JSON.stringify({ events }),
      });
      await r.body.dump();
      if (r.statusCode === 200) posted += events.length;
      else {
        answered503++;
        i -= 100; // Braze retries a refused batch: so does the demo
        await new Promise((res) => setTimeout(res, 500));
      }
    }
  };
  const posting = postBatches();

  const expectedBraze = args.events;
  const progress = setInterval(() => {
    void (async () => {
      const m = gateway.metrics;
      const line =
        `[${((Date.now() - started) / 1000).toFixed(1)}s] ` +
        `outbound: ${await m.value('gateway_events_delivered_total', { leg: 'outbound' })}/${expectedBraze} to Braze, ` +
        `${await m.value('gateway_events_dead_lettered_total', { leg: 'outbound' })} dead-lettered, ${await m.value('gateway_events_skipped_total', { leg: 'outbound' })} skipped | ` +
        `inbound: ${posted}/${args.currents} stored, ${await m.value('gateway_events_delivered_total', { leg: 'inbound' })} to Amplitude`;
      process.stdout.write(process.stdout.isTTY ? `\r${line}   ` : `${line}\n`);
    })();
  }, 1_000);

  const deadline = Date.now() + 180_000;
  await posting;
  for (;;) {
    const outDone = (await gateway.metrics.value('gateway_events_delivered_total', { leg: 'outbound' })) + (await gateway.metrics.value('gateway_events_dead_lettered_total', { leg: 'outbound' })) + (await gateway.metrics.value('gateway_events_skipped_total', { leg: 'outbound' }));
    const inDone = (await gateway.metrics.value('gateway_events_delivered_total', { leg: 'inbound' })) + (await gateway.metrics.value('gateway_events_dead_lettered_total', { leg: 'inbound' })) + (await gateway.metrics.value('gateway_events_skipped_total', { leg: 'inbound' }));
    if ((outDone >= args.events + poison + loop && inDone >= posted) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  clearInterval(progress);
  if (process.stdout.isTTY) out('');

  await printSummary(gateway, { braze: braze.received.events.length, brazeAttributes: braze.received.attributes.length, brazePurchases: braze.received.purchases.length, amplitude: amplitude.received.length, amplitudeUnique: amplitude.uniqueInsertIds, seconds: (Date.now() - started) / 1000, answered503 }, out);
  await cohorts.run(gateway, braze, out);

  if (args.keep) {
    out(`\nstill running (--keep): ${gateway.adminAddress}/metrics  ${gateway.adminAddress}/connectors  — Ctrl-C to stop`);
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  }
  await gateway.stop(10_000);
  await braze.close();
  await amplitude.close();
  await cohorts.close();
  await cluster?.stop();
  return 0;
}

async function printSummary(
  gateway: Gateway,
  r: { braze: number; brazeAttributes: number; brazePurchases: number; amplitude: number; amplitudeUnique: number; seconds: number; answered503: number },
  out: (s: string) => void,
): Promise<void> {
  const m = gateway.metrics;
  const reasons = async (leg: string, metric: string): Promise<string> => {
    const data = await m.registry.getSingleMetric(metric)?.get();
    const parts = (data?.values ?? []).filter((v) => v.labels.leg === leg && v.value > 0).map((v) => `${v.labels.reason}=${v.value}`);
    return parts.length ? parts.join(', ') : 'none';
  };
  out('\n=== demo summary ===');
  out(`elapsed: ${r.seconds.toFixed(1)} s`);
  out('outbound (Amplitude events on Kafka -> Braze /users/track):');
  out(`  consumed ${await m.value('gateway_events_consumed_total', { leg: 'outbound' })}, delivered ${await m.value('gateway_events_delivered_total', { leg: 'outbound' })}`);
  out(`  Braze received ${r.braze} events, ${r.brazeAttributes} attribute updates, ${r.brazePurchases} purchases`);
  out(`  skipped: ${await reasons('outbound', 'gateway_events_skipped_total')}`);
  out(`  dead-lettered: ${await reasons('outbound', 'gateway_events_dead_lettered_total')}`);
  out('inbound (Braze Currents -> POST /currents -> Kafka -> Amplitude):');
  out(`  stored ${await m.value('gateway_currents_events_total', { outcome: 'stored' })} events (${r.answered503} batches refused and retried), delivered ${await m.value('gateway_events_delivered_total', { leg: 'inbound' })}`);
  out(`  Amplitude received ${r.amplitude} events (${r.amplitudeUnique} distinct insert_ids)`);
  out(`  skipped: ${await reasons('inbound', 'gateway_events_skipped_total')}`);
  out(`  dead-lettered: ${await reasons('inbound', 'gateway_events_dead_lettered_total')}`);
  const limited = await m.value('gateway_limiter_decisions_total', { decision: 'wait' });
  const parked = await m.value('gateway_limiter_parked_total', { reason: 'rate_limit' });
  const quota = await m.value('gateway_limiter_parked_total', { reason: 'daily_quota' });
  out(`  limited: ${limited} events waited for their id's rate (30/s per device and per user), ${parked} of them parked in the retry topic, ${quota} over a daily quota`);
  out('connectors:');
  for (const s of gateway.health.snapshots()) {
    const since = s.secondsSinceLastSuccess !== undefined ? `${s.secondsSinceLastSuccess.toFixed(1)} s since last success` : 'no success yet';
    out(`  ${s.name.padEnd(10)} ${s.state.padEnd(9)} ${since}, ${s.pending} pending, ${s.delivered} delivered${s.lastErrorClass ? `, last error ${s.lastErrorClass}` : ''}`);
  }
  out(`metrics: ${gateway.adminAddress}/metrics (run with --keep to browse them)`);
}

/** `NAME_FILE: undefined` for each name: the demo sets these secrets itself. */
function withoutFileVariants(names: string[]): Record<string, undefined> {
  return Object.fromEntries(names.map((n) => [`${n}_FILE`, undefined]));
}
