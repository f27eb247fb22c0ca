import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import type { AmplitudeStandIn } from '../../src/demo/standins/amplitude.js';
import { Gateway } from '../../src/gateway.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { encodeAvroContainer, loadCurrentsSchemas, currentsEventToAvroRecord } from '../../src/currents-ingest/currents-avro.js';
import { backfill } from '../../src/currents-ingest/backfill.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLogger, produce, readTopic, useMockCluster, waitFor } from '../support/harness.js';
import { AMPLITUDE_KEY, CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();

async function setup(env: Record<string, string> = {}, ampOpts: Parameters<typeof inboundHarness>[2] = {}) {
  const { topics, amp, config, log } = await inboundHarness(broker, { CURRENTS_ACK_TIMEOUT_MS: '2000', AMPLITUDE_THROTTLE_HOLD_MS: '500', ...env }, ampOpts);
  const gw = new Gateway({ config, logger: log.logger });
  broker.cleanups.push(() => gw.stop(5_000));
  await gw.start();
  const url = `${gw.address}/currents`;
  const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
    request(url, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}`, 'braze-currents-version': '1', ...headers },
    }).then(async (r) => ({ status: r.statusCode, body: (await r.body.json().catch(() => ({}))) as Record<string, unknown> }));
  return { topics, amp, gw, url, post, log, config };
}

function batch(from: number, count: number, users = 100) {
  return JSON.stringify({ events: Array.from({ length: count }, (_, i) => sampleCurrentsEvent(from + i, { users })) });
}

async function postAll(post: (b: string) => Promise<{ status: number }>, total: number, per: number, users = 100) {
  for (let i = 0; i < total; i += per) {
    const r = await post(batch(i, Math.min(per, total - i), users));
    expect(r.status).toBe(200);
  }
}

function insertIds(amp: AmplitudeStandIn): Set<string> {
  return new Set(amp.received.map((e) => String(e.insert_id)));
}

describe('POST /currents contract', () => {
  it('answers 401 to a missing or wrong token, also on an empty batch, and writes nothing', async () => {
    const { post, gw } = await setup();
    expect((await post('{"events":[]}', { authorization: '' })).status).toBe(401);
    expect((await post('{"events":[]}', { authorization: 'Bearer nope' })).status).toBe(401);
    expect((await post(batch(0, 5), { authorization: `Bearer ${CURRENTS_TOKEN}x` })).status).toBe(401);
    expect((await post(batch(0, 5), { authorization: `Basic ${CURRENTS_TOKEN}` })).status).toBe(401);
    expect((await post('{"events":[]}')).status).toBe(200);
    expect(await gw.metrics.value('gateway_currents_events_total')).toBe(0);
    expect(await gw.metrics.value('gateway_currents_requests_total', { status: '401' })).toBe(4);
  });

  it('answers 400 to garbage, 413 to an oversized body or batch, and stays up for hostile bodies', async () => {
    const { post, url } = await setup({ CURRENTS_MAX_BODY_BYTES: '200000', CURRENTS_MAX_EVENTS_PER_BATCH: '50' });
    expect((await post('not json')).status).toBe(400);
    expect((await post('{"events": 5}')).status).toBe(400);
    expect((await post('[1,2]')).status).toBe(400);
    expect((await post(batch(0, 51))).status).toBe(413);
    // refused from Content-Length: the client gets the 413, not a reset connection
    const big = Buffer.alloc(300_000, 0x20);
    expect((await post(big)).status).toBe(413);
    // hostile events are dead-lettered one by one (test/integration/currents-route.test.ts); garbage bytes are a 400
    expect((await post(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]))).status).toBe(400);
    // still alive and answering
    const ok = await request(url.replace('/currents', '/healthz'));
    expect(ok.statusCode).toBe(200);
    await ok.body.dump();
  });

  it('stores a good batch in Kafka before answering, keyed by identity, and dead-letters the bad events of it', async () => {
    const { post, topics } = await setup({ AMPLITUDE_API_KEY: '' });
    const good = Array.from({ length: 10 }, (_, i) => sampleCurrentsEvent(i, { users: 10 }));
    const noIdentity = { id: 'no-id-1', event_type: 'users.behaviors.CustomEvent', time: 1_700_000_000, user: { user_id: 'braze-only' }, properties: { name: 'x' } };
    const broken = { id: 'broken', event_type: 7, time: 'yesterday' };
    const r = await post(JSON.stringify({ events: [...good, noIdentity, broken] }));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ stored: 10, dead_lettered: 2 });
    const stored = await readTopic(broker.cluster.bootstrap, topics.currents, 10, 10_000);
    // keyed by user when there is one, else by device: all of a user's events on one partition
    expect(stored.map((m) => m.key).sort()).toEqual(good.map((e) => e.user.external_user_id ?? e.user.device_id).sort());
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 2, 10_000);
    expect(dl.map((m) => m.headers.reason).sort()).toEqual(['missing_event_type', 'no_identity']);
    expect(dl.every((m) => m.headers.connector === 'currents' && m.headers.leg === 'inbound')).toBe(true);
  });

  it('accepts Avro object container files (avro/binary)', async () => {
    const { post, amp } = await setup();
    const schemas = loadCurrentsSchemas();
    const events = Array.from({ length: 20 }, (_, i) => sampleCurrentsEvent(i * 4, { users: 20 })); // all CustomEvent
    const file = await encodeAvroContainer(schemas['users.behaviors.CustomEvent']!, events.map((e) => currentsEventToAvroRecord(e)), { codec: 'deflate' });
    const r = await post(file, { 'content-type': 'avro/binary' });
    expect(r.status).toBe(200);
    expect(r.body.stored).toBe(20);
    await amp.waitForEvents(20, 20_000);
    expect(amp.received.map((e) => e.event_type)).toEqual(Array(20).fill('[Appboy] [Custom Event] level_completed'));
  });

  it('backfills Currents Avro files from a storage export through the same path', async () => {
    const { amp, config } = await setup();
    const schemas = loadCurrentsSchemas();
    const dir = mkdtempSync(join(tmpdir(), 'backfill-'));
    const custom = Array.from({ length: 30 }, (_, i) => sampleCurrentsEvent(i * 4, { users: 30 }));
    const purchases = Array.from({ length: 30 }, (_, i) => sampleCurrentsEvent(i * 4 + 2, { users: 30 }));
    writeFileSync(join(dir, 'custom.avro'), await encodeAvroContainer(schemas['users.behaviors.CustomEvent']!, custom.map((e) => currentsEventToAvroRecord(e))));
    writeFileSync(join(dir, 'purchase.avro'), await encodeAvroContainer(schemas['users.behaviors.Purchase']!, purchases.map((e) => currentsEventToAvroRecord(e)), { codec: 'deflate' }));
    writeFileSync(join(dir, 'broken.avro'), Buffer.from('not avro'));
    const report = await backfill([join(dir, 'custom.avro'), join(dir, 'purchase.avro'), join(dir, 'broken.avro')], config, memoryLogger('silent').logger);
    expect(report).toMatchObject({ files: 2, events: 60, stored: 60, deadLettered: 0 });
    expect(report.failedFiles.map((f) => f.file)).toEqual([join(dir, 'broken.avro')]);
    await amp.waitForEvents(60, 20_000);
    expect(new Set(amp.received.map((e) => e.insert_id))).toEqual(new Set([...custom, ...purchases].map((e) => e.id)));
  });

  it('answers 503 while the broker is down, and 200 once it is back', async () => {
    const { post } = await setup({ AMPLITUDE_API_KEY: '' });
    expect((await post(batch(0, 5))).status).toBe(200);
    await broker.cluster.brokerDown(1);
    try {
      const r = await post(batch(5, 5));
      expect(r.status).toBe(503);
    } finally {
      await broker.cluster.brokerUp(1);
    }
    await waitFor(async () => (await post(batch(10, 5))).status, (s) => s === 200, 30_000, '200 after the broker returned');
  });
});

describe('inbound leg: Currents -> Kafka -> Amplitude HTTP API', () => {
  it('delivers thousands of Currents events once each, with exact field values', async () => {
    const { post, amp, gw } = await setup();
    await postAll(post, 4_000, 100, 300);
    await amp.waitForEvents(4_000, 40_000);
    expect(insertIds(amp).size).toBe(4_000);
    const byId = new Map(amp.received.map((e) => [String(e.insert_id), e]));
    const custom = byId.get('cur-0000000004')!;
    expect(custom).toMatchObject({
      event_type: '[Appboy] [Custom Event] level_completed',
      user_id: 'user-000004',
      device_id: 'device-000004',
      time: (1_741_942_800 + 4) * 1000,
      insert_id: 'cur-0000000004',
    });
    expect((custom.event_properties as Record<string, unknown>)['[Custom event property] level']).toBe(4);
    const purchase = byId.get('cur-0000000002')!;
    expect(purchase).toMatchObject({ productId: 'pro_annual', price: 49.99 });
    const open = byId.get('cur-0000000001')!;
    expect(open.event_type).toBe('[Appboy] Email Open');
    // users with no external id go by device only
    const anon = byId.get('cur-0000000005')!; // user 5 % 5 === 0 has no external id
    expect(anon.user_id).toBeUndefined();
    expect(anon.device_id).toBe('device-000005');
    expect(amp.stats.maxEventsInRequest).toBeLessThan(2_000);
    expect(amp.stats.byStatus[429] ?? 0).toBe(0);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  });

  it('judges again what other producers wrote to the Currents topic: bad records dead-lettered by reason, the rest delivered', async () => {
    const { amp, topics, gw } = await setup();
    const good = (i: number) => JSON.stringify(sampleCurrentsEvent(i, { users: 10 }));
    const withProps = (i: number, properties: string) => good(i).replace(/"properties":\{/, `"properties":{${properties},`);
    let deep = '1';
    for (let i = 0; i < 70; i++) deep = `[${deep}]`;
    await produce(broker.cluster.bootstrap, topics.currents, [
      { key: 'k', value: good(1) },
      { key: 'k', value: '{not json' },
      { key: 'k', value: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]) },
      { key: 'k', value: withProps(2, '"constructor":{"x":1}') },
      { key: 'k', value: withProps(3, `"deep":${deep}`) },
      { key: 'k', value: JSON.stringify({ ...sampleCurrentsEvent(4, { users: 10 }), id: '' }) },
      { key: 'k', value: good(5) },
    ]);
    await amp.waitForEvents(2, 20_000);
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 5, 10_000);
    expect(dl.map((m) => m.headers.reason)).toEqual(['not_json', 'not_json', 'forbidden_key', 'too_deep', 'missing_id']);
    expect(dl[3]!.headers.error).toMatch(/^\$\.properties\.deep/);
    expect([...insertIds(amp)].sort()).toEqual(['cur-0000000001', 'cur-0000000005']);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total', { leg: 'inbound', reason: 'forbidden_key' })).toBe(1);
  });

  it('dead-letters the events a 400 names and resends the rest', async () => {
    const { post, amp, topics } = await setup({ AMPLITUDE_LINGER_MS: '300' });
    amp.injectFaults({ status: 400, count: 1, body: { code: 400, error: 'Invalid field values on some events', events_with_invalid_fields: { time: [1, 3] }, events_with_missing_fields: {} } });
    await post(batch(0, 10, 10));
    await amp.waitForEvents(8, 20_000);
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 2, 10_000);
    expect(dl.map((m) => m.headers.reason)).toEqual(['invalid_fields', 'invalid_fields']);
    await new Promise((r) => setTimeout(r, 300));
    expect(amp.received.length).toBe(8);
  });

  it('stops on an invalid API key without losing anything, then delivers once the key works', async () => {
    const { post, amp, gw } = await setup();
    amp.setApiKey('rotated-key');
    await postAll(post, 500, 100);
    const failing = await waitFor(() => gw.health.snapshots().find((s) => s.name === 'amplitude')!, (s) => s.state === 'failing', 10_000, 'failing');
    expect(failing.lastErrorClass).toBe('auth');
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    amp.setApiKey(AMPLITUDE_KEY);
    await amp.waitForEvents(500, 20_000);
    expect(insertIds(amp).size).toBe(500);
  });

  it('halves a batch Amplitude answers 413', async () => {
    const { post, amp } = await setup({ AMPLITUDE_LINGER_MS: '300' });
    amp.injectFaults({ status: 413, count: 2 });
    await post(batch(0, 100, 50));
    await amp.waitForEvents(100, 20_000);
    expect(insertIds(amp).size).toBe(100);
    expect(amp.stats.byStatus[413]).toBe(2);
  });

  it('holds just the throttled devices on a 429 while the others go on', async () => {
    const { post, amp } = await setup({ AMPLITUDE_LINGER_MS: '200', AMPLITUDE_THROTTLE_HOLD_MS: '1500' });
    amp.injectFaults({
      status: 429,
      count: 1,
      body: { code: 429, error: 'Too many requests for some devices and users', eps_threshold: 30, throttled_devices: { 'device-000003': 31 }, throttled_users: {}, throttled_events: [], exceeded_daily_quota_devices: {}, exceeded_daily_quota_users: {} },
    });
    const t0 = Date.now();
    await post(batch(0, 20, 20));
    await amp.waitForEvents(19, 10_000);
    const tOthers = Date.now() - t0;
    expect(amp.received.some((e) => e.device_id === 'device-000003')).toBe(false);
    await amp.waitForEvents(20, 10_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_500);
    expect(tOthers).toBeLessThan(1_500);
  });

  it('parks the events of ids over their daily quota (reason daily_quota) instead of dead-lettering them, and delivers them later', async () => {
    // Amplitude re-evaluates its rolling window hourly; here every 500 ms
    const { post, amp, topics, gw } = await setup({ AMPLITUDE_LINGER_MS: '200', AMPLITUDE_ID_QUOTA_WINDOW_MS: '60000', AMPLITUDE_ID_QUOTA_BUCKET_MS: '500' });
    amp.injectFaults({
      status: 429,
      count: 1,
      body: { code: 429, error: 'Too many requests for some devices and users', eps_threshold: 30, throttled_devices: {}, throttled_users: {}, throttled_events: [], exceeded_daily_quota_devices: { 'device-000002': 500000 }, exceeded_daily_quota_users: {} },
    });
    await post(batch(0, 10, 10));
    await amp.waitForEvents(9, 10_000);
    const parked = await readTopic(broker.cluster.bootstrap, topics.retryQuota, 1, 10_000);
    expect(parked[0]!.headers.reason).toBe('daily_quota');
    expect(JSON.parse(parked[0]!.value!.toString()).user.device_id).toBe('device-000002');
    await amp.waitForEvents(10, 10_000);
    expect(amp.received.filter((e) => e.device_id === 'device-000002')).toHaveLength(1);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  });

  it('rides out a 5xx storm with nothing lost', async () => {
    const { post, amp, gw } = await setup();
    amp.injectFaults({ status: 503, count: 10 });
    amp.injectFaults({ status: 500, count: 5 });
    amp.injectFaults({ status: 0, count: 3 });
    await postAll(post, 1_000, 100);
    await amp.waitForEvents(1_000, 30_000);
    expect(insertIds(amp).size).toBe(1_000);
    expect(await gw.metrics.value('gateway_destination_retries_total', { destination: 'amplitude' })).toBeGreaterThanOrEqual(18);
  });
});
