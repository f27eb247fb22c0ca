import { logLevel, type LogEntry } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { kafkaConfig } from '../../src/kafka/client.js';
import { memoryLogger, testConfig } from '../support/harness.js';

describe('kafkajs log lines through pino', () => {
  it('a rebalance\'s routine refusals are info, other refusals stay errors', () => {
    const log = memoryLogger('debug');
    const creator = kafkaConfig(testConfig({ KAFKA_BROKERS: '127.0.0.1:9092' }).kafka, log.logger).logCreator!;
    const write = creator(logLevel.DEBUG);
    const entry = (level: logLevel, message: string, error?: string): LogEntry => ({ namespace: 'Connection', level, label: 'ERROR', log: { timestamp: '', message, ...(error ? { error } : {}) } });
    write(entry(logLevel.ERROR, 'Response Heartbeat(key: 12, version: 3)', 'The group is rebalancing, so a rejoin is needed'));
    write(entry(logLevel.WARN, 'The group is rebalancing, re-joining'));
    write(entry(logLevel.ERROR, 'Response SyncGroup(key: 14, version: 3)', 'The group authorization failed'));
    expect(log.lines().map((l) => [l.level, l.msg])).toEqual([
      [30, 'Response Heartbeat(key: 12, version: 3)'],
      [40, 'The group is rebalancing, re-joining'],
      [50, 'Response SyncGroup(key: 14, version: 3)'],
    ]);
  });
});
