import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Message } from 'kafkajs';
import type { CurrentsSettings } from '../config/config.js';
import type { MessageWriter } from '../kafka/batching-producer.js';
import type { DeadLetterWriter } from '../kafka/dead-letter.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Clock } from '../clock.js';
import { currentsContentKind, eventSources, parseCurrentsBody, parseJsonText, validateCurrentsEvent } from './currents-body.js';
import type { DeadLetterReason } from '../delivery/outcome.js';
import { decodeAvroContainer } from './currents-avro.js';
import { identityKey } from '../braze-to-amplitude/currents-to-amplitude.js';

export const RECEIVED_AT_HEADER = 'received-at';

export interface CurrentsRouteDeps {
  settings: CurrentsSettings;
  topic: string;
  /** acknowledged writes: a producer in a worker thread (ingest.ts), or a BatchingProducer */
  producer: MessageWriter;
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
    let sources: RawSources | undefined;
    // the onRequest hook has already refused (415) any other type
    const kind = currentsContentKind(req.headers['content-type']);
    if (kind.ok && kind.kind === 'avro') {
      try {
        raws = (await decodeAvroContainer(body)).events;
      } catch (err) {
        return { status: 400, body: { error: `invalid Avro container: ${(err as Error).message}` } };
      }
      if (raws.length > d.settings.maxEventsPerBatch) return { status: 413, body: { error: `more than ${d.settings.maxEventsPerBatch} events` } };
    } else {
      // 400 only for what can never be stored: bytes that are not UTF-8 JSON, or not the envelope.
      // Everything inside an event (forbidden keys, depth, long strings, missing fields) is judged
      // per event, so one bad event is dead-lettered instead of costing its whole batch.
      const parsed = parseJsonText(body);
      if (!parsed.ok) return { status: 400, body: { error: parsed.message } };
      const shape = parseCurrentsBody(parsed.value, d.settings);
      if (!shape.ok) return { status: shape.status, body: { error: shape.message } };
      raws = shape.events;
      sources = lazySources(parsed.text, raws.length);
    }
    if (raws.length === 0) return { status: 200, body: { stored: 0, dead_lettered: 0 } };
    if (!d.kafkaUp()) return { status: 503, body: { error: 'Kafka is unavailable' }, headers: { 'retry-after': '5' } };
    if (pendingEvents + raws.length > d.settings.maxPendingEvents) {
      return { status: 429, body: { error: 'overloaded: too many events awaiting Kafka acknowledgement' }, headers: { 'retry-after': '1' } };
    }

    pendingEvents += raws.length;
    let result: StoreResult;
    try {
      result = await storeCurrentsEvents(raws, d, sources);
    } catch (err) {
      d.logger.warn({ err: (err as Error).message, events: raws.length }, 'Currents batch not stored; answering 503 so Braze retries');
      return { status: 503, body: { error: 'Kafka did not acknowledge the events' }, headers: { 'retry-after': '5' } };
    } finally {
      pendingEvents -= raws.length;
    }
    d.metrics.currentsEvents.inc({ outcome: 'stored' }, result.stored);
    d.metrics.currentsEvents.inc({ outcome: 'dead_lettered' }, result.deadLettered);
    return { status: 200, body: { stored: result.stored, dead_lettered: result.deadLettered } };
  };

  const reply = (res: FastifyReply, a: Answer): FastifyReply => {
    d.metrics.currentsRequests.inc({ status: String(a.status) });
    for (const [k, v] of Object.entries(a.headers ?? {})) res.header(k, v);
    return res.code(a.status).send(a.body);
  };

  return async (app) => {
    await app.register(async (scope) => {
      // The body is read raw: JSON is parsed by parseJsonText (strict UTF-8) and judged per event, Avro by avsc.
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
        const kind = currentsContentKind(req.headers['content-type']);
        if (!kind.ok) {
          // Before the body is read; close so an unread body cannot confuse the next request.
          res.header('connection', 'close');
          return reply(res, { status: 415, body: { error: kind.message } });
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

/** The source text of the i-th event, when the body was JSON text (dead letters keep it byte for byte). */
export type RawSources = (index: number) => string | undefined;

/** Scans the body for the events' source texts only when a dead letter first needs one. */
function lazySources(text: string, count: number): RawSources {
  let spans: string[] | undefined | null = null;
  return (i) => {
    if (spans === null) {
      const found = eventSources(text);
      spans = found !== undefined && found.length === count ? found : undefined;
    }
    return spans?.[i];
  };
}

/**
 * Validates Currents events one by one and writes them to the Currents topic, keyed by their
 * Amplitude identity (the user id when there is one, else the device id: see identityKey); an event that can never be delivered goes to the dead-letter topic with its
 * reason (its source text as sent where there is one, else its JSON), through DeadLetterWriter, which
 * logs and counts it. Resolves once Kafka has acknowledged all of it; rejects if it did not.
 */
export async function storeCurrentsEvents(
  raws: unknown[],
  d: Pick<CurrentsRouteDeps, 'settings' | 'topic' | 'producer' | 'deadLetters' | 'minIdLength' | 'clock'>,
  sources?: RawSources,
): Promise<StoreResult> {
  const now = d.clock.now();
  const timestamp = String(now);
  const stored: Message[] = [];
  const dead: Array<Promise<void>> = [];
  const deadLetter = (value: string, reason: DeadLetterReason, error: string): Promise<void> =>
    d.deadLetters.write({ leg: 'inbound', connector: 'currents', reason, error, value: Buffer.from(value), key: null, firstFailureMs: now });
  for (let i = 0; i < raws.length; i++) {
    const raw = raws[i];
    const v = validateCurrentsEvent(raw, d.settings);
    if (!v.ok) {
      dead.push(deadLetter(sources?.(i) ?? jsonOf(raw), v.reason, v.message));
      continue;
    }
    const ev = v.event;
    const value = JSON.stringify(ev);
    if (!ev.user.external_user_id && !ev.user.device_id) {
      dead.push(deadLetter(sources?.(i) ?? value, 'no_identity', 'event has neither external_user_id nor device_id (Braze sends such events to Amplitude neither)'));
      continue;
    }
    // Ids Amplitude would refuse still need a key; the leg decides their fate and counts it.
    const key = identityKey(ev, { minIdLength: d.minIdLength }) ?? ev.user.external_user_id ?? ev.user.device_id ?? null;
    // The record's timestamp says when the gateway received it (the leg ages events by it); a
    // header per record would cost a fifth more to encode.
    stored.push({ key, value, timestamp });
  }
  await Promise.all([d.producer.send(d.topic, stored), ...dead]);
  return { stored: stored.length, deadLettered: dead.length };
}

/**
 * JSON of a refused event that has no source text (an Avro record). `JSON.stringify` recurses, so
 * a value nested thousands deep cannot be written back: its dead letter then says so instead.
 */
function jsonOf(raw: unknown): string {
  try {
    return JSON.stringify(raw) ?? 'null';
  } catch (err) {
    return JSON.stringify({ unserialisable_event: (err as Error).message });
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
