import type { BuiltLeg, LegContext } from '../leg.js';
import { WorkerProducer } from '../kafka/producer-worker.js';
import { currentsRoute } from './currents-route.js';
import { publicRoutes } from '../server.js';

/** POST /currents → Kafka, when CURRENTS_TOKEN is set. */
export async function buildCurrentsIngest(ctx: LegContext): Promise<BuiltLeg | undefined> {
  const { config, logger } = ctx;
  if (!config.currents) {
    logger.info('Currents ingestion off: CURRENTS_TOKEN is not set');
    return undefined;
  }
  // A producer of its own with short retries: a Currents request must get its 503 in seconds when
  // Kafka is away, not wait out the long retries the dead-letter writes use. It runs in a worker
  // thread, so KafkaJS's produce encoding does not compete with the requests for the main thread;
  // the route hands it each request's encoded events and answers once Kafka acknowledged them.
  const batcher = new WorkerProducer({
    kafka: config.kafka,
    logLevel: config.logLevel,
    clientSuffix: '-currents',
    retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 },
    batching: {
      name: 'currents',
      lingerMs: 2,
      maxBatch: 2_000,
      maxInFlight: 4,
      // the request path: one quick second try, then Braze is answered 503 and retries itself
      maxAttempts: 2,
      retryBaseMs: 100,
      retryMaxMs: 100,
      ackTimeoutMs: config.currents.ackTimeoutMs,
    },
    logger,
  });
  await batcher.start();
  logger.info({ topic: config.topics.brazeCurrents }, 'Currents ingestion (POST /currents -> Kafka) on');
  return {
    name: 'currents',
    loops: [],
    readiness: [{ name: 'currents_producer', ready: () => batcher.up }],
    routes: [
      publicRoutes(currentsRoute({
        settings: config.currents,
        topic: config.topics.brazeCurrents,
        producer: batcher,
        deadLetters: ctx.deadLetters,
        minIdLength: config.inbound.mapping.minIdLength,
        metrics: ctx.metrics,
        logger: logger.child({ component: 'currents' }),
        clock: ctx.clock,
        kafkaUp: () => ctx.kafkaUp() && batcher.up,
      })),
    ],
    watched: [],
    pending: () => 0,
    close: async () => {
      await batcher.close().catch(() => undefined);
    },
  };
}
