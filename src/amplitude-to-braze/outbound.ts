import type { BuiltLeg, LegContext } from '../leg.js';
import type { BrazeClient } from './braze-client.js';
import { createBrazeLeg } from './braze-leg.js';
import { createOutboundMapper } from './map-to-braze.js';
import { AttributeState } from './attribute-state.js';
import { AttributeStore } from './attribute-store.js';
import { WorkerProducer } from '../kafka/producer-worker.js';
import type { MessageSink } from '../kafka/consumer-loop.js';

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
  // The state's writes go through a producer in a worker thread: KafkaJS's produce encoding of a
  // flush (tens of thousands of records) would otherwise stall the consuming thread. A write that
  // fails (the worker died, Kafka away) marks its users changed again for the next flush.
  const stateWriter = store
    ? new WorkerProducer({
        kafka: config.kafka,
        logLevel: config.logLevel,
        clientSuffix: '-attribute-state',
        retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 5_000 },
        batching: { name: 'attribute-state', lingerMs: 5, maxBatch: 2_000, maxInFlight: 2, maxAttempts: 3, ...config.kafka.writes },
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
  // The state is (re)loaded after every assignment, the first included, and nothing is consumed
  // until it is: users whose partitions moved here were written by another member meanwhile, so
  // what this one remembers of them may be stale, and an empty state would write every user's
  // whole snapshot again and let an old event overwrite a newer value. Every member writes its
  // state when a rebalance begins (onRebalancing), and the new owner waits
  // OUTBOUND_ATTRIBUTE_STATE_HANDOVER_MS for those writes before it reads the topic.
  let reloads = 0; // asked for and not finished
  let reloadChain: Promise<void> = Promise.resolve();
  const reload = async (): Promise<void> => {
    if (!attributeState || !store) return;
    await store.flush().catch(() => 0);
    await new Promise((r) => setTimeout(r, config.braze?.attributeStateHandoverMs ?? 0));
    attributeState.clear();
    try {
      await store.load();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'attribute state could not be restored; every attribute is written once more');
    }
  };
  const onReassigned = (): void => {
    if (!attributeState) return;
    reloads++;
    // one at a time: a reload under way began before this assignment, so read again after it
    reloadChain = reloadChain.then(reload).finally(() => {
      reloads--;
    });
  };
  const onRebalancing = (): void => {
    void store?.flush().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'attribute state: write at a rebalance failed'));
  };
  // The consumer hands nothing to the leg while the state reloads.
  const sink: MessageSink = {
    accept: (msg) => leg.accept(msg),
    hasCapacity: () => reloads === 0 && leg.hasCapacity(),
    drain: (ms) => leg.drain(ms),
  };
  const loop = ctx.consumerLoop('outbound', config.topics.amplitudeEvents, 'outbound', sink, { onReassigned, onRebalancing });
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
