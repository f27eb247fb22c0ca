import type { IHeaders } from 'kafkajs';
import type { BatchingProducer } from './batching-producer.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics, Leg } from '../observability/metrics.js';

/** One event that will not be delivered, with everything an operator needs to replay it. */
export interface DeadLetter {
  leg: Leg;
  connector: string;
  reason: string;
  error: string;
  /** the original message value, byte for byte, so `replay` can send it through its leg again */
  value: Buffer | null;
  key: Buffer | string | null;
  source?: { topic: string; partition: number; offset: string };
  firstFailureMs: number;
  extraHeaders?: Record<string, string>;
}

export const DLQ_HEADERS = {
  reason: 'reason',
  error: 'error',
  leg: 'leg',
  connector: 'connector',
  sourceTopic: 'source-topic',
  sourcePartition: 'source-partition',
  sourceOffset: 'source-offset',
  firstFailure: 'first-failure-time',
} as const;

/**
 * Writes dead letters, acknowledged by all in-sync replicas, and never gives up on one: the
 * caller's offset is released only once its dead letter is stored, so a broker outage delays the
 * partition instead of losing the event.
 */
export class DeadLetterWriter {
  constructor(
    private readonly producer: BatchingProducer,
    private readonly topic: string,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Resolves once the dead letter is stored in Kafka. Logged once and counted here, nowhere else. */
  write(dl: DeadLetter): Promise<void> {
    this.logger.warn(
      { leg: dl.leg, connector: dl.connector, reason: dl.reason, error: truncate(dl.error, 500), source: dl.source },
      'event dead-lettered',
    );
    this.metrics.deadLettered.inc({ leg: dl.leg, reason: dl.reason });
    return this.producer.send(this.topic, [toMessage(dl)]);
  }
}

export function toMessage(dl: DeadLetter): { key: Buffer | string | null; value: Buffer | null; headers: IHeaders } {
  const headers: IHeaders = {
    [DLQ_HEADERS.reason]: dl.reason,
    [DLQ_HEADERS.error]: truncate(dl.error, 2_000),
    [DLQ_HEADERS.leg]: dl.leg,
    [DLQ_HEADERS.connector]: dl.connector,
    [DLQ_HEADERS.firstFailure]: new Date(dl.firstFailureMs).toISOString(),
    ...(dl.source
      ? {
          [DLQ_HEADERS.sourceTopic]: dl.source.topic,
          [DLQ_HEADERS.sourcePartition]: String(dl.source.partition),
          [DLQ_HEADERS.sourceOffset]: dl.source.offset,
        }
      : {}),
    ...dl.extraHeaders,
  };
  return { key: dl.key, value: dl.value, headers };
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
