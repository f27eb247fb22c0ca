/**
 * What the cohort sync integration tests share: the strict Amplitude cohort API stand-in, the Braze
 * stand-in, the shared BrazeClient, a real Kafka-protocol broker, and the sync built the way the
 * gateway builds it (its routes on a real fastify server), restartable on the same topic.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Producer } from 'kafkajs';
import { request } from 'undici';
import { systemClock, type Clock } from '../../src/clock.js';
import type { GatewayConfig } from '../../src/config/config.js';
import { BrazeClient } from '../../src/amplitude-to-braze/braze-client.js';
import { buildCohortSync, type CohortSync } from '../../src/cohorts/cohort-sync.js';
import { startAmplitudeCohortStandIn, type AmplitudeCohortStandIn, type StandInCohortMember } from '../../src/demo/standins/amplitude-cohorts.js';
import { startBrazeStandIn, type BrazeStandIn } from '../../src/demo/standins/braze.js';
import type { MockCluster } from '../../src/demo/mock-cluster.js';
import { HealthRegistry } from '../../src/health/connector-health.js';
import type { Notifier } from '../../src/health/notify.js';
import { createKafka } from '../../src/kafka/client.js';
import { Metrics } from '../../src/observability/metrics.js';
import { memoryLogger, testConfig } from './harness.js';

export const AMP_KEY = 'amp-key';
export const AMP_SECRET = 'amp-secret';
export const BRAZE_KEY = 'braze-key';
export const WEBHOOK_TOKEN = 'cohort-webhook-token';

export function member(i: number, userId: string = `user-${i}`): StandInCohortMember {
  return { amplitudeId: String(500_000_000 + i), userId };
}

export function members(from: number, to: number): StandInCohortMember[] {
  return Array.from({ length: to - from }, (_, k) => member(from + k));
}

export interface CohortRig {
  amp: AmplitudeCohortStandIn;
  braze: BrazeStandIn;
  config: GatewayConfig;
  sync: CohortSync;
  health: HealthRegistry;
  metrics: Metrics;
  url: string;
  logs: () => Array<Record<string, unknown>>;
  /** stops the sync (as a process stop would) and builds a fresh one on the same topic */
  restart(): Promise<void>;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }>;
  status(): Promise<{ budget: { left: number; used: number }; syncs: Array<Record<string, unknown>> }>;
  close(): Promise<void>;
}

let seq = 0;

export async function startCohortRig(cluster: MockCluster, o: { env?: Record<string, string>; notifier?: Notifier; amp?: AmplitudeCohortStandIn; braze?: BrazeStandIn; foldEvery?: number; clock?: Clock } = {}): Promise<CohortRig> {
  const amp = o.amp ?? (await startAmplitudeCohortStandIn({ apiKey: AMP_KEY, secretKey: AMP_SECRET }));
  const braze = o.braze ?? (await startBrazeStandIn({ apiKey: BRAZE_KEY }));
  const run = `${Date.now().toString(36)}-${++seq}`;
  const topic = `gateway.cohorts.${run}`;
  await cluster.createTopic(topic, 3);
  const config = testConfig({
    KAFKA_BROKERS: cluster.bootstrap,
    KAFKA_GROUP_ID: `cohort-test-${run}`,
    BRAZE_REST_ENDPOINT: braze.url,
    BRAZE_API_KEY: BRAZE_KEY,
    AMPLITUDE_API_KEY: AMP_KEY,
    AMPLITUDE_SECRET_KEY: AMP_SECRET,
    AMPLITUDE_API_URL: amp.url,
    AMPLITUDE_PROFILE_API_URL: amp.url,
    TOPIC_COHORTS: topic,
    COHORT_SYNCS: 'k3x9qpa:daily',
    COHORT_WEBHOOK_TOKEN: WEBHOOK_TOKEN,
    COHORT_POLL_BASE_MS: '10',
    COHORT_POLL_MAX_MS: '40',
    COHORT_BRAZE_MAX_RETRIES: '2',
    COHORT_WEBHOOK_ACK_TIMEOUT_MS: '5000',
    ...o.env,
  });
  const { logger, lines } = memoryLogger(process.env.TEST_LOG_LEVEL ?? 'info');
  const kafka = createKafka(config.kafka, logger);
  let producer: Producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const clock = o.clock ?? systemClock;
  const health = new HealthRegistry(clock);
  const metrics = new Metrics({ defaultMetrics: false });
  let client = new BrazeClient(config.braze!, clock);
  let sync: CohortSync;
  let app: FastifyInstance;
  let url = '';

  const build = async (): Promise<void> => {
    sync = buildCohortSync({ config, kafka, producer, braze: client, health, metrics, logger, clock, ...(o.notifier ? { notifier: o.notifier } : {}), schedule: false, ...(o.foldEvery ? { foldEvery: o.foldEvery } : {}), sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 50))) });
    // both surfaces on one server, as the gateway does without ADMIN_HTTP_PORT
    app = Fastify();
    for (const route of sync.routes) await route.register(app);
    await app.listen({ port: 0, host: '127.0.0.1' });
    const a = app.server.address();
    url = a && typeof a === 'object' ? `http://127.0.0.1:${a.port}` : '';
    await sync.start();
  };
  await build();

  const rig: CohortRig = {
    amp,
    braze,
    config,
    get sync() {
      return sync;
    },
    health,
    metrics,
    get url() {
      return url;
    },
    logs: lines,
    async restart() {
      await sync.close();
      await app.close();
      await client.close();
      await producer.disconnect();
      producer = kafka.producer({ allowAutoTopicCreation: true });
      await producer.connect();
      client = new BrazeClient(config.braze!, clock);
      await build();
    },
    async post(path, body, headers = {}) {
      const res = await request(`${url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${WEBHOOK_TOKEN}`, 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' || body instanceof Buffer ? body : JSON.stringify(body),
      });
      const text = await res.body.text();
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        parsed = { text };
      }
      return { status: res.statusCode, body: parsed };
    },
    async status() {
      const res = await request(`${url}/cohorts`);
      return (await res.body.json()) as { budget: { left: number; used: number }; syncs: Array<Record<string, unknown>> };
    },
    async close() {
      await sync.close();
      await app.close();
      await client.close();
      await producer.disconnect();
      if (!o.amp) await amp.close();
      if (!o.braze) await braze.close();
    },
  };
  return rig;
}

/** The attributes objects Braze accepted for a cohort, as `op key` strings. */
export function brazeChanges(braze: BrazeStandIn, cohortId: string, attribute = 'amplitude_cohorts'): string[] {
  const out: string[] = [];
  for (const a of braze.received.attributes) {
    const v = a[attribute] as { add?: string[]; remove?: string[] } | undefined;
    if (!v) continue;
    const id = typeof a.external_id === 'string' ? `e:${a.external_id}` : `a:${JSON.stringify(a.user_alias)}`;
    if (v.add?.includes(cohortId)) out.push(`add ${id}`);
    if (v.remove?.includes(cohortId)) out.push(`remove ${id}`);
  }
  return out;
}
