/**
 * The child processes of a multi-process gateway (GATEWAY_WORKERS > 1): the primary forks
 * GATEWAY_WORKERS - 1 of them, each running the consuming legs as its own member of the consumer
 * groups, so the events are spread over every core by Kafka's own group protocol. The delivery
 * rules therefore do not change: each process commits only what it finished, a partition (and so
 * a key) belongs to one process at a time, and when a child dies the group hands its partitions to
 * the others, which re-read them from the last commit.
 *
 * The supervisor notices a child's exit at once (connector health of the others is untouched; the
 * primary's /readyz says not ready), logs one error, counts it, and forks a new one after a delay
 * that doubles while children keep dying young. A child whose parent disappears stops itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Counter, Gauge } from 'prom-client';
import type { GatewayConfig } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics, MetricsJson } from '../observability/metrics.js';
import { workerConfig } from './worker-config.js';
import { workerScript } from './worker-script.js';

export type ToChild =
  | { kind: 'prepare'; index: number; config: GatewayConfig }
  | { kind: 'consume' }
  | { kind: 'metrics'; id: number }
  | { kind: 'stop'; drainTimeoutMs: number };

export type FromChild =
  | { kind: 'prepared' }
  | { kind: 'started' }
  | { kind: 'ready'; ready: boolean }
  | { kind: 'metrics'; id: number; metrics: MetricsJson }
  | { kind: 'fatal'; error: string };

export interface ConsumerWorkersOptions {
  config: GatewayConfig;
  logger: Logger;
  metrics: Metrics;
  /** first wait before forking a child again; doubles while children die within `stableMs` */
  restartDelayMs?: number;
  maxRestartDelayMs?: number;
  /** a child that ran this long before dying is restarted after the first delay again */
  stableMs?: number;
  /** a scrape waits this long for a child's series, then leaves them out */
  scrapeTimeoutMs?: number;
}

interface Slot {
  index: number;
  child: ChildProcess | undefined;
  prepared: boolean;
  started: boolean;
  /** resolves when the child has started consuming */
  onStarted: (() => void) | undefined;
  ready: boolean;
  forkedAt: number;
  quickDeaths: number;
  timer: NodeJS.Timeout | undefined;
}

export class ConsumerWorkers {
  private readonly slots: Slot[] = [];
  private stopping = false;
  private nextScrape = 1;
  private readonly scrapes = new Map<number, (m: MetricsJson) => void>();
  private readonly restarts: Counter<'worker'>;

  constructor(private readonly o: ConsumerWorkersOptions) {
    for (let index = 1; index < o.config.workers; index++) {
      this.slots.push({ index, child: undefined, prepared: false, started: false, onStarted: undefined, ready: false, forkedAt: 0, quickDeaths: 0, timer: undefined });
    }
    const registers = [o.metrics.registry];
    this.restarts = new Counter({ name: 'gateway_worker_restarts_total', help: 'child processes (GATEWAY_WORKERS) that exited unexpectedly and were started again', labelNames: ['worker'] as const, registers });
    const slots = this.slots;
    new Gauge({
      name: 'gateway_workers_up',
      help: 'child processes (GATEWAY_WORKERS) running and ready',
      registers,
      collect(this: Gauge) {
        this.set(slots.filter((s) => s.ready).length);
      },
    });
    for (const s of this.slots) this.restarts.inc({ worker: String(s.index) }, 0);
  }

  /** Forks every child and resolves once each has built its legs (rejects if one exits first). */
  async prepare(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.spawn(s, false)));
  }

  /** Tells every child to start consuming; resolves once each has (rejects if one exits first). */
  async consume(): Promise<void> {
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve, reject) => {
            const child = s.child;
            if (!child || child.exitCode !== null || child.signalCode !== null) return reject(new Error(`worker ${s.index} is not running`));
            s.onStarted = resolve;
            child.once('exit', (code, signal) => reject(new Error(`worker ${s.index} exited before it started consuming (code ${code}, signal ${signal})`)));
            this.send(s, { kind: 'consume' });
          }),
      ),
    );
  }

  /** every child is running and its consumers are ready */
  get ready(): boolean {
    return this.slots.every((s) => s.ready);
  }

  /** the children's process ids (tests kill one) */
  get pids(): Array<number | undefined> {
    return this.slots.map((s) => s.child?.pid);
  }

  /** each running child's series; a child that does not answer within the timeout is left out */
  async scrape(): Promise<Array<{ worker: string; metrics: MetricsJson }>> {
    const timeoutMs = this.o.scrapeTimeoutMs ?? 2_000;
    const asks = this.slots
      .filter((s) => s.started && s.child?.connected)
      .map(async (s) => {
        const id = this.nextScrape++;
        const metrics = await new Promise<MetricsJson | undefined>((resolve) => {
          const timer = setTimeout(() => {
            this.scrapes.delete(id);
            resolve(undefined);
          }, timeoutMs);
          this.scrapes.set(id, (m) => {
            clearTimeout(timer);
            resolve(m);
          });
          this.send(s, { kind: 'metrics', id });
        });
        if (!metrics) this.o.logger.warn({ worker: s.index, timeoutMs }, 'a worker did not answer the metrics scrape in time; its series are left out of this one');
        return metrics ? { worker: String(s.index), metrics } : undefined;
      });
    return (await Promise.all(asks)).filter((m): m is { worker: string; metrics: MetricsJson } => m !== undefined);
  }

  /** From now on a child's exit is expected: none is restarted. */
  stopRestarting(): void {
    this.stopping = true;
    for (const s of this.slots) clearTimeout(s.timer);
  }

  /** Asks every child to drain and stop, and waits for them to exit (SIGKILL after the drain time and 5 s). */
  stop(drainTimeoutMs: number): Promise<void> {
    return this.endChildren((s, child) => {
      this.send(s, { kind: 'stop', drainTimeoutMs });
      return setTimeout(() => child.kill('SIGKILL'), drainTimeoutMs + 5_000);
    });
  }

  /** Kills every child at once, as a crash of the whole host would. */
  kill(): Promise<void> {
    return this.endChildren((_s, child) => {
      child.kill('SIGKILL');
      return undefined;
    });
  }

  /** No more restarts; `end` each running child (it may return a timer to clear) and wait for every exit. */
  private async endChildren(end: (s: Slot, child: ChildProcess) => NodeJS.Timeout | undefined): Promise<void> {
    this.stopRestarting();
    await Promise.all(
      this.slots.map(async (s) => {
        const child = s.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        const timer = end(s, child);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  private spawn(s: Slot, consume: boolean): Promise<void> {
    const { logger } = this.o;
    // 'advanced' serialization: the config and the metric objects cross as structured clones
    const child = fork(workerScript(import.meta.url, 'consumer-worker-main'), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    s.child = child;
    s.prepared = false;
    s.started = false;
    s.ready = false;
    s.forkedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      child.on('message', (raw) => {
        const m = raw as FromChild;
        switch (m.kind) {
          case 'prepared':
            s.prepared = true;
            if (consume) this.send(s, { kind: 'consume' });
            resolve();
            break;
          case 'started':
            s.started = true;
            logger.info({ worker: s.index, pid: child.pid, startMs: Date.now() - s.forkedAt }, 'worker consuming');
            s.onStarted?.();
            s.onStarted = undefined;
            break;
          case 'ready':
            s.ready = m.ready;
            break;
          case 'metrics':
            this.scrapes.get(m.id)?.(m.metrics);
            this.scrapes.delete(m.id);
            break;
          case 'fatal':
            logger.error({ worker: s.index, err: m.error }, 'worker failed');
            break;
        }
      });
      child.once('exit', (code, signal) => {
        s.ready = false;
        const wasPrepared = s.prepared;
        s.prepared = false;
        s.started = false;
        s.onStarted = undefined;
        if (!wasPrepared) reject(new Error(`worker ${s.index} exited before it was ready to consume (code ${code}, signal ${signal})`));
        if (this.stopping) return;
        const ranMs = Date.now() - s.forkedAt;
        s.quickDeaths = ranMs >= (this.o.stableMs ?? 60_000) ? 0 : s.quickDeaths + 1;
        const delay = Math.min(this.o.maxRestartDelayMs ?? 30_000, (this.o.restartDelayMs ?? 1_000) * 2 ** Math.max(0, s.quickDeaths - 1));
        this.restarts.inc({ worker: String(s.index) });
        logger.error({ worker: s.index, pid: child.pid, code, signal, restartInMs: delay }, 'worker exited unexpectedly; its partitions go to the other members and are re-read from the last commit; starting a new one');
        s.timer = setTimeout(() => {
          s.timer = undefined;
          // a new child that dies before starting is logged and restarted by its own exit handler
          if (!this.stopping) this.spawn(s, true).catch(() => undefined);
        }, delay);
      });
      this.send(s, { kind: 'prepare', index: s.index, config: workerConfig(this.o.config, s.index) });
    });
  }

  private send(s: Slot, m: ToChild): void {
    if (s.child?.connected) s.child.send(m, (err) => err && this.o.logger.debug({ worker: s.index, err: err.message }, 'message to worker not sent'));
  }
}
