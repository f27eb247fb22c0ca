import Fastify from 'fastify';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { WorkerProducer } from '../../src/kafka/producer-worker.js';
import { BatchingProducer } from '../../src/kafka/batching-producer.js';
import { DeadLetterWriter } from '../../src/kafka/dead-letter.js';
import { currentsRoute } from '../../src/currents-ingest/currents-route.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { Metrics } from '../../src/observability/metrics.js';
import { systemClock } from '../../src/clock.js';
import { memoryLogger, readTopic, testConfig, testKafka, useMockCluster, waitFor } from '../support/harness.js';

const broker = useMockCluster();

function producer(bootstrap: string) {
  const config = testConfig({ KAFKA_BROKERS: bootstrap });
  const log = memoryLogger('warn');
  const p = new WorkerProducer({
    kafka: config.kafka,
    logLevel: 'silent',
    clientSuffix: '-test',
    retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 },
    batching: { name: 'test', lingerMs: 2, maxBatch: 2_000, maxInFlight: 4, maxAttempts: 2, retryBaseMs: 100, retryMaxMs: 100, ackTimeoutMs: 5_000 },
    logger: log.logger,
    restartDelayMs: 200,
  });
  broker.cleanups.push(() => p.close());
  return { p, log };
}

describe('WorkerProducer: the Kafka producer in a worker thread', () => {
  it('resolves a send only once Kafka holds its messages, with keys, values, timestamps and headers intact', async () => {
    const topic = `worker-${Date.now()}`;
    await broker.cluster.createTopic(topic, 4);
    const { p } = producer(broker.cluster.bootstrap);
    await p.start();
    expect(p.up).toBe(true);
    const sends = [];
    for (let b = 0; b < 20; b++) {
      sends.push(p.send(topic, Array.from({ length: 50 }, (_, i) => ({ key: `k${(b * 50 + i) % 7}`, value: JSON.stringify({ n: b * 50 + i }), timestamp: '1700000000000', ...(i === 0 ? { headers: { h: `b${b}` } } : {}) }))));
    }
    await Promise.all(sends);
    expect(p.backlog).toBe(0);
    const got = await readTopic(broker.cluster.bootstrap, topic, 1_000);
    expect(got.length).toBe(1_000);
    const ns = got.map((m) => (JSON.parse(m.value?.toString() ?? '') as { n: number }).n).sort((a, b) => a - b);
    expect(ns).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
    expect(got.every((m) => m.key === `k${(JSON.parse(m.value?.toString() ?? '') as { n: number }).n % 7}`)).toBe(true);
    expect(got.filter((m) => m.headers.h !== undefined).length).toBe(20);
  });

  it('refuses what a dying worker held, says it is down, and starts a new worker that writes again', async () => {
    const topic = `worker-crash-${Date.now()}`;
    await broker.cluster.createTopic(topic, 2);
    const { p, log } = producer(broker.cluster.bootstrap);
    await p.start();
    const inFlight = p.send(topic, [{ key: 'a', value: 'x' }]);
    await p.crashForTest();
    // the batch may have been acknowledged before the kill; if not, it must be refused, never left hanging
    const outcome = await inFlight.then(
      () => 'acked',
      (e: Error) => e.message,
    );
    expect(outcome === 'acked' || outcome.includes('exited')).toBe(true);
    expect(p.up).toBe(false);
    await expect(p.send(topic, [{ key: 'b', value: 'y' }])).rejects.toThrow(/not running/);
    await waitFor(() => p.up, (u) => u, 15_000, 'a new worker');
    expect(p.restartCount).toBe(1);
    expect(log.lines().some((l) => String(l.msg).includes('worker died'))).toBe(true);
    await p.send(topic, [{ key: 'c', value: 'z' }]);
    const got = await readTopic(broker.cluster.bootstrap, topic, outcome === 'acked' ? 2 : 1);
    expect(got.map((m) => m.value?.toString())).toContain('z');
  });
});

describe('POST /currents on the worker producer', () => {
  it('answers 200 only for what Kafka holds, 503 while the worker is down, and 200 again once it is back', async () => {
    const topic = `worker-route-${Date.now()}`;
    await broker.cluster.createTopic(topic, 4);
    const config = testConfig({ KAFKA_BROKERS: broker.cluster.bootstrap, CURRENTS_TOKEN: 'worker-token', CURRENTS_ACK_TIMEOUT_MS: '5000' });
    const { p, log } = producer(broker.cluster.bootstrap);
    await p.start();
    const kafkaProducer = testKafka(broker.cluster.bootstrap).producer();
    await kafkaProducer.connect();
    broker.cleanups.push(() => kafkaProducer.disconnect());
    const dlq = new BatchingProducer(kafkaProducer, log.logger, { name: 'dlq', lingerMs: 2, maxBatch: 100, maxInFlight: 1, maxAttempts: 2, retryBaseMs: 100, retryMaxMs: 100, ackTimeoutMs: 5_000 });
    const app = Fastify();
    broker.cleanups.push(() => app.close());
    await app.register(
      currentsRoute({
        settings: config.currents!,
        topic,
        producer: p,
        deadLetters: new DeadLetterWriter(dlq, `${topic}.dlq`, log.logger, new Metrics()),
        minIdLength: 5,
        metrics: new Metrics(),
        logger: log.logger,
        clock: systemClock,
        kafkaUp: () => p.up,
      }),
    );
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    let next = 0;
    const post = async (): Promise<number> => {
      const events = Array.from({ length: 10 }, () => sampleCurrentsEvent(next++, { users: 50 }));
      const r = await request(`${url}/currents`, {
        method: 'POST',
        body: JSON.stringify({ events }),
        headers: { 'content-type': 'application/json', authorization: 'Bearer worker-token' },
      });
      await r.body.text();
      return r.statusCode;
    };
    const before = await Promise.all(Array.from({ length: 5 }, post));
    expect(before).toEqual([200, 200, 200, 200, 200]);
    await p.crashForTest();
    expect(await post()).toBe(503);
    await waitFor(() => p.up, (u) => u, 15_000, 'a new worker');
    expect(await post()).toBe(200);
    // every event answered 200 is in Kafka
    const got = await readTopic(broker.cluster.bootstrap, topic, 60);
    expect(got.length).toBe(60);
  });
});
