/**
 * The body of WorkerProducer's worker thread (see producer-worker.ts): a kafkajs producer behind a
 * BatchingProducer, fed batches of already-encoded values by the main thread, answering each
 * batch with an ack once Kafka acknowledged it (acks from all in-sync replicas), or a nack.
 * KafkaJS's produce encoding (record batches, CRC, murmur2 partitioning, the socket writes) runs
 * here, off the thread that serves HTTP requests.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Message } from 'kafkajs';
import { createKafka } from './client.js';
import { BatchingProducer } from './batching-producer.js';
import { createLogger } from '../observability/logger.js';
import type { FromWorker, ProducerWorkerData, ToWorker } from './producer-worker.js';

const port = parentPort;
if (!port) throw new Error('producer-worker-thread runs as a worker thread only');
const data = workerData as ProducerWorkerData;
const logger = createLogger(data.logLevel).child({ component: `${data.batching.name}-producer-worker` });
const post = (m: FromWorker): void => port.postMessage(m);

const kafka = createKafka(data.kafka, logger, data.clientSuffix);
const producer = kafka.producer({ allowAutoTopicCreation: true, retry: data.retry });
producer.on(producer.events.CONNECT, () => post({ kind: 'connected', up: true }));
producer.on(producer.events.DISCONNECT, () => post({ kind: 'connected', up: false }));
const batcher = new BatchingProducer(producer, logger, data.batching);

function messagesOf(m: Extract<ToWorker, { kind: 'send' }>): Message[] {
  const out: Message[] = new Array<Message>(m.values.length);
  const single = m.timestamps.length === 1 ? m.timestamps[0] : undefined;
  for (let i = 0; i < m.values.length; i++) {
    const ts = single ?? m.timestamps[i];
    const headers = m.headers?.[i];
    const v = m.values[i] ?? null;
    // a Buffer arrives as a plain Uint8Array: view it as a Buffer again, without a copy
    const value = v === null || typeof v === 'string' ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    out[i] = { key: m.keys[i] ?? null, value, ...(ts !== undefined && ts !== '' ? { timestamp: ts } : {}), ...(headers ? { headers } : {}) };
  }
  return out;
}

port.on('message', (m: ToWorker) => {
  if (m.kind === 'send') {
    batcher.send(m.topic, messagesOf(m)).then(
      () => post({ kind: 'ack', id: m.id }),
      (err: unknown) => post({ kind: 'nack', id: m.id, error: err instanceof Error ? err.message : String(err) }),
    );
  } else if (m.kind === 'close') {
    batcher.close();
    void producer
      .disconnect()
      .catch(() => undefined)
      .finally(() => port.close());
  }
});

producer.connect().then(
  () => post({ kind: 'ready' }),
  (err: unknown) => post({ kind: 'fatal', error: err instanceof Error ? err.message : String(err) }),
);
