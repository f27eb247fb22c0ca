import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { currentsEventToAvroRecord, encodeAvroContainer, loadCurrentsSchemas } from '../../src/currents-ingest/currents-avro.js';
import { readTopic, testKafka, useMockCluster } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();

/** POST /currents on a gateway with ingestion on and delivery to Amplitude off, so the topics hold exactly what was posted. */
async function setup(env: Record<string, string> = {}) {
  const { topics, config, log } = await inboundHarness(broker, { AMPLITUDE_API_KEY: '', CURRENTS_ACK_TIMEOUT_MS: '5000', ...env });
  const gw = new Gateway({ config, logger: log.logger });
  broker.cleanups.push(() => gw.stop(5_000));
  await gw.start();
  const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
    request(`${gw.address}/currents`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}`, 'braze-currents-version': '1', ...headers },
    }).then(async (r) => ({ status: r.statusCode, body: (await r.body.json().catch(() => ({}))) as Record<string, unknown> }));
  /** messages in a topic, from its end offsets (nothing is consumed) */
  const count = async (topic: string): Promise<number> => {
    const admin = testKafka(broker.cluster.bootstrap).admin();
    await admin.connect();
    try {
      return (await admin.fetchTopicOffsets(topic)).reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
    } finally {
      await admin.disconnect();
    }
  };
  return { gw, post, topics, count };
}

describe('POST /currents: media types', () => {
  it('answers 415 to a JSON body sent as text/plain (and other types), before reading it, and writes nothing', async () => {
    const { gw, post, topics, count } = await setup();
    const body = JSON.stringify({ events: [sampleCurrentsEvent(0, { users: 5 })] });
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'application/json; charset=iso-8859-1']) {
      const r = await post(body, { 'content-type': type });
      expect(r.status, type).toBe(415);
      expect(String(r.body.error)).toMatch(/not supported/);
    }
    // the token is still checked first
    expect((await post(body, { 'content-type': 'text/plain', authorization: 'Bearer wrong' })).status).toBe(401);
    expect(await count(topics.currents)).toBe(0);
    expect(await count(topics.dlq)).toBe(0);
    expect(await gw.metrics.value('gateway_currents_requests_total', { status: '415' })).toBe(4);
    expect(await gw.metrics.value('gateway_currents_events_total')).toBe(0);
    // JSON with or without a charset is accepted
    expect((await post(body, { 'content-type': 'application/json; charset=utf-8' })).status).toBe(200);
    expect((await post(JSON.stringify({ events: [sampleCurrentsEvent(1, { users: 5 })] }), { 'content-type': 'application/json' })).status).toBe(200);
    expect(await count(topics.currents)).toBe(2);
  });

  it('still accepts Avro object container files (avro/binary)', async () => {
    const { post, topics } = await setup();
    const schemas = loadCurrentsSchemas();
    const events = Array.from({ length: 12 }, (_, i) => sampleCurrentsEvent(i * 4, { users: 12 }));
    const file = await encodeAvroContainer(schemas['users.behaviors.CustomEvent']!, events.map((e) => currentsEventToAvroRecord(e)), { codec: 'deflate' });
    const r = await post(file, { 'content-type': 'avro/binary' });
    expect(r).toEqual({ status: 200, body: { stored: 12, dead_lettered: 0 } });
    const stored = await readTopic(broker.cluster.bootstrap, topics.currents, 12, 10_000);
    expect(new Set(stored.map((m) => (JSON.parse(m.value!.toString()) as { id: string }).id))).toEqual(new Set(events.map((e) => e.id)));
  });
});

describe('POST /currents: one bad event does not cost its batch', () => {
  it('stores the good events and dead-letters a `constructor` key and a 70 KiB string with their reasons, then answers 200', async () => {
    const { gw, post, topics } = await setup();
    const good = Array.from({ length: 8 }, (_, i) => sampleCurrentsEvent(i, { users: 8 }));
    const withConstructor = `{"id":"evil-1","event_type":"users.behaviors.CustomEvent","time":1741942800,"user":{"device_id":"device-evil"},"properties":{"name":"x","custom_properties":{"constructor":{"prototype":{"polluted":true}}}}}`;
    const longString = JSON.stringify({ id: 'long-1', event_type: 'users.behaviors.CustomEvent', time: 1741942800, user: { device_id: 'device-long' }, properties: { name: 'y', note: 'z'.repeat(70 * 1024) } });
    const body = `{"events":[${JSON.stringify(good[0])},${withConstructor},${good.slice(1, 5).map((e) => JSON.stringify(e)).join(',')},${longString},${good.slice(5).map((e) => JSON.stringify(e)).join(',')}]}`;
    const r = await post(body);
    expect(r).toEqual({ status: 200, body: { stored: 8, dead_lettered: 2 } });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();

    const stored = await readTopic(broker.cluster.bootstrap, topics.currents, 8, 10_000);
    expect(stored.map((m) => (JSON.parse(m.value!.toString()) as { id: string }).id).sort()).toEqual(good.map((e) => e.id).sort());
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 2, 10_000);
    const byId = new Map(dl.map((m) => [(JSON.parse(m.value!.toString()) as { id: string }).id, m]));
    expect(byId.get('evil-1')!.headers).toMatchObject({ reason: 'forbidden_key', leg: 'inbound', connector: 'currents' });
    expect(byId.get('long-1')!.headers).toMatchObject({ reason: 'string_too_long', leg: 'inbound', connector: 'currents' });
    // the dead letters are the events exactly as sent, so nothing is lost and replay gets the original
    expect(byId.get('evil-1')!.value!.toString()).toBe(withConstructor);
    expect(byId.get('long-1')!.value!.toString()).toBe(longString);
    expect(byId.get('evil-1')!.headers['first-failure-time']).toMatch(/^\d{4}-\d\d-\d\dT/);

    expect(await gw.metrics.value('gateway_events_dead_lettered_total', { leg: 'inbound', reason: 'forbidden_key' })).toBe(1);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total', { leg: 'inbound', reason: 'string_too_long' })).toBe(1);
    expect(await gw.metrics.value('gateway_currents_events_total', { outcome: 'stored' })).toBe(8);
    expect(await gw.metrics.value('gateway_currents_events_total', { outcome: 'dead_lettered' })).toBe(2);
  });

  it('dead-letters `__proto__`, nesting thousands deep, missing fields and wrong shapes, and a batch of only bad events is still a 200', async () => {
    const { post, topics } = await setup();
    const deep = '['.repeat(20_000) + ']'.repeat(20_000);
    const bad = [
      '{"__proto__":{"polluted":true},"id":"p","event_type":"t","time":1,"user":{"device_id":"device-p"}}',
      deep,
      '{"id":"no-type","time":1,"user":{"device_id":"device-n"}}',
      '{"id":"","event_type":"t","time":1}',
      '{"id":"ms","event_type":"t","time":1741942800000}',
      '{"id":"u","event_type":"t","time":1,"user":"someone"}',
      '"just a string"',
    ];
    const r = await post(`{"events":[${bad.join(',')}]}`);
    expect(r).toEqual({ status: 200, body: { stored: 0, dead_lettered: bad.length } });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, bad.length, 10_000);
    expect(dl.map((m) => m.headers.reason).sort()).toEqual(['forbidden_key', 'invalid_time', 'invalid_user', 'missing_event_type', 'missing_id', 'not_object', 'not_object'].sort());
    expect(new Set(dl.map((m) => m.value!.toString()))).toEqual(new Set(bad));
  });

  it('answers 400 only to what can never be stored', async () => {
    const { post, topics, count } = await setup();
    expect((await post('not json')).status).toBe(400);
    expect((await post('{"events": {"id": 1}}')).status).toBe(400);
    expect((await post('[{"id":"a"}]')).status).toBe(400);
    expect((await post(Buffer.from([0x7b, 0x22, 0x65, 0xff, 0x22, 0x3a, 0x5b, 0x5d, 0x7d]))).status).toBe(400);
    const r = await post('{"events":[{"id":"a",');
    expect(r.status).toBe(400);
    expect(String(r.body.error)).toMatch(/not valid JSON/);
    expect(await count(topics.currents)).toBe(0);
    expect(await count(topics.dlq)).toBe(0);
    // an empty body or batch is a no-op, and a stray forbidden key outside the events is ignored
    expect((await post('')).status).toBe(200);
    expect((await post('{"__proto__":{"x":1},"events":[]}')).status).toBe(200);
  });
});
