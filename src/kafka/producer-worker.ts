/**
 * A Kafka producer in a worker thread, for the request path: `POST /currents` validates and
 * encodes events on the main thread and hands each request's batch of encoded values to the
 * worker, where KafkaJS's produce encoding (about 45% of the route's CPU when it ran on the main
 * thread) and the socket writes happen. A request's promise resolves only when Kafka acknowledged
 * its messages (acks from all in-sync replicas): nothing is answered 2xx before that.
 *
 * A worker that dies is noticed at once: every batch it held is rejected (the route answers 503 and
 * Braze retries), `up` turns false (so new requests get 503 too, and /readyz says so), and a new
 * worker is started after a short delay.
 */
import { Worker } from 'node:worker_threads';
import type { Message } from 'kafkajs';
import type { KafkaSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { BatchingProducerOptions, MessageWriter } from './batching-producer.js';
import { workerScript } from '../workers/worker-script.js';

export interface ProducerWorkerData {
  kafka: KafkaSettings;
  logLevel: string;
  clientSuffix: string;
  batching: BatchingProducerOptions;
  retry: { retries: number; initialRetryTime: number; maxRetryTime: number };
}

export type ToWorker =
  | {
      kind: 'send';
      id: number;
      topic: string;
      keys: Array<string | null>;
      /** strings, or bytes (binary values such as the attribute state's; they cross as copies) */
      values: Array<string | Uint8Array | null>;
      /** one entry: the same timestamp for every message */
      timestamps: string[];
      headers?: Array<Record<string, string> | undefined>;
    }
  | { kind: 'close' };

export type FromWorker =
  | { kind: 'ready' }
  | { kind: 'fatal'; error: string }
  | { kind: 'connected'; up: boolean }
  | { kind: 'ack'; id: number }
  | { kind: 'nack'; id: number; error: string };

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
  count: number;
}

export interface WorkerProducerOptions extends ProducerWorkerData {
  logger: Logger;
  /** wait before starting a new worker after one died */
  restartDelayMs?: number;
}

export class WorkerProducer implements MessageWriter {
  private worker: Worker | undefined;
  private connected = false;
  private closing = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private queued = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private restarts = 0;

  constructor(private readonly o: WorkerProducerOptions) {}

  /** Starts the worker and waits until its producer has connected (rejects if it cannot). */
  async start(): Promise<void> {
    await this.spawn();
  }

  /** the worker is running and its producer connected */
  get up(): boolean {
    return this.worker !== undefined && this.connected && !this.closing;
  }

  /** messages handed to the worker and not yet acknowledged */
  get backlog(): number {
    return this.queued;
  }

  /** how many times a worker was replaced after dying */
  get restartCount(): number {
    return this.restarts;
  }

  send(topic: string, messages: Message[]): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    const worker = this.worker;
    if (!worker || this.closing) return Promise.reject(new Error('the Kafka producer worker is not running'));
    const id = this.nextId++;
    const keys: Array<string | null> = new Array<string | null>(messages.length);
    const values: Array<string | Uint8Array | null> = new Array<string | Uint8Array | null>(messages.length);
    const first = messages[0] as Message;
    let timestamps: string[] = [first.timestamp ?? ''];
    let headers: Array<Record<string, string> | undefined> | undefined;
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i] as Message;
      keys[i] = m.key === undefined || m.key === null ? null : m.key.toString();
      values[i] = m.value === null ? null : typeof m.value === 'string' ? m.value : m.value;
      if (m.timestamp !== first.timestamp && timestamps.length === 1) timestamps = messages.map((x) => x.timestamp ?? '');
      if (m.headers) {
        headers ??= new Array<Record<string, string> | undefined>(messages.length);
        const h: Record<string, string> = {};
        for (const [k, v] of Object.entries(m.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? String(v[0]) : v.toString();
        headers[i] = h;
      }
    }
    const msg: ToWorker = { kind: 'send', id, topic, keys, values, timestamps, ...(headers ? { headers } : {}) };
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, count: messages.length });
      this.queued += messages.length;
      worker.postMessage(msg);
    });
  }

  private settle(id: number, err?: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.queued -= p.count;
    if (err) p.reject(err);
    else p.resolve();
  }

  private spawn(): Promise<void> {
    const data: ProducerWorkerData = { kafka: this.o.kafka, logLevel: this.o.logLevel, clientSuffix: this.o.clientSuffix, batching: this.o.batching, retry: this.o.retry };
    const worker = new Worker(workerScript(import.meta.url, 'producer-worker-thread'), { workerData: data });
    this.worker = worker;
    this.connected = false;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      worker.on('message', (m: FromWorker) => {
        switch (m.kind) {
          case 'ready':
            this.connected = true;
            started = true;
            resolve();
            break;
          case 'fatal':
            if (!started) reject(new Error(`Kafka producer worker could not connect: ${m.error}`));
            void worker.terminate();
            break;
          case 'connected':
            this.connected = m.up;
            break;
          case 'ack':
            this.settle(m.id);
            break;
          case 'nack':
            this.settle(m.id, new Error(m.error));
            break;
        }
      });
      worker.on('error', (err) => {
        this.o.logger.error({ err: err.message, producer: this.o.batching.name }, 'Kafka producer worker failed');
      });
      worker.on('exit', (code) => {
        if (this.worker === worker) this.worker = undefined;
        this.connected = false;
        // Everything it held is unacknowledged: the callers answer 503, Braze sends again.
        const err = new Error(`the Kafka producer worker exited (code ${code}) before Kafka acknowledged`);
        for (const id of [...this.pending.keys()]) this.settle(id, err);
        if (!started) {
          reject(err);
          return;
        }
        if (this.closing) return;
        this.o.logger.error({ code, producer: this.o.batching.name }, 'Kafka producer worker died; its unacknowledged batches were refused (503); starting a new one');
        this.scheduleRestart();
      });
    });
  }

  private scheduleRestart(): void {
    if (this.restartTimer || this.closing) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.closing) return;
      this.restarts++;
      this.spawn().then(
        () => this.o.logger.warn({ producer: this.o.batching.name, restarts: this.restarts }, 'Kafka producer worker restarted'),
        (err: unknown) => {
          this.o.logger.error({ err: (err as Error).message, producer: this.o.batching.name }, 'Kafka producer worker restart failed; trying again');
          this.scheduleRestart();
        },
      );
    }, this.o.restartDelayMs ?? 1_000);
  }

  /** Kills the worker as a crash would (tests of the recovery path). */
  async crashForTest(): Promise<void> {
    await this.worker?.terminate();
  }

  /** Lets the worker finish what it holds (up to `timeoutMs`), disconnects its producer, and ends it. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.closing = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise<void>((r) => worker.once('exit', () => r()));
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    worker.postMessage({ kind: 'close' } satisfies ToWorker);
    const timer = setTimeout(() => void worker.terminate(), Math.max(1_000, deadline - Date.now()));
    await exited;
    clearTimeout(timer);
  }
}
