import type { BuiltLeg, LegContext } from '../leg.js';
import type { ConsumerLoop } from '../kafka/consumer-loop.js';
import { BatchingProducer } from '../kafka/batching-producer.js';
import { AmplitudeLeg } from './amplitude-leg.js';
import { IdPacer } from './id-pacer.js';
import { RetrySink } from './retry-sink.js';

/** Currents on Kafka → Amplitude (with per-id pacing and the retry topic), when AMPLITUDE_API_KEY is set. */
export function buildInbound(ctx: LegContext): BuiltLeg | undefined {
  const { config, logger } = ctx;
  const apiKey = config.amplitude.apiKey;
  if (!apiKey) {
    logger.info('inbound leg off: AMPLITUDE_API_KEY is not set');
    return undefined;
  }
  const health = ctx.health.connector('amplitude', 'amplitude');
  const pacer = config.limits.enabled ? new IdPacer(config.limits, ctx.clock, ctx.metrics) : undefined;
  const retryProducer = new BatchingProducer(ctx.producer, logger, { name: 'retry', lingerMs: 5, maxBatch: 1_000, maxInFlight: 2, maxAttempts: Infinity, retryBaseMs: 500, ackTimeoutMs: 30_000 });
  const loops: ConsumerLoop[] = [];
  const leg = new AmplitudeLeg({
    amplitude: { ...config.amplitude, apiKey },
    settings: config.inbound,
    ...(pacer ? { pacer } : {}),
    retry: { topic: config.topics.retry, producer: retryProducer },
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
  const retryLoop = ctx.consumerLoop('retry', config.topics.retry, 'inbound', new RetrySink(leg, ctx.clock, config.limits.retryMaxHeld));
  const loop = ctx.consumerLoop('inbound', config.topics.brazeCurrents, 'inbound', leg);
  loops.push(retryLoop, loop);
  const evictTimer = pacer ? setInterval(() => pacer.evictIdle(), 60_000) : undefined;
  logger.info({ topic: config.topics.brazeCurrents, endpoint: config.amplitude.httpApiUrl }, 'inbound leg (Currents -> Amplitude) on');
  return {
    name: 'inbound',
    loops,
    readiness: [
      { name: 'inbound_consumer', ready: () => loop.ready },
      { name: 'retry_consumer', ready: () => retryLoop.ready },
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
      await leg.close();
      retryProducer.close();
    },
  };
}
