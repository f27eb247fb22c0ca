import type { BuiltLeg, LegContext } from '../leg.js';
import { BrazeClient } from './braze-client.js';
import { createBrazeLeg } from './braze-leg.js';
import { createOutboundMapper } from './map-to-braze.js';

/** Amplitude events on Kafka → Braze, when Braze credentials are set. */
export function buildOutbound(ctx: LegContext, client: BrazeClient | undefined): BuiltLeg | undefined {
  const { config, logger } = ctx;
  if (!config.braze || !client) {
    logger.info('outbound leg off: BRAZE_REST_ENDPOINT and BRAZE_API_KEY are not set');
    return undefined;
  }
  const health = ctx.health.connector('braze', 'braze');
  const loopRef: { loop?: ReturnType<LegContext['consumerLoop']> } = {};
  const leg = createBrazeLeg({
    settings: config.braze,
    client,
    mapper: createOutboundMapper(config.outbound),
    deadLetters: ctx.deadLetters,
    health,
    logger: logger.child({ leg: 'outbound' }),
    metrics: ctx.metrics,
    clock: ctx.clock,
    onStopped: (stopped: boolean) => (stopped ? loopRef.loop?.pause() : loopRef.loop?.resume()),
    // Braze does not deduplicate: commit right after each delivery, so a crash re-sends little.
    onProgress: () => loopRef.loop?.requestCommit(),
  });
  const loop = ctx.consumerLoop('outbound', config.topics.amplitudeEvents, 'outbound', leg);
  loopRef.loop = loop;
  logger.info({ topic: config.topics.amplitudeEvents, endpoint: client.url }, 'outbound leg (Amplitude events -> Braze) on');
  return {
    name: 'outbound',
    loops: [loop],
    readiness: [{ name: 'outbound_consumer', ready: () => loop.ready }],
    routes: [],
    watched: [{ health, leg }],
    pending: () => leg.pending,
    collect: () => ctx.metrics.inFlight.set({ leg: 'outbound' }, leg.pending),
    close: () => leg.close(),
  };
}
