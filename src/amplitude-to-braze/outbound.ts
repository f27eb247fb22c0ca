import type { BuiltLeg, LegContext } from '../leg.js';
import type { BrazeClient } from './braze-client.js';
import { createBrazeLeg } from './braze-leg.js';
import { createOutboundMapper } from './map-to-braze.js';
import { AttributeState } from './attribute-state.js';
import { AttributeStore } from './attribute-store.js';
import { WorkerProducer } from '../kafka/producer-worker.js';

/** Amplitude events on Kafka → Braze, when Braze credentials are set. */
export async function buildOutbound(ctx: LegContext, client: BrazeClient | undefined): Promise<BuiltLeg | undefined> {
  const { config, logger } = ctx;
  if (!config.braze || !client) {
    logger.info('outbound leg off: BRAZE_REST_ENDPOINT and BRAZE_API_KEY are not set');
    return undefined;
  }
  const health = ctx.health.connector('braze', 'braze');
  // What each user's attributes last received, so an attribute is written only when it changed and
  // never from an older event; restored before consuming, so a restart does not write everything again.
  const maxUsers = config.outbound.attributeStateMaxUsers;
  const attributeState = maxUsers > 0 ? new AttributeState({ maxUsers }) : undefined;
  const store = attributeState
    ? new AttributeStore({
        kafka: ctx.kafka,
        topic: config.topics.attributeState,
        state: attributeState,
        logger: logger.child({ component: 'attribute-state' }),
        fetchMaxWaitMs: config.kafka.fetchMaxWaitMs,
        groupIdPrefix: `${config.kafka.groupId}.attribute-state-reader`,
      })
    : undefined;
  if (store) await store.load().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'attribute state could not be restored; every attribute is written once more'));
  // The state's writes go through a producer in a worker thread: KafkaJS's produce encoding of a
  // flush (tens of thousands of records) would otherwise stall the consuming thread. A write that
  // fails (the worker died, Kafka away) marks its users changed again for the next flush.
  const stateWriter = store
    ? new WorkerProducer({
        kafka: config.kafka,
        logLevel: config.logLevel,
        clientSuffix: '-attribute-state',
        retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 5_000 },
        batching: { name: 'attribute-state', lingerMs: 5, maxBatch: 2_000, maxInFlight: 2, maxAttempts: 3, retryBaseMs: 500, ackTimeoutMs: 30_000 },
        logger: logger.child({ component: 'attribute-state-writer' }),
      })
    : undefined;
  await stateWriter?.start();
  const loopRef: { loop?: ReturnType<LegContext['consumerLoop']> } = {};
  const leg = createBrazeLeg({
    settings: config.braze,
    client,
    mapper: createOutboundMapper(config.outbound, { attributeState: attributeState ?? null }),
    ...(attributeState ? { attributeState } : {}),
    deadLetters: ctx.deadLetters,
    health,
    logger: logger.child({ leg: 'outbound' }),
    metrics: ctx.metrics,
    clock: ctx.clock,
    onStopped: (stopped: boolean) => (stopped ? loopRef.loop?.pause() : loopRef.loop?.resume()),
    // Braze does not deduplicate: commit right after each delivery, so a crash re-sends little.
    onProgress: () => loopRef.loop?.requestCommit(),
  });
  // Users whose partitions moved here were written by another instance meanwhile: what this
  // instance remembers of them may be stale. Save what it has, forget it, and read the topic again.
  const onReassigned = (_assigned: string[], first: boolean): void => {
    if (first || !attributeState || !store) return;
    void store
      .flush()
      .catch(() => 0)
      .then(() => {
        attributeState.clear();
        return store.load();
      })
      .catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'attribute state could not be reloaded after a rebalance'));
  };
  const loop = ctx.consumerLoop('outbound', config.topics.amplitudeEvents, 'outbound', leg, { onReassigned });
  loopRef.loop = loop;
  if (store && stateWriter) store.start(stateWriter);
  logger.info({ topic: config.topics.amplitudeEvents, endpoint: client.url }, 'outbound leg (Amplitude events -> Braze) on');
  return {
    name: 'outbound',
    loops: [loop],
    readiness: [{ name: 'outbound_consumer', ready: () => loop.ready }],
    routes: [],
    watched: [{ health, leg }],
    pending: () => leg.pending,
    collect: () => ctx.metrics.inFlight.set({ leg: 'outbound' }, leg.pending),
    close: async () => {
      await leg.close();
      await store?.stop();
      await stateWriter?.close();
    },
  };
}
