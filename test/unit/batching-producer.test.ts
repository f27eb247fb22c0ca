import type { Producer, ProducerBatch, RecordMetadata } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { BatchingProducer } from '../../src/kafka/batching-producer.js';
import { memoryLogger } from '../support/harness.js';

/** A kafkajs producer whose first `failures` sendBatch calls fail; records when each call came. */
function flakyProducer(failures: number): { producer: Producer; calls: number[] } {
  const calls: number[] = [];
  let left = failures;
  const sendBatch = async (_b: ProducerBatch): Promise<RecordMetadata[]> => {
    calls.push(Date.now());
    await new Promise((r) => setTimeout(r, 2));
    if (left-- > 0) throw new Error('Broker not available');
    return [];
  };
  return { producer: { sendBatch } as unknown as Producer, calls };
}

const options = { lingerMs: 1, maxBatch: 1, maxInFlight: 4, retryBaseMs: 40, retryMaxMs: 200, ackTimeoutMs: 1_000, name: 'test' };

describe('BatchingProducer on the shared back-off policy', () => {
  it('a failed write holds the writes that come after it: Kafka is backed off as a whole, not request by request', async () => {
    const { producer, calls } = flakyProducer(1);
    const log = memoryLogger('error');
    const w = new BatchingProducer(producer, log.logger, { ...options, maxAttempts: Infinity });
    const first = w.send('t', [{ value: 'a' }]);
    await new Promise((r) => setTimeout(r, 10)); // the first write has failed by now
    const second = w.send('t', [{ value: 'b' }]);
    await Promise.all([first, second]);
    expect(calls).toHaveLength(3);
    // equal jitter on a 40 ms base: nothing goes to Kafka for at least 20 ms after the failure
    expect(calls[1]! - calls[0]!).toBeGreaterThanOrEqual(20);
    expect(calls[2]! - calls[0]!).toBeGreaterThanOrEqual(20);
    expect(log.lines().filter((l) => l.msg === 'Kafka write failed; retrying')).toHaveLength(1);
  });

  it('writes that fail together are one step: the back-off does not climb once per write in flight', async () => {
    const { producer, calls } = flakyProducer(4);
    const w = new BatchingProducer(producer, memoryLogger('silent').logger, { ...options, retryBaseMs: 30, retryMaxMs: 10_000, maxAttempts: Infinity });
    await Promise.all(Array.from({ length: 4 }, (_, i) => w.send('t', [{ value: String(i) }])));
    // one wave of 4 failed: one step (15-30 ms), not four (up to 240 ms)
    expect(calls).toHaveLength(8);
    expect(calls[4]! - calls[0]!).toBeLessThan(120);
  });

  it('gives up after maxAttempts and rejects the caller, who decides (the route answers 503)', async () => {
    const { producer } = flakyProducer(100);
    const w = new BatchingProducer(producer, memoryLogger('silent').logger, { ...options, maxAttempts: 2 });
    await expect(w.send('t', [{ value: 'x' }])).rejects.toThrow('Broker not available');
  });
});
