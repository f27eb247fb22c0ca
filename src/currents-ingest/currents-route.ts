import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Message } from 'kafkajs';
import type { CurrentsSettings } from '../config/config.js';
import type { BatchingProducer } from '../kafka/batching-producer.js';
import type { DeadLetterWriter } from '../kafka/dead-letter.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Clock } from '../clock.js';
import { checkDepthAndStrings, parseCurrentsBody, safeJsonParse, validateCurrentsEvent } from './currents-body.js';
import { decodeAvroContainer } from './currents-avro.js';
import { identityKey } from '../braze-to-amplitude/currents-to-amplitude.js';

export const RECEIVED_AT_HEADER = 'received-at';

export interface CurrentsRouteDeps {
  settings: CurrentsSettings;
  topic: string;
  producer: BatchingProducer;
  deadLetters: DeadLetterWriter;
  minIdLength: number;
  metrics: Metrics;
  logger: Logger;
  clock: Clock;
  /** false while Kafka is known to be unreachable: answer 503 at once rather than wait */
  kafkaUp: () => boolean;
}

type Answer = { status: number; body: Record<string, unknown>; headers?: Record<string, string> };

/**
 * `POST /currents`, Braze's Custom HTTP connector contract: the token is checked before the body
 * is read, the body is bounded and validated, bad events are dead-lettered one by one, and the
 * answer is 2xx only once Kafka has acknowledged every event (or its dead letter).
 */
export function currentsRoute(d: CurrentsRouteDeps): (app: FastifyInstance) => Promise<void> {
  const expected = sha256(d.settings.token);
  let pendingEvents = 0;

  const authorized = (header: string | undefined): boolean => {
    const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
    // Compare digests so the comparison takes the same time whatever the token's length.
    return m !== null && timingSafeEqual(sha256((m[1] as string).trim()), expected);
  };

  const handle = async (req: FastifyRequest): Promise<Answer> => {
    const body = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
    let raws: unknown[];
    let bodyChecked = true;
    if (/^avro\/binary/i.test(req.headers['content-type'] ?? '')) {
      try {
        raws = (await decodeAvroContainer(body)).events;
        bodyChecked = false;
      } catch (err) {
        return { status: 400, body: { error: `invalid Avro container: ${(err as Error).message}` } };
      }
      if (raws.length > d.settings.maxEventsPerBatch) return { status: 413, body: { error: `more than ${d.settings.maxEventsPerBatch} events` } };
    } else {
      const parsed = safeJsonParse(body);
      if (!parsed.ok) return { status: 400, body: { error: parsed.message } };
      // Bounds hold for the whole request: a body too deep or with huge strings can never succeed.
      const bounded = checkDepthAndStrings(parsed.value, d.settings);
      if (!bounded.ok) return { status: 400, body: { error: bounded.message } };
      const shape = parseCurrentsBody(parsed.value, d.settings);
      if (!shape.ok) return { status: shape.status, body: { error: shape.message } };
      raws = shape.events;
    }
    if (raws.length === 0) return { status: 200, body: { stored: 0, dead_lettered: 0 } };
    if (!d.kafkaUp()) return { status: 503, body: { error: 'Kafka is unavailable' }, headers: { 'retry-after': '5' } };
    if (pendingEvents + raws.length > d.settings.maxPendingEvents) {
      return { status: 429, body: { error: 'overloaded: too many events awaiting Kafka acknowledgement' }, headers: { 'retry-after': '1' } };
    }

    pendingEvents += raws.length;
    let result: StoreResult;
    try {
      result = await storeCurrentsEvents(raws, d, bodyChecked);
    } catch (err) {
      d.logger.warn({ err: (err as Error).message, events: raws.length }, 'Currents batch not stored; answering 503 so Braze retries');
      return { status: 503, body: { error: 'Kafka did not acknowledge the events' }, headers: { 'retry-after': '5' } };
    } finally {
      pendingEvents -= raws.length;
    }
    const stored = { length: result.stored };
    const dead = { length: result.deadLettered };
    d.metrics.currentsEvents.inc({ outcome: 'stored' }, stored.length);
    d.metrics.currentsEvents.inc({ outcome: 'dead_lettered' }, dead.length);
    return { status: 200, body: { stored: stored.length, dead_lettered: dead.length } };
  };

  const reply = (res: FastifyReply, a: Answer): FastifyReply => {
    d.metrics.currentsRequests.inc({ status: String(a.status) });
    for (const [k, v] of Object.entries(a.headers ?? {})) res.header(k, v);
    return res.code(a.status).send(a.body);
  };

  return async (app) => {
    await app.register(async (scope) => {
      // The body is read raw: JSON is parsed by safeJsonParse (UTF-8, prototype keys, depth), Avro by avsc.
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: d.settings.maxBodyBytes }, (_req, body, done) => done(null, body));
      scope.addHook('onRequest', async (req, res) => {
        if (req.url.split('?')[0] !== '/currents') return;
        if (!authorized(req.headers.authorization)) return reply(res, { status: 401, body: { error: 'missing or invalid bearer token' } });
        const length = Number(req.headers['content-length'] ?? 0);
        if (length > d.settings.maxBodyBytes) {
          // Answer before reading, and close, so the client sees the 413 rather than a reset.
          res.header('connection', 'close');
          return reply(res, { status: 413, body: { error: `body over ${d.settings.maxBodyBytes} bytes` } });
        }
      });
      scope.setErrorHandler((err: { statusCode?: number; message: string }, _req, res) => {
        const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
        if (status === 500) d.logger.error({ err: err.message }, 'POST /currents failed');
        return reply(res, { status, body: { error: status === 500 ? 'internal error' : err.message } });
      });
      scope.post('/currents', async (req, res) => reply(res, await handle(req)));
    });
  };
}

export interface StoreResult {
  stored: number;
  deadLettered: number;
}

/**
 * Validates Currents events one by one and writes them to the Currents topic, keyed by their
 * Amplitude identity; events that can never be delivered go to the dead-letter topic with their
 * reason. Resolves once Kafka has acknowledged all of it; rejects if it did not.
 */
export async function storeCurrentsEvents(
  raws: unknown[],
  d: Pick<CurrentsRouteDeps, 'settings' | 'topic' | 'producer' | 'deadLetters' | 'minIdLength' | 'clock'>,
  /** the whole body already passed checkDepthAndStrings */
  bodyChecked = false,
): Promise<StoreResult> {
  const now = d.clock.now();
  const stored: Message[] = [];
  const dead: Array<Promise<void>> = [];
  const deadLetter = (value: string, reason: string, error: string): Promise<void> =>
    d.deadLetters.write({ leg: 'inbound', connector: 'currents', reason, error, value: Buffer.from(value), key: null, firstFailureMs: now });
  for (const raw of raws) {
    const v = validateCurrentsEvent(raw, d.settings, bodyChecked);
    const value = JSON.stringify(v.ok ? v.event : raw) ?? 'null';
    if (!v.ok) {
      dead.push(deadLetter(value, v.reason, v.message));
      continue;
    }
    const ev = v.event;
    if (!ev.user.external_user_id && !ev.user.device_id) {
      dead.push(deadLetter(value, 'no_identity', 'event has neither external_user_id nor device_id (Braze sends such events to Amplitude neither)'));
      continue;
    }
    // Ids Amplitude would refuse still need a key; the leg decides their fate and counts it.
    const key = identityKey(ev, { minIdLength: d.minIdLength }) ?? ev.user.device_id ?? ev.user.external_user_id ?? null;
    // The record's timestamp says when the gateway received it (the leg ages events by it); a
    // header per record would cost a fifth more to encode.
    stored.push({ key, value, timestamp: String(now) });
  }
  await Promise.all([d.producer.send(d.topic, stored), ...dead]);
  return { stored: stored.length, deadLettered: dead.length };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
