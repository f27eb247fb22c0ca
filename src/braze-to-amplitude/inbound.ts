import type { BuiltLeg, LegContext } from '../leg.js';
import type { ConsumerLoop } from '../kafka/consumer-loop.js';
import { BatchingProducer } from '../kafka/batching-producer.js';
import { AmplitudeLeg } from './amplitude-leg.js';
import { IdPacer } from './id-pacer.js';
import { RetrySink } from './retry-sink.js';
import { LimiterStore } from './limiter-store.js';
import { ParkedTierConsumer } from './park-tiers.js';
import { coPartitionedAssigner } from './co-partitioned-assigner.js';
import { callingOnJoin } from '../kafka/join-hook.js';

/** Currents on Kafka → Amplitude (with per-id pacing and the two park tiers), when AMPLITUDE_API_KEY is set. */
export async function buildInbound(ctx: LegContext): Promise<BuiltLeg | undefined> {
  const { config, logger } = ctx;
  const apiKey = config.amplitude.apiKey;
  if (!apiKey) {
    logger.info('inbound leg off: AMPLITUDE_API_KEY is not set');
    return undefined;
  }
  const { topics, limits, kafka: k } = config;
  const health = ctx.health.connector('amplitude', 'amplitude');
  const pacer = limits.enabled ? new IdPacer(limits, ctx.clock, ctx.metrics) : undefined;
  // The daily counts per partition survive restarts and rebalances in a compacted topic.
  const store = pacer
    ? new LimiterStore({
        kafka: ctx.kafka,
        topic: topics.limits,
        pacer,
        logger: logger.child({ component: 'limiter-store' }),
        clock: ctx.clock,
        intervalMs: limits.saveIntervalMs,
        fetchMaxWaitMs: k.fetchMaxWaitMs,
        groupIdPrefix: `${k.groupId}.limits-reader`,
      })
    : undefined;
  const retryProducer = new BatchingProducer(ctx.producer, logger, { name: 'retry', lingerMs: 5, maxBatch: 1_000, maxInFlight: 2, maxAttempts: Infinity, ...config.kafka.writes });
  const loops: ConsumerLoop[] = [];
  const leg = new AmplitudeLeg({
    amplitude: { ...config.amplitude, apiKey },
    settings: config.inbound,
    ...(pacer ? { pacer } : {}),
    quotaAction: limits.quotaAction,
    quotaBucketMs: limits.quotaBucketMs,
    retry: { topic: topics.retry, quotaTopic: topics.retryQuota, producer: retryProducer },
    deadLetters: ctx.deadLetters,
    health,
    logger: logger.child({ leg: 'inbound' }),
    metrics: ctx.metrics,
    clock: ctx.clock,
    onStopped: (stopped: boolean) => {
      for (const l of loops) stopped ? l.pause() : l.resume();
    },
    // Amplitude deduplicates by insert_id, so a crash's re-sends are harmless here: the interval
    // commit is enough, and a commit per request would cost more than it saves.
  });
  // Partition p of the Currents topic and of both park tiers goes to the same instance in every
  // group, so a parked event comes back to the process that counts its key's limits. A rebalance
  // of any of the three groups saves the counts of the partitions this member owns as it starts.
  const assigner = coPartitionedAssigner(config.health.instanceId);
  const partitionAssigners = [store ? callingOnJoin(assigner, () => void store.onRebalancing()) : assigner];
  const onReassigned = (assigned: string[]): void => {
    if (!store) return;
    const mine = assigned.filter((a) => a.startsWith(`${topics.brazeCurrents}:`)).map((a) => Number(a.slice(a.lastIndexOf(':') + 1)));
    void store.onAssigned(mine).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'limiter counts could not be restored for the new partitions'));
  };
  const retryLoop = ctx.consumerLoop('retry', topics.retry, 'inbound', new RetrySink(leg, ctx.clock, limits.retryMaxHeld), { partitionAssigners });
  const loop = ctx.consumerLoop('inbound', topics.brazeCurrents, 'inbound', leg, { partitionAssigners, onReassigned });
  loops.push(retryLoop, loop);
  const quotaTier = new ParkedTierConsumer({
    kafka: ctx.kafka,
    groupId: `${k.groupId}.retry-quota`,
    topic: topics.retryQuota,
    sink: leg,
    clock: ctx.clock,
    logger: logger.child({ leg: 'inbound', topic: topics.retryQuota }),
    maxHeldPerPartition: limits.quotaParkMaxHeldPerPartition,
    fetchMaxWaitMs: k.fetchMaxWaitMs,
    sessionTimeoutMs: k.sessionTimeoutMs,
    commitIntervalMs: k.commitIntervalMs,
    partitionAssigners,
    onRestart: () => ctx.metrics.consumerRestarts.inc({ leg: 'inbound' }),
  });
  store?.start(ctx.producer);
  const evictTimer = pacer ? setInterval(() => pacer.evictIdle(), 60_000) : undefined;
  logger.info({ topic: topics.brazeCurrents, endpoint: config.amplitude.httpApiUrl }, 'inbound leg (Currents -> Amplitude) on');
  return {
    name: 'inbound',
    loops: [...loops, quotaTier],
    readiness: [
      { name: 'inbound_consumer', ready: () => loop.ready },
      { name: 'retry_consumer', ready: () => retryLoop.ready },
      { name: 'retry_quota_consumer', ready: () => quotaTier.ready },
    ],
    routes: [],
    watched: [{ health, leg }],
    pending: () => leg.pending,
    collect: () => {
      ctx.metrics.inFlight.set({ leg: 'inbound' }, leg.pending);
      ctx.metrics.limiterTracked.set(pacer?.trackedIdentities ?? 0);
      ctx.metrics.limiterAboveQuota.set(pacer?.identitiesAbove(0.8) ?? 0);
    },
    close: async () => {
      if (evictTimer) clearInterval(evictTimer);
      await store?.stop();
      await leg.close();
      retryProducer.close();
    },
  };
}
