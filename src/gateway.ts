import type { Producer } from 'kafkajs';
import { systemClock, type Clock } from './clock.js';
import type { GatewayConfig } from './config/config.js';
import { createKafka } from './kafka/client.js';
import { ConsumerLoop, type MessageSink } from './kafka/consumer-loop.js';
import { DeadLetterWriter } from './kafka/dead-letter.js';
import { BatchingProducer } from './kafka/batching-producer.js';
import { createLogger, type Logger } from './observability/logger.js';
import { Metrics, type Leg } from './observability/metrics.js';
import { HealthRegistry } from './health/connector-health.js';
import { HealthStore } from './health/health-store.js';
import { HealthMonitor } from './health/health-monitor.js';
import { registerHealthMetrics } from './health/health-metrics.js';
import { HttpServers, type ReadinessCheck } from './server.js';
import type { BuiltLeg, LegConsumer, LegContext } from './leg.js';
import { BrazeClient } from './amplitude-to-braze/braze-client.js';
import { buildOutbound } from './amplitude-to-braze/outbound.js';
import { buildCurrentsIngest } from './currents-ingest/ingest.js';
import { buildInbound } from './braze-to-amplitude/inbound.js';
import { buildCohortLeg } from './cohorts/cohort-leg.js';
import { buildNotifications } from './health/notify-leg.js';
import { ConsumerWorkers } from './workers/consumer-workers.js';
import { primaryConfig } from './workers/worker-config.js';

export interface GatewayOptions {
  config: GatewayConfig;
  logger?: Logger;
  clock?: Clock;
  /** listen on the configured port (false for tests that only need the pipeline) */
  listen?: boolean;
}

/**
 * The composition root: asks each flow the configuration turns on to build itself, starts what
 * they built, serves their routes, and takes everything down in order.
 */
export class Gateway {
  readonly metrics = new Metrics();
  readonly logger: Logger;
  readonly clock: Clock;
  readonly health: HealthRegistry;
  private producer: Producer | undefined;
  private dlqProducer: BatchingProducer | undefined;
  private brazeClient: BrazeClient | undefined;
  private legs: BuiltLeg[] = [];
  private healthStore: HealthStore | undefined;
  private monitor: HealthMonitor | undefined;
  private server: HttpServers | undefined;
  private producerConnected = false;
  private stopped = false;
  private workers: ConsumerWorkers | undefined;
  /** what this process runs with (with GATEWAY_WORKERS > 1, its share of Braze's request budget) */
  private readonly own: GatewayConfig;

  constructor(private readonly o: GatewayOptions) {
    this.logger = o.logger ?? createLogger(o.config.logLevel);
    this.clock = o.clock ?? systemClock;
    this.health = new HealthRegistry(this.clock, o.config.health);
    this.own = primaryConfig(o.config);
  }

  get config(): GatewayConfig {
    return this.own;
  }

  /** the child processes' ids, with GATEWAY_WORKERS > 1 (tests kill one) */
  get workerPids(): Array<number | undefined> {
    return this.workers?.pids ?? [];
  }

  /** the public port's URL (POST /currents), e.g. http://127.0.0.1:8080 or https://… with HTTPS_CERT_FILE */
  get address(): string | undefined {
    return this.server?.publicUrl;
  }

  /** where /metrics, /healthz, /readyz and /connectors answer: the ADMIN_HTTP_PORT's URL, else the public one */
  get adminAddress(): string | undefined {
    return this.server?.adminUrl;
  }

  private pendingOf(name: string): number {
    return this.legs.find((l) => l.name === name)?.pending() ?? 0;
  }

  get outboundPending(): number {
    return this.pendingOf('outbound');
  }

  get inboundPending(): number {
    return this.pendingOf('inbound');
  }

  /** every Kafka consumer of every leg */
  get loops(): LegConsumer[] {
    return this.legs.flatMap((l) => l.loops);
  }

  /** the consumer-group loops among them (tests look at their assignments) */
  get consumerLoops(): ConsumerLoop[] {
    return this.loops.filter((l): l is ConsumerLoop => l instanceof ConsumerLoop);
  }

  /** Builds and starts everything; consuming starts last, in every process at once. */
  async start(): Promise<void> {
    await this.prepare();
    await this.consume();
  }

  /**
   * Everything but consuming: Kafka producer, restored health, the legs (with their stores
   * loaded), HTTP. With GATEWAY_WORKERS > 1 the children are forked first and prepare alongside.
   */
  async prepare(): Promise<void> {
    const { config, logger } = this;
    if (config.workers > 1) {
      this.workers = new ConsumerWorkers({ config: this.o.config, logger, metrics: this.metrics });
      const workers = this.workers;
      this.metrics.includeWorkers(() => workers.scrape());
    }
    const children = this.workers?.prepare();
    // a child that fails to prepare fails the start, but only once this process is built too
    children?.catch(() => undefined);
    await this.prepareHere();
    await children;
  }

  /**
   * Starts the consumers of every process together, so the members join each group within moments
   * of each other: one generation, as Kafka's initial rebalance delay intends. Joining one after
   * the other costs a rebalance per member (about a session timeout each on the test broker). On
   * the test broker a simultaneous join sometimes fails a member's SyncGroup (INVALID_REQUEST,
   * where Kafka answers REBALANCE_IN_PROGRESS); that member's consumer is restarted by its loop,
   * at the cost of a stall (see Performance in the README).
   */
  async consume(): Promise<void> {
    await Promise.all([...this.loops.map((l) => l.start()), this.workers?.consume()]);
    if (this.workers) this.logger.info({ workers: this.config.workers }, 'consuming in this process and its worker processes');
  }

  private async prepareHere(): Promise<void> {
    const { config, logger } = this;
    const kafka = createKafka(config.kafka, logger);
    this.producer = kafka.producer({ allowAutoTopicCreation: true, idempotent: false, maxInFlightRequests: 5 });
    const producer = this.producer;
    producer.on(producer.events.CONNECT, () => (this.producerConnected = true));
    producer.on(producer.events.DISCONNECT, () => (this.producerConnected = false));
    await producer.connect();
    this.dlqProducer = new BatchingProducer(producer, logger, { name: 'dead-letter', lingerMs: 5, maxBatch: 500, maxInFlight: 2, maxAttempts: Infinity, ...config.kafka.writes });
    const deadLetters = new DeadLetterWriter(this.dlqProducer, config.topics.deadLetter, logger, this.metrics);

    // Health is restored before the legs start, so a restart does not reset the drop window's clock.
    this.healthStore = new HealthStore({
      kafka,
      topic: config.topics.state,
      registry: this.health,
      logger: logger.child({ component: 'health-store' }),
      clock: this.clock,
      intervalMs: config.health.saveIntervalMs,
      fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
      groupIdPrefix: `${config.kafka.groupId}.state-reader`,
    });
    const restored = await this.healthStore.load().catch((err: unknown) => {
      logger.warn({ err: (err as Error).message }, 'connector health could not be restored; starting fresh');
      return 0;
    });
    if (restored > 0) logger.info({ connectors: restored }, 'connector health restored from the state topic');

    const ctx: LegContext = {
      config,
      logger,
      metrics: this.metrics,
      clock: this.clock,
      health: this.health,
      kafka,
      producer,
      deadLetters,
      kafkaUp: () => this.producerConnected,
      consumerLoop: (suffix: string, topic: string, leg: Leg, sink: MessageSink, opts = {}) =>
        new ConsumerLoop({
          kafka,
          groupId: `${config.kafka.groupId}.${suffix}`,
          topics: [topic],
          leg,
          sink,
          logger: logger.child({ leg, topic }),
          metrics: this.metrics,
          fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
          sessionTimeoutMs: config.kafka.sessionTimeoutMs,
          commitIntervalMs: config.kafka.commitIntervalMs,
          ...opts,
        }),
    };
    // One Braze client per workspace: every writer to Braze shares its request budget.
    if (config.braze) this.brazeClient = new BrazeClient(config.braze, this.clock);
    // notifications first: the cohort sync reports its runs through them; closed last (legs close in order)
    const notifications = buildNotifications(ctx);
    const built = [await buildOutbound(ctx, this.brazeClient), await buildCurrentsIngest(ctx), await buildInbound(ctx), await buildCohortLeg(ctx, this.brazeClient, notifications?.notifier), notifications];
    this.legs = built.filter((l): l is BuiltLeg => l !== undefined);

    const readiness: ReadinessCheck[] = [
      { name: 'kafka_producer', ready: () => this.producerConnected },
      ...this.legs.flatMap((l) => l.readiness),
      ...(this.workers ? [{ name: 'workers', ready: () => this.workers?.ready ?? false }] : []),
    ];
    const healthMetrics = registerHealthMetrics(this.metrics, this.health);
    const watched = this.legs.flatMap((l) => l.watched);
    for (const w of watched) healthMetrics.initConnector(w.health.name);

    this.server = await HttpServers.build({ logger, metrics: this.metrics, health: this.health, readiness, routes: this.legs.flatMap((l) => l.routes), http: config.http });
    this.registerGauges();
    if (this.o.listen ?? true) {
      await this.server.listen();
      if (this.server.adminServer) {
        logger.info({ url: this.address }, 'public HTTP server listening (vendor POSTs only)');
        logger.info({ url: this.adminAddress }, 'admin HTTP server listening (/metrics, /healthz, /readyz, /connectors)');
      } else {
        logger.info({ url: this.address }, 'HTTP server listening (vendor POSTs, /metrics, /healthz, /readyz, /connectors)');
      }
    } else {
      await this.server.ready();
    }
    this.monitor = new HealthMonitor({ settings: config.health, connectors: watched, metrics: healthMetrics, store: this.healthStore, logger, clock: this.clock });
    this.monitor.start();
    this.healthStore.start(producer);
  }

  /** Gauges computed at scrape time, so they are never stale. */
  private registerGauges(): void {
    const m = this.metrics;
    m.onCollect(() => {
      for (const l of this.legs) l.collect?.();
      for (const s of this.health.snapshots()) if (s.lastSuccessMs !== undefined) m.lastSuccess.set({ connector: s.name }, s.lastSuccessMs / 1000);
    });
  }

  /** runs the drop-window check now (tests; the monitor also runs it on its interval) */
  checkHealth(): Promise<void> {
    return this.monitor?.check() ?? Promise.resolve();
  }

  get ready(): boolean {
    return this.producerConnected && this.loops.every((l) => l.ready) && (this.workers?.ready ?? true);
  }

  /** Drain in-flight work, commit it, and leave: what SIGTERM does. */
  stop(drainTimeoutMs = 30_000): Promise<void> {
    return this.teardown(drainTimeoutMs);
  }

  /** Hard stop without draining or a last health save, for tests that simulate a crash within one process. */
  kill(): Promise<void> {
    return this.teardown(0);
  }

  /**
   * One teardown for both: stop taking requests, stop the consumers (draining for up to
   * `drainTimeoutMs`, then committing what is finished), then close legs and producers.
   * With 0 nothing is drained and nothing more is saved: what a crash would leave.
   */
  private async teardown(drainTimeoutMs: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const graceful = drainTimeoutMs > 0;
    if (graceful) this.logger.info('stopping: draining in-flight events');
    this.workers?.stopRestarting();
    // Stop taking Currents requests first, so nothing new arrives while the legs drain.
    await this.server?.closePublic();
    const children = this.workers ? (graceful ? this.workers.stop(drainTimeoutMs) : this.workers.kill()) : Promise.resolve();
    await Promise.all([children, ...this.loops.map((l) => l.stop(drainTimeoutMs).catch(() => undefined))]);
    await this.monitor?.stop();
    // stop() saves a last record; a crash leaves none, but the state reader must still go.
    await (graceful ? this.healthStore?.stop() : this.healthStore?.close())?.catch(() => undefined);
    for (const l of this.legs) await l.close().catch(() => undefined);
    await this.brazeClient?.close().catch(() => undefined);
    if (graceful) this.dlqProducer?.close();
    await this.producer?.disconnect().catch(() => undefined);
    // the admin port (metrics, readiness) stays up while draining, and goes last
    await this.server?.close();
    if (graceful) this.logger.info('stopped');
  }
}
