import { Kafka, logLevel, type IHeaders } from 'kafkajs';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startMockCluster, type MockCluster } from '../../src/demo/mock-cluster.js';
import { Writable } from 'node:stream';
import { loadConfig, type GatewayConfig } from '../../src/config/config.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';

/** Gateway configuration for tests: real settings parsing, small waits so tests run in seconds. */
export function testConfig(env: Record<string, string>): GatewayConfig {
  return loadConfig({
    KAFKA_FETCH_MAX_WAIT_MS: '50',
    KAFKA_COMMIT_INTERVAL_MS: '200',
    KAFKA_SESSION_TIMEOUT_MS: '10000',
    BRAZE_LINGER_MS: '20',
    BRAZE_RETRY_BASE_MS: '50',
    BRAZE_RETRY_MAX_MS: '1000',
    BRAZE_AUTH_RETRY_MS: '300',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    // the leg restores what it last wrote to each user from this topic: one per configuration, so
    // tests sharing a broker never see each other's (a restart within a test reuses its config)
    TOPIC_ATTRIBUTE_STATE: `gateway.attribute-state.${Math.random().toString(36).slice(2)}`,
    ...env,
  });
}

/** A logger that keeps its lines, so tests can assert what was logged (and what was not). */
export function memoryLogger(level = 'info'): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk.toString());
      cb();
    },
  });
  return {
    logger: createLogger(level, sink),
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export function testKafka(bootstrap: string): Kafka {
  return new Kafka({ clientId: 'test', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 100 } });
}

export async function produce(
  bootstrap: string,
  topic: string,
  messages: Array<{ key?: string | null; value: string | Buffer | null; headers?: IHeaders }>,
): Promise<void> {
  const producer = testKafka(bootstrap).producer({ allowAutoTopicCreation: true });
  await producer.connect();
  for (let i = 0; i < messages.length; i += 1000) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 1000) });
  }
  await producer.disconnect();
}

export interface ReadMessage {
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
  partition: number;
  offset: string;
}

/** Reads a topic from the beginning until `count` messages arrived or the timeout passed. */
export async function readTopic(bootstrap: string, topic: string, count: number, timeoutMs = 20_000): Promise<ReadMessage[]> {
  const consumer = testKafka(bootstrap).consumer({ groupId: `reader-${topic}-${Math.random()}`, maxWaitTimeInMs: 50 });
  const got: ReadMessage[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    void consumer.run({
      eachMessage: async ({ message, partition }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = Array.isArray(v) ? String(v[0]) : String(v);
        got.push({ key: message.key?.toString() ?? null, value: message.value, headers, partition, offset: message.offset });
        if (got.length >= count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  return got;
}

/** Polls until the predicate holds; fails with the last value it saw. */
export async function waitFor<T>(probe: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last = await probe();
  while (!ok(last)) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
    last = await probe();
  }
  return last;
}

/**
 * One mock broker per test file, started before its tests and stopped after them, plus a list of
 * clean-ups run after each test (stand-ins, gateways), newest first.
 */
export function useMockCluster(): { readonly cluster: MockCluster; cleanups: Array<() => Promise<unknown>> } {
  const state: { cluster?: MockCluster } = {};
  const cleanups: Array<() => Promise<unknown>> = [];
  beforeAll(async () => {
    state.cluster = await startMockCluster({ brokers: 1 });
  });
  afterAll(async () => {
    await state.cluster?.stop();
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });
  return {
    get cluster(): MockCluster {
      if (!state.cluster) throw new Error('the mock cluster starts in beforeAll');
      return state.cluster;
    },
    cleanups,
  };
}
