import type { Kafka, Producer } from 'kafkajs';
import type { Clock } from './clock.js';
import type { GatewayConfig } from './config/config.js';
import type { ConsumerLoop, ConsumerLoopOptions, MessageSink } from './kafka/consumer-loop.js';
import type { DeadLetterWriter } from './kafka/dead-letter.js';
import type { Logger } from './observability/logger.js';
import type { Leg, Metrics } from './observability/metrics.js';
import type { ConnectorHealth, HealthRegistry } from './health/connector-health.js';
import type { Expirable } from './health/health-monitor.js';
import type { ReadinessCheck, SurfaceRoutes } from './server.js';

/** What the gateway hands each flow so that it can build itself. */
export interface LegContext {
  config: GatewayConfig;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  health: HealthRegistry;
  kafka: Kafka;
  /** the shared producer (acks from all in-sync replicas) */
  producer: Producer;
  deadLetters: DeadLetterWriter;
  /** a consumer group member for one topic, with this gateway's Kafka settings */
  consumerLoop(suffix: string, topic: string, leg: Leg, sink: MessageSink, opts?: Pick<ConsumerLoopOptions, 'onReassigned' | 'onRebalancing' | 'partitionAssigners'>): ConsumerLoop;
  /** is the shared producer connected (for answers that depend on Kafka being there) */
  kafkaUp(): boolean;
}

/** A Kafka consumer of a flow, as the gateway starts, watches and stops it. */
export interface LegConsumer {
  start(): Promise<void>;
  stop(drainTimeoutMs: number): Promise<void>;
  readonly ready: boolean;
}

/** A flow, built: what the gateway starts, serves, watches and takes down. */
export interface BuiltLeg {
  name: string;
  /** the flow's Kafka consumers: started with the gateway, stopped (drained) first on the way down */
  loops: LegConsumer[];
  readiness: ReadinessCheck[];
  /** the flow's HTTP routes, each declared public (vendor POSTs) or admin (status): see server.ts */
  routes: SurfaceRoutes[];
  /** connectors the drop window watches */
  watched: Array<{ health: ConnectorHealth; leg: Expirable }>;
  /** events accepted and not yet finished */
  pending(): number;
  /** set scrape-time gauges */
  collect?(): void;
  /** after the loops have stopped: close destinations and producers */
  close(): Promise<void>;
}
