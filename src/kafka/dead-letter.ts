import type { IHeaders, Producer } from 'kafkajs';
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

interface Pending {
  dl: DeadLetter;
  resolve: () => void;
}

/**
 * Writes dead letters in small batches with acks from all in-sync replicas. A write that fails is
 * retried until it succeeds: the caller's offset is only released once the dead letter is stored,
 * so a broker outage delays the partition instead of losing the event.
 */
export class DeadLetterWriter {
  private queue: Pending[] = [];
  private flushing = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    private readonly opts: { lingerMs?: number; maxBatch?: number; retryMs?: number } = {},
  ) {}

  /** Resolves once the dead letter is stored in Kafka. Logged once and counted here, nowhere else. */
  write(dl: DeadLetter): Promise<void> {
    this.logger.warn(
      { leg: dl.leg, connector: dl.connector, reason: dl.reason, error: truncate(dl.error, 500), source: dl.source },
      'event dead-lettered',
    );
    this.metrics.deadLettered.inc({ leg: dl.leg, reason: dl.reason });
    return new Promise((resolve) => {
      this.queue.push({ dl, resolve });
      if (this.queue.length >= (this.opts.maxBatch ?? 500)) void this.flush();
      else this.timer ??= setTimeout(() => void this.flush(), this.opts.lingerMs ?? 5);
    });
  }

  private async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = true;
    const batch = this.queue;
    this.queue = [];
    let attempt = 0;
    while (!this.closed || attempt === 0) {
      try {
        await this.producer.send({ topic: this.topic, acks: -1, messages: batch.map((p) => toMessage(p.dl)) });
        for (const p of batch) p.resolve();
        break;
      } catch (err) {
        attempt++;
        this.logger.error({ err: (err as Error).message, attempt, count: batch.length }, 'dead-letter write failed; retrying');
        await sleep(Math.min(30_000, (this.opts.retryMs ?? 500) * 2 ** Math.min(attempt, 6)));
      }
    }
    this.flushing = false;
    if (this.queue.length > 0) void this.flush();
  }

  get pending(): number {
    return this.queue.length;
  }

  close(): void {
    this.closed = true;
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

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
