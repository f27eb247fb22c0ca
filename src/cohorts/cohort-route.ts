/**
 * `POST /cohorts`: Amplitude's cohort webhook destination, on when COHORT_WEBHOOK_TOKEN is set.
 * The bearer token is checked (in constant time) on every request before the body is read; a body
 * over COHORT_WEBHOOK_MAX_BODY_BYTES is refused from its Content-Length (413) before it is read;
 * hostile bodies (not JSON, invalid UTF-8, prototype keys, too deep, huge strings) get 400, as on
 * /currents; the batch is answered 2xx only once Kafka acknowledged it (acks from all in-sync
 * replicas), within COHORT_WEBHOOK_ACK_TIMEOUT_MS (Amplitude retries, and may duplicate, a batch
 * not answered within about a second); a message_id seen before is answered 2xx and not applied twice.
 *
 * `GET /cohorts`: each sync's state, last run, members, next run, and the downloads left this month.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Counter } from 'prom-client';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { CohortSettings } from './cohort-config.js';
import type { CohortStore, StoredPush } from './cohort-store.js';
import { parseCohortWebhook } from './webhook-body.js';

export interface CohortRouteDeps {
  settings: CohortSettings;
  store: CohortStore;
  knows(cohortId: string): boolean;
  /** the message was applied and recorded in the snapshot */
  applied(cohortId: string, messageId: string): boolean;
  onStored(p: StoredPush): void;
  loaded(): boolean;
  status(): unknown;
  clock: Clock;
  logger: Logger;
  requests: Counter<'status'>;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * Routes and the surface they belong to, the shape src/server.ts takes (`SurfaceRoutes`): GET
 * /cohorts is for the operator (admin port when ADMIN_HTTP_PORT is set), POST /cohorts is what
 * Amplitude posts to from the internet (public port).
 */
export interface CohortRoute {
  readonly surface: 'public' | 'admin';
  readonly register: (app: FastifyInstance) => Promise<void> | void;
}

export function cohortRoutes(d: CohortRouteDeps): CohortRoute[] {
  const routes: CohortRoute[] = [
    {
      surface: 'admin',
      register: (app) => {
        app.get('/cohorts', async () => d.status());
      },
    },
  ];
  const token = d.settings.webhookToken;
  if (!token) return routes;
  const expected = sha256(token);
  const authorized = (header: string | undefined): boolean => {
    const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
    return m !== null && timingSafeEqual(sha256((m[1] as string).trim()), expected);
  };
  const reply = (res: FastifyReply, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): FastifyReply => {
    d.requests.inc({ status: String(status) });
    for (const [k, v] of Object.entries(headers)) res.header(k, v);
    return res.code(status).send(body);
  };
  // messages being stored right now: a retry racing the first attempt is not stored twice
  const inFlight = new Set<string>();

  routes.push({
    surface: 'public',
    register: async (app) => {
    await app.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: d.settings.webhookMaxBodyBytes }, (_req, body, done) => done(null, body));
      scope.addHook('onRequest', async (req, res) => {
        if (req.url.split('?')[0] !== '/cohorts' || req.method !== 'POST') return;
        if (!authorized(req.headers.authorization)) return reply(res, 401, { error: 'missing or invalid bearer token' });
        const length = Number(req.headers['content-length'] ?? 0);
        if (length > d.settings.webhookMaxBodyBytes) {
          res.header('connection', 'close');
          return reply(res, 413, { error: `body over ${d.settings.webhookMaxBodyBytes} bytes` });
        }
      });
      scope.setErrorHandler((err: { statusCode?: number; message: string }, _req, res) => {
        const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
        if (status === 500) d.logger.error({ err: err.message }, 'POST /cohorts failed');
        return reply(res, status, { error: status === 500 ? 'internal error' : err.message });
      });
      scope.post('/cohorts', async (req, res) => {
        const body = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
        const parsed = parseCohortWebhook(body, d.settings.webhookMaxUsers);
        if (!parsed.ok) return reply(res, parsed.status, { error: parsed.message });
        const p = parsed.push;
        if (!d.knows(p.cohortId)) return reply(res, 400, { error: `cohort ${p.cohortId} is not synced here (add it to COHORT_SYNCS)` });
        if (!d.loaded()) return reply(res, 503, { error: 'starting: cohort state not loaded yet' }, { 'retry-after': '5' });
        const id = `${p.cohortId}/${p.messageId}`;
        if (d.applied(p.cohortId, p.messageId) || d.store.hasPush(p.cohortId, p.messageId) || inFlight.has(id)) {
          return reply(res, 200, { stored: 0, duplicate: true });
        }
        const stored: StoredPush = { ...p, receivedAtMs: d.clock.now() };
        inFlight.add(id);
        let timer: NodeJS.Timeout | undefined;
        const storing = d.store.storePush(stored);
        // applied once stored, even when the answer went out as a 503 (the retry then finds it stored)
        storing.then(
          () => d.onStored(stored),
          () => undefined,
        );
        try {
          await Promise.race([
            storing,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`Kafka did not acknowledge within ${d.settings.webhookAckTimeoutMs} ms`)), d.settings.webhookAckTimeoutMs);
            }),
          ]);
        } catch (err) {
          d.logger.warn({ err: (err as Error).message, cohort: p.cohortId, messageId: p.messageId }, 'cohort webhook batch not stored; answering 503 so Amplitude retries');
          return reply(res, 503, { error: 'the batch could not be stored' }, { 'retry-after': '5' });
        } finally {
          clearTimeout(timer);
          inFlight.delete(id);
        }
        return reply(res, 200, { stored: p.users.length });
      });
    });
  } });
  return routes;
}
