/**
 * The cohort and trait sync as one of the gateway's flows (src/leg.ts): built when COHORT_SYNCS and
 * the Braze credentials are set, sharing the gateway's Braze client (one workspace request budget),
 * producer, health registry and metrics. Its state is loaded from TOPIC_COHORTS here, before the
 * gateway serves POST /cohorts, and its first runs start at once.
 */
import type { LegContext } from '../leg.js';
import type { ReadinessCheck } from '../server.js';
import type { Notifier } from '../health/notify.js';
import type { TrackPort } from './braze-membership.js';
import type { CohortRoute } from './cohort-route.js';
import { buildCohortSync, type CohortSync } from './cohort-sync.js';

/** A built flow (the shape of src/leg.ts's BuiltLeg): no consumer loops, two routes, its own connectors. */
export interface CohortLeg {
  name: 'cohorts';
  sync: CohortSync;
  loops: never[];
  readiness: ReadinessCheck[];
  routes: CohortRoute[];
  watched: never[];
  pending(): number;
  close(): Promise<void>;
}

export async function buildCohortLeg(ctx: LegContext, braze: TrackPort | undefined, notifier?: Notifier): Promise<CohortLeg | undefined> {
  const { config, logger } = ctx;
  if (!config.cohorts || !braze) {
    if (config.cohorts === undefined) logger.info('cohort sync off: COHORT_SYNCS (and the Braze credentials) not set');
    return undefined;
  }
  const sync = buildCohortSync({
    config,
    kafka: ctx.kafka,
    producer: ctx.producer,
    braze,
    health: ctx.health,
    metrics: ctx.metrics,
    logger: logger.child({ leg: 'cohorts' }),
    clock: ctx.clock,
    ...(notifier ? { notifier } : {}),
  });
  await sync.start();
  return {
    name: 'cohorts',
    sync,
    loops: [],
    readiness: [{ name: 'cohort_state', ready: () => sync.ready() }],
    routes: sync.routes,
    watched: [],
    pending: () => sync.status().syncs.reduce((n, s) => n + Number(s.pending_pushes ?? 0), 0),
    close: () => sync.close(),
  };
}
