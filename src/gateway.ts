import type { FastifyInstance } from 'fastify';
import type { Kafka, Producer } from 'kafkajs';
import { systemClock, type Clock } from './clock.js';
import type { GatewayConfig } from './config/config.js';
import { createKafka } from './kafka/client.js';
import { ConsumerLoop, type MessageSink } from './kafka/consumer-loop.js';
import { DeadLetterWriter } from './kafka/dead-letter.js';
import { BatchingProducer } from './kafka/batching-producer.js';
import { createLogger, type Logger } from './observability/logger.js';
import { Metrics, type Leg } from './observability/metrics.js';
import { HealthRegistry } from './health/connector-health.js';
import { BrazeLeg } from './amplitude-to-braze/braze-leg.js';
import { HealthStore } from './health/health-store.js';
import { HealthMonitor, type Expirable } from './health/health-monitor.js';
import { registerHealthMetrics, type HealthMetrics } from './health/health-metrics.js';
import type { ConnectorHealth } from './health/connector-health.js';
import { createOutboundMapper } from './amplitude-to-braze/map-to-braze.js';
import { buildServer, type ReadinessCheck } from './server.js';
import { AmplitudeLeg } from './braze-to-amplitude/amplitude-leg.js';
import { currentsRoute } from './currents-ingest/currents-route.js';
import { IdPacer } from './braze-to-amplitude/id-pacer.js';
import { RetrySink } from './braze-to-amplitude/retry-sink.js';

/** What the legs are wired with as the gateway starts. */
interface Wiring {
  kafka: Kafka;
  consumerLoop: (suffix: string, topic: string, leg: Leg, sink: MessageSink) => ConsumerLoop;
  readiness: ReadinessCheck[];
  watched: Array<{ health: ConnectorHealth; leg: Expirable }>;
  healthMetrics: HealthMetrics;
  deadLetters: DeadLetterWriter;
  producer: Producer;
  plugins: Array<(app: FastifyInstance) => Promise<void> | void>;
}

export interface GatewayOptions {
  config: GatewayConfig;
  logger?: Logger;
  clock?: Clock;
  /** listen on the configured port (false for tests that only need the pipeline) */
  listen?: boolean;
}

/**
 * The composition root: builds the legs the configuration turns on, wires them to Kafka and
 * the HTTP server, and takes them down in order on stop.
 */
export class Gateway {
  readonly metrics = new Metrics();
  readonly logger: Logger;
  readonly clock: Clock;
  readonly health: HealthRegistry;
  private producer: Producer | undefined;
  private deadLetters: DeadLetterWriter | undefined;
  private dlqProducer: BatchingProducer | undefined;
  private readonly loops: ConsumerLoop[] = [];
  private brazeLeg: BrazeLeg | undefined;
  private amplitudeLeg: AmplitudeLeg | undefined;
  private ingestProducer: Producer | undefined;
  private ingestBatcher: BatchingProducer | undefined;
  private retryProducer: BatchingProducer | undefined;
  private pacer: IdPacer | undefined;
  private healthStore: HealthStore | undefined;
  private monitor: HealthMonitor | undefined;
  private evictTimer: NodeJS.Timeout | undefined;
  private server: FastifyInstance | undefined;
  private producerConnected = false;
  private stopped = false;

  constructor(private readonly o: GatewayOptions) {
    this.logger = o.logger ?? createLogger(o.config.logLevel);
    this.clock = o.clock ?? systemClock;
    this.health = new HealthRegistry(this.clock);
  }

  get config(): GatewayConfig {
    return this.o.config;
  }

  get address(): string | undefined {
    const a = this.server?.server.address();
    return a && typeof a === 'object' ? `http://127.0.0.1:${a.port}` : undefined;
  }

  get outboundPending(): number {
    return this.brazeLeg?.pending ?? 0;
  }

  get inboundPending(): number {
    return this.amplitudeLeg?.pending ?? 0;
  }

  async start(): Promise<void> {
    const { config, logger } = this;
    const kafka = createKafka(config.kafka, logger);
    const consumerLoop = (suffix: string, topic: string, leg: Leg, sink: MessageSink): ConsumerLoop =>
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
      });
    this.producer = kafka.producer({ allowAutoTopicCreation: true, idempotent: false, maxInFlightRequests: 5 });
    this.producer.on(this.producer.events.CONNECT, () => (this.producerConnected = true));
    this.producer.on(this.producer.events.DISCONNECT, () => (this.producerConnected = false));
    await this.producer.connect();
    this.dlqProducer = new BatchingProducer(this.producer, logger, { name: 'dead-letter', lingerMs: 5, maxBatch: 500, maxInFlight: 2, maxAttempts: Infinity, retryBaseMs: 500, ackTimeoutMs: 30_000 });
    this.deadLetters = new DeadLetterWriter(this.dlqProducer, config.topics.deadLetter, logger, this.metrics);

    const readiness: ReadinessCheck[] = [{ name: 'kafka_producer', ready: () => this.producerConnected }];

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
    const healthMetrics = registerHealthMetrics(this.metrics, this.health);
    const watched: Array<{ health: ConnectorHealth; leg: Expirable }> = [];

    const plugins: NonNullable<Parameters<typeof buildServer>[0]['plugins']> = [];
    const w: Wiring = { kafka, consumerLoop, readiness, watched, healthMetrics, deadLetters: this.deadLetters, producer: this.producer, plugins };
    this.startOutbound(w);
    await this.startCurrents(w);
    this.startInbound(w);

    this.server = await buildServer({ logger, metrics: this.metrics, health: this.health, readiness, plugins });
    this.registerGauges();
    if (this.o.listen ?? true) {
      await this.server.listen({ port: config.http.port, host: config.http.host });
      logger.info({ url: this.address }, 'HTTP server listening (/metrics, /healthz, /readyz, /connectors)');
    } else {
      await this.server.ready();
    }
    this.monitor = new HealthMonitor({ settings: config.health, connectors: watched, metrics: healthMetrics, store: this.healthStore, logger, clock: this.clock });
    this.monitor.start();
    this.healthStore.start(this.producer);
    await Promise.all(this.loops.map((l) => l.start()));
  }

  /** Amplitude events on Kafka -> Braze, when Braze credentials are set. */
  private startOutbound(w: Wiring): void {
    const { config, logger } = this;
    const { consumerLoop, readiness, watched, healthMetrics, deadLetters } = w;
    if (config.braze) {
      const health = this.health.connector('braze', 'braze');
      let loop: ConsumerLoop | undefined;
      this.brazeLeg = new BrazeLeg({
        settings: config.braze,
        mapper: createOutboundMapper(config.outbound),
        deadLetters: deadLetters,
        health,
        logger: logger.child({ leg: 'outbound' }),
        metrics: this.metrics,
        clock: this.clock,
        onStopped: (stopped) => (stopped ? loop?.pause() : loop?.resume()),
        onProgress: () => loop?.requestCommit(),
      });
      loop = consumerLoop('outbound', config.topics.amplitudeEvents, 'outbound', this.brazeLeg);
      this.loops.push(loop);
      const l = loop;
      readiness.push({ name: 'outbound_consumer', ready: () => l.ready });
      watched.push({ health, leg: this.brazeLeg });
      healthMetrics.initConnector('braze');
      logger.info({ topic: config.topics.amplitudeEvents, endpoint: config.braze.restEndpoint }, 'outbound leg (Amplitude events -> Braze) on');
    } else {
      logger.info('outbound leg off: BRAZE_REST_ENDPOINT and BRAZE_API_KEY are not set');
    }

  }

  /** POST /currents -> Kafka, when CURRENTS_TOKEN is set. */
  private async startCurrents(w: Wiring): Promise<void> {
    const { config, logger } = this;
    const { kafka, deadLetters } = w;
    if (config.currents) {
      // A producer of its own with short retries: a Currents request must get its 503 in seconds
      // when Kafka is away, not wait out the long retries the dead-letter writes use.
      this.ingestProducer = kafka.producer({ allowAutoTopicCreation: true, retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 } });
      await this.ingestProducer.connect();
      this.ingestBatcher = new BatchingProducer(this.ingestProducer, logger, {
        name: 'currents',
        lingerMs: 2,
        maxBatch: 2_000,
        maxInFlight: 4,
        maxAttempts: 2,
        retryBaseMs: 100,
        ackTimeoutMs: config.currents.ackTimeoutMs,
      });
      w.plugins.push(
        currentsRoute({
          settings: config.currents,
          topic: config.topics.brazeCurrents,
          producer: this.ingestBatcher,
          deadLetters: deadLetters,
          minIdLength: config.inbound.mapping.minIdLength,
          metrics: this.metrics,
          logger: logger.child({ component: 'currents' }),
          clock: this.clock,
          kafkaUp: () => this.producerConnected,
        }),
      );
      logger.info({ topic: config.topics.brazeCurrents }, 'Currents ingestion (POST /currents -> Kafka) on');
    } else {
      logger.info('Currents ingestion off: CURRENTS_TOKEN is not set');
    }

  }

  /** Currents on Kafka -> Amplitude (with pacing and the retry topic), when AMPLITUDE_API_KEY is set. */
  private startInbound(w: Wiring): void {
    const { config, logger } = this;
    const { consumerLoop, readiness, watched, healthMetrics, deadLetters, producer } = w;
    if (config.amplitude.apiKey) {
      const health = this.health.connector('amplitude', 'amplitude');
      let loop: ConsumerLoop | undefined;
      let retryLoop: ConsumerLoop | undefined;
      if (config.limits.enabled) this.pacer = new IdPacer(config.limits, this.clock, this.metrics);
      this.retryProducer = new BatchingProducer(producer, logger, { name: 'retry', lingerMs: 5, maxBatch: 1_000, maxInFlight: 2, maxAttempts: Infinity, retryBaseMs: 500, ackTimeoutMs: 30_000 });
      this.amplitudeLeg = new AmplitudeLeg({
        amplitude: { ...config.amplitude, apiKey: config.amplitude.apiKey },
        settings: config.inbound,
        ...(this.pacer ? { pacer: this.pacer } : {}),
        retry: { topic: config.topics.retry, producer: this.retryProducer },
        deadLetters: deadLetters,
        health,
        logger: logger.child({ leg: 'inbound' }),
        metrics: this.metrics,
        clock: this.clock,
        onStopped: (stopped) => {
          for (const l of [loop, retryLoop]) stopped ? l?.pause() : l?.resume();
        },
        // Amplitude deduplicates by insert_id, so a crash's re-sends are harmless here: the interval
        // commit is enough, and a commit per request would cost more than it saves.
      });
      retryLoop = consumerLoop('retry', config.topics.retry, 'inbound', new RetrySink(this.amplitudeLeg, this.clock, config.limits.retryMaxHeld));
      this.loops.push(retryLoop);
      loop = consumerLoop('inbound', config.topics.brazeCurrents, 'inbound', this.amplitudeLeg);
      this.loops.push(loop);
      const l = loop;
      readiness.push({ name: 'inbound_consumer', ready: () => l.ready });
      watched.push({ health, leg: this.amplitudeLeg });
      healthMetrics.initConnector('amplitude');
      const pacer = this.pacer;
      if (pacer) this.evictTimer = setInterval(() => pacer.evictIdle(), 60_000);
      logger.info({ topic: config.topics.brazeCurrents, endpoint: config.amplitude.httpApiUrl }, 'inbound leg (Currents -> Amplitude) on');
    } else {
      logger.info('inbound leg off: AMPLITUDE_API_KEY is not set');
    }

  }

  /** Gauges computed at scrape time, so they are never stale. */
  private registerGauges(): void {
    const m = this.metrics;
    m.onCollect(() => {
      m.inFlight.set({ leg: 'outbound' }, this.brazeLeg?.pending ?? 0);
      m.inFlight.set({ leg: 'inbound' }, this.amplitudeLeg?.pending ?? 0);
      m.limiterTracked.set(this.pacer?.trackedIdentities ?? 0);
      m.limiterAboveQuota.set(this.pacer?.identitiesAbove(0.8) ?? 0);
      for (const s of this.health.snapshots()) if (s.lastSuccessMs !== undefined) m.lastSuccess.set({ connector: s.name }, s.lastSuccessMs / 1000);
    });
  }

  /** runs the drop-window check now (tests; the monitor also runs it on its interval) */
  checkHealth(): Promise<void> {
    return this.monitor?.check() ?? Promise.resolve();
  }

  get ready(): boolean {
    return this.producerConnected && this.loops.every((l) => l.ready);
  }

  /** Drain in-flight work, commit it, and leave: what SIGTERM does. */
  async stop(drainTimeoutMs = 30_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.logger.info('stopping: draining in-flight events');
    // Stop taking Currents requests first, so nothing new arrives while the legs drain.
    await this.server?.close();
    await Promise.all(this.loops.map((l) => l.stop(drainTimeoutMs)));
    if (this.evictTimer) clearInterval(this.evictTimer);
    await this.monitor?.stop();
    await this.healthStore?.stop().catch(() => undefined);
    await this.brazeLeg?.close();
    await this.amplitudeLeg?.close();
    await this.ingestProducer?.disconnect().catch(() => undefined);
    this.dlqProducer?.close();
    await this.producer?.disconnect().catch(() => undefined);
    this.logger.info('stopped');
  }

  /** Hard stop without draining, for tests that simulate a crash within one process. */
  async kill(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops.map((l) => l.stop(0).catch(() => undefined)));
    if (this.evictTimer) clearInterval(this.evictTimer);
    await this.monitor?.stop();
    await this.brazeLeg?.close();
    await this.amplitudeLeg?.close();
    await this.ingestProducer?.disconnect().catch(() => undefined);
    await this.producer?.disconnect().catch(() => undefined);
    await this.server?.close();
  }
}
