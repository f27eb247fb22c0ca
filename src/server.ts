import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';
import type { HealthRegistry } from './health/connector-health.js';
import type { HttpSettings } from './http/http-config.js';

export interface ReadinessCheck {
  name: string;
  ready: () => boolean;
}

/**
 * Which HTTP surface a route belongs to. `public`: what vendors post to from the internet
 * (POST /currents, POST /cohorts). `admin`: what the operator reads (metrics, health, readiness,
 * connector and cohort status). With ADMIN_HTTP_PORT set the two are different ports; without
 * it both share HTTP_PORT.
 */
export type Surface = 'public' | 'admin';

/** A fastify plugin adding routes: it must add routes of one surface only. */
export type RoutePlugin = (app: FastifyInstance) => Promise<void> | void;

/** Routes and the surface they are served on: the one way a flow hands its HTTP routes to the gateway. */
export interface SurfaceRoutes {
  readonly surface: Surface;
  readonly register: RoutePlugin;
}

/** routes vendors post to from the internet (they stay on HTTP_PORT) */
export function publicRoutes(register: RoutePlugin): SurfaceRoutes {
  return { surface: 'public', register };
}

/** routes for the operator (they move to ADMIN_HTTP_PORT when it is set) */
export function adminRoutes(register: RoutePlugin): SurfaceRoutes {
  return { surface: 'admin', register };
}

export interface ServerDeps {
  logger: Logger;
  metrics: Metrics;
  health: HealthRegistry;
  readiness: ReadinessCheck[];
  /** the flows' routes, each on its surface (the Currents ingestion is public, cohort status admin) */
  routes?: SurfaceRoutes[];
  /** ports, hosts and TLS; absent: one plain-HTTP server for everything (tests) */
  http?: HttpSettings;
  bodyLimitBytes?: number;
}

/**
 * The gateway's HTTP servers: one for everything, or, with ADMIN_HTTP_PORT, a public one that
 * serves only the vendor routes (anything else is a 404 there) and an admin one, on a loopback
 * address by default, with the operator's routes.
 */
export class HttpServers {
  private publicClosing: Promise<void> | undefined;

  private constructor(
    /** the server of HTTP_PORT */
    readonly publicServer: FastifyInstance,
    /** the server of ADMIN_HTTP_PORT, when it is set */
    readonly adminServer: FastifyInstance | undefined,
    private readonly settings: HttpSettings | undefined,
  ) {}

  static async build(d: ServerDeps): Promise<HttpServers> {
    const split = d.http?.adminPort !== undefined;
    const routes = [adminRoutes(operatorRoutes(d)), ...(d.routes ?? [])];
    const publicServer = newFastify(d, d.http?.tls);
    const adminServer = split ? newFastify(d, undefined) : undefined;
    for (const r of routes) {
      const app = r.surface === 'admin' && adminServer ? adminServer : publicServer;
      await r.register(app);
    }
    return new HttpServers(publicServer, adminServer, d.http);
  }

  /** both servers (the admin one when there is one) */
  get all(): FastifyInstance[] {
    return this.adminServer ? [this.publicServer, this.adminServer] : [this.publicServer];
  }

  /** load every route without listening (tests that need only the pipeline) */
  async ready(): Promise<void> {
    await Promise.all(this.all.map((s) => s.ready()));
  }

  async listen(): Promise<void> {
    const s = this.settings;
    await this.publicServer.listen({ port: s?.port ?? 0, host: s?.host ?? '127.0.0.1' });
    if (this.adminServer) {
      try {
        await this.adminServer.listen({ port: s?.adminPort ?? 0, host: s?.adminHost ?? '127.0.0.1' });
      } catch (err) {
        await this.publicServer.close();
        throw err;
      }
    }
  }

  /** where the public port answers, e.g. https://127.0.0.1:8443 (a wildcard bind is reached on 127.0.0.1) */
  get publicUrl(): string | undefined {
    return urlOf(this.publicServer, this.settings?.tls ? 'https' : 'http');
  }

  /** where /metrics, /healthz, /readyz, /connectors answer: the admin port, else the public one */
  get adminUrl(): string | undefined {
    return this.adminServer ? urlOf(this.adminServer, 'http') : this.publicUrl;
  }

  /** stop taking requests on the public port (vendors), keeping the admin port up while draining */
  async closePublic(): Promise<void> {
    this.publicClosing ??= this.publicServer.close();
    await this.publicClosing;
  }

  async close(): Promise<void> {
    await Promise.all([this.closePublic(), this.adminServer?.close()]);
  }
}

/** The operator's routes: metrics, liveness, readiness, connector health. */
function operatorRoutes(d: ServerDeps): RoutePlugin {
  return (app) => {
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', d.metrics.registry.contentType);
      return d.metrics.exposition();
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
  };
}

function newFastify(d: ServerDeps, tls: HttpSettings['tls']): FastifyInstance {
  const opts = {
    // request lines are info-level noise at ingestion rates; errors still come through
    loggerInstance: d.logger.child({ component: 'http' }, { level: d.logger.levelVal >= 40 ? d.logger.level : 'warn' }) as FastifyBaseLogger,
    bodyLimit: d.bodyLimitBytes ?? 1024 * 1024,
  };
  if (!tls) return Fastify(opts);
  // Read at start, like the secrets: a renewed certificate takes a restart (or a proxy that reloads).
  return Fastify({ ...opts, https: { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } }) as unknown as FastifyInstance;
}

function urlOf(app: FastifyInstance, scheme: 'http' | 'https'): string | undefined {
  const a = app.server.address();
  if (!a || typeof a !== 'object') return undefined;
  return `${scheme}://${hostFor(a)}:${a.port}`;
}

function hostFor(a: AddressInfo): string {
  if (a.address === '0.0.0.0' || a.address === '::') return '127.0.0.1';
  return a.family === 'IPv6' ? `[${a.address}]` : a.address;
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}
