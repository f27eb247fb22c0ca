import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';
import type { HealthRegistry } from './health/connector-health.js';

export interface ReadinessCheck {
  name: string;
  ready: () => boolean;
}

export interface ServerDeps {
  logger: Logger;
  metrics: Metrics;
  health: HealthRegistry;
  readiness: ReadinessCheck[];
  /** extra routes (the Currents ingestion) registered by the legs that own them */
  plugins?: Array<(app: FastifyInstance) => Promise<void> | void>;
  bodyLimitBytes?: number;
}

/** The operator's HTTP surface: metrics, liveness, readiness, connector health, and the legs' routes. */
export async function buildServer(d: ServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // request lines are info-level noise at ingestion rates; errors still come through
    loggerInstance: d.logger.child({ component: 'http' }, { level: d.logger.levelVal >= 40 ? d.logger.level : 'warn' }) as FastifyBaseLogger,
    bodyLimit: d.bodyLimitBytes ?? 1024 * 1024,
  });

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', d.metrics.registry.contentType);
    return d.metrics.registry.metrics();
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const checks = Object.fromEntries(d.readiness.map((c) => [c.name, c.ready()]));
    const ready = d.readiness.every((c) => c.ready());
    reply.code(ready ? 200 : 503);
    return { ready, checks };
  });

  // each connector merged over every gateway instance (HealthRegistry.report, src/health/connector-health.ts)
  app.get('/connectors', async () => d.health.report());

  for (const p of d.plugins ?? []) await p(app);
  return app;
}
