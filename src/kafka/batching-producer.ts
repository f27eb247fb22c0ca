import type { Message, Producer } from 'kafkajs';
import type { Logger } from '../observability/logger.js';
import { systemClock, type Clock } from '../clock.js';
import { DestinationBackoff } from '../delivery/backoff.js';

interface Pending {
  topic: string;
  messages: Message[];
  resolve: () => void;
  reject: (err: Error) => void;
}

/** What writes messages to Kafka for a caller that waits for the acknowledgement (BatchingProducer, WorkerProducer). */
export interface MessageWriter {
  /** resolves once Kafka acknowledged every one of `messages` (acks from all in-sync replicas) */
  send(topic: string, messages: Message[]): Promise<void>;
  /** messages waiting or in flight */
  readonly backlog: number;
}

export interface BatchingProducerOptions {
  /** how long a send waits for others to share its request */
  lingerMs: number;
  /** messages per Kafka request */
  maxBatch: number;
  /** requests in flight at once */
  maxInFlight: number;
  /** tries before a send is rejected; Infinity for writes that must never give up */
  maxAttempts: number;
  /** the back-off between tries (the shared policy: exponential with equal jitter, one step per wave of failures) */
  retryBaseMs: number;
  retryMaxMs: number;
  /** reject a try that has not been acknowledged by then */
  ackTimeoutMs: number;
  name: string;
  clock?: Clock;
}

/**
 * Coalesces many small sends (one HTTP request's events, one dead letter) into few Kafka
 * requests, each acknowledged by all in-sync replicas. A caller's promise resolves only when its
 * own messages are acknowledged, so "stored" always means stored.
 */
export class BatchingProducer implements MessageWriter {
  private queue: Pending[] = [];
  private queuedMessages = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  // Kafka is a destination like the others: requests failing together are one back-off step.
  private readonly backoff: DestinationBackoff;

  constructor(
    private readonly producer: Producer,
    private readonly logger: Logger,
    private readonly o: BatchingProducerOptions,
  ) {
    this.backoff = new DestinationBackoff({ baseMs: o.retryBaseMs, maxMs: o.retryMaxMs, stopRetryMs: o.retryMaxMs }, o.clock ?? systemClock);
  }

  send(topic: string, messages: Message[]): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queue.push({ topic, messages, resolve, reject });
      this.queuedMessages += messages.length;
      if (this.queuedMessages >= this.o.maxBatch) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.o.lingerMs);
    });
  }

  /** messages waiting or in flight, for overload decisions */
  get backlog(): number {
    return this.queuedMessages;
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.queue.length > 0 && this.inFlight < this.o.maxInFlight) {
      const batch: Pending[] = [];
      let count = 0;
      while (this.queue.length > 0 && (count === 0 || count + (this.queue[0] as Pending).messages.length <= this.o.maxBatch)) {
        const p = this.queue.shift() as Pending;
        batch.push(p);
        count += p.messages.length;
      }
      this.queuedMessages -= count;
      this.inFlight++;
      void this.write(batch).finally(() => {
        this.inFlight--;
        if (this.queue.length > 0) this.flush();
      });
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) {
      const list = byTopic.get(p.topic);
      if (list) list.push(...p.messages);
      else byTopic.set(p.topic, [...p.messages]);
    }
    const topicMessages = [...byTopic].map(([topic, messages]) => ({ topic, messages }));
    for (let attempt = 1; ; attempt++) {
      // a wave that failed earlier holds every write until its back-off has passed
      const wait = this.backoff.waitMs();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const ticket = this.backoff.begin();
      try {
        await withTimeout(this.producer.sendBatch({ acks: -1, topicMessages }), this.o.ackTimeoutMs, `${this.o.name}: no acknowledgement within ${this.o.ackTimeoutMs} ms`);
        this.backoff.onSuccess();
        for (const p of batch) p.resolve();
        return;
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        this.backoff.onFailure(ticket);
        if (attempt >= this.o.maxAttempts || this.closed) {
          for (const p of batch) p.reject(e);
          return;
        }
        if (attempt === 1 || attempt % 10 === 0) this.logger.error({ err: e.message, attempt, producer: this.o.name }, 'Kafka write failed; retrying');
      }
    }
  }

  close(): void {
    this.closed = true;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
