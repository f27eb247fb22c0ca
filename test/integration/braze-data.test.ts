import { describe, expect, it } from 'vitest';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import { Gateway } from '../../src/gateway.js';
import { toMessage } from '../../src/kafka/dead-letter.js';
import { replayDeadLetters } from '../../src/replay/replay.js';
import { memoryLogger, produce, readTopic, testConfig, testKafka, useMockCluster, waitFor } from '../support/harness.js';

// "Right data at Braze" end to end, against the profile-aware Braze stand-in: objects for a
// profile that does not exist and are update-only are answered 201 and silently not processed,
// as Braze does (reference/braze-users-track.md §2).

const KEY = 'braze-data-key';
const broker = useMockCluster();
const ALIAS_LABEL = 'amplitude_device_id';

let n = 0;
async function setup(env: Record<string, string> = {}) {
  const id = `bd${++n}-${Date.now()}`;
  const topics = { events: `amplitude.events.${id}`, dlq: `gateway.dead-letter.${id}`, attributeState: `gateway.attribute-state.${id}` };
  await broker.cluster.createTopic(topics.events, 4);
  await broker.cluster.createTopic(topics.dlq, 1);
  const braze = await startBrazeStandIn({ apiKey: KEY });
  broker.cleanups.push(() => braze.close());
  const config = testConfig({
    KAFKA_BROKERS: broker.cluster.bootstrap,
    KAFKA_GROUP_ID: `gw-${id}`,
    TOPIC_AMPLITUDE_EVENTS: topics.events,
    TOPIC_DEAD_LETTER: topics.dlq,
    TOPIC_ATTRIBUTE_STATE: topics.attributeState,
    BRAZE_REST_ENDPOINT: braze.url,
    BRAZE_API_KEY: KEY,
    ...env,
  });
  const start = async () => {
    const gw = new Gateway({ config, listen: false, logger: memoryLogger('info').logger });
    broker.cleanups.push(() => gw.stop(5_000));
    await gw.start();
    return gw;
  };
  return { topics, braze, config, start };
}

const T0 = Date.UTC(2025, 2, 14, 9);
const iso = (minutes: number): string => new Date(T0 + minutes * 60_000).toISOString();

/** 100 never-seen anonymous devices and 100 known users, 3 events each, export shape */
function population() {
  const msgs: Array<{ key: string; value: string }> = [];
  for (let k = 0; k < 3; k++) {
    for (let i = 0; i < 100; i++) {
      const device = `dev-${i}`;
      msgs.push({ key: device, value: JSON.stringify({ event_type: 'page_view', device_id: device, event_time: iso(k), $insert_id: `a-${i}-${k}`, user_properties: { plan: 'free', visits: k } }) });
      const user = `user-${i}`;
      msgs.push({ key: user, value: JSON.stringify({ event_type: 'page_view', user_id: user, device_id: `known-dev-${i}`, event_time: iso(k), $insert_id: `k-${i}-${k}`, user_properties: { plan: 'pro' } }) });
    }
  }
  return msgs;
}

describe('right data at Braze (profile-aware stand-in)', () => {
  it('events of 100 never-seen anonymous devices and 100 known users are all processed: 0 silently dropped', async () => {
    const { topics, braze, start } = await setup();
    for (let i = 0; i < 100; i++) braze.seedProfile({ external_id: `user-${i}` });
    await produce(broker.cluster.bootstrap, topics.events, population());
    const gw = await start();
    await braze.waitForEvents(600, 30_000);
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 600, 10_000, 'delivered metric');

    expect(braze.stats.silentlyDropped).toBe(0);
    for (let i = 0; i < 100; i++) {
      const anon = braze.profile({ user_alias: { alias_name: `dev-${i}`, alias_label: ALIAS_LABEL } });
      expect(anon?.events).toHaveLength(3);
      expect(anon?.attributes).toMatchObject({ plan: 'free', visits: 2 });
      const known = braze.profile({ external_id: `user-${i}` });
      expect(known?.events).toHaveLength(3);
      expect(known?.attributes).toEqual({ plan: 'pro' });
    }
    // unchanged attributes were not written again: 1 plan + 3 visits per device, 1 plan per user
    const writes = braze.received.attributes.reduce((sum, a) => sum + Object.keys(a).filter((k) => !['external_id', 'user_alias', '_update_existing_only'].includes(k)).length, 0);
    expect(writes).toBe(100 * 4 + 100);
    // 75 objects in total per request by default (Braze's current docs)
    expect(braze.stats.maxObjectsInRequest).toBeLessThanOrEqual(75);
  });

  it('counts the attribute writes saved', async () => {
    const { topics, braze, start } = await setup();
    await produce(broker.cluster.bootstrap, topics.events, population());
    const gw = await start();
    await braze.waitForEvents(600, 30_000);
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 600, 10_000, 'delivered metric');
    // per device: plan unchanged twice; per user: plan unchanged twice
    expect(await gw.metrics.value('gateway_attribute_writes_saved_total')).toBe(100 * 2 + 100 * 2);
  });

  it('with BRAZE_UPDATE_EXISTING_ONLY=true the stand-in shows what Braze does: anonymous devices\' events silently dropped', async () => {
    const { topics, braze, start } = await setup({ BRAZE_UPDATE_EXISTING_ONLY: 'true' });
    for (let i = 0; i < 100; i++) braze.seedProfile({ external_id: `user-${i}` });
    await produce(broker.cluster.bootstrap, topics.events, population());
    await start();
    await braze.waitForEvents(600, 30_000);
    await waitFor(() => braze.stats.silentlyDropped, (v) => v >= 300, 10_000, 'silent drops');
    // every object for an unknown alias: 300 events and the attributes objects that carried changes
    expect(braze.dropped.events).toHaveLength(300);
    expect(braze.profileCount()).toBe(100);
  });

  it('a replayed old event does not overwrite a newer attribute', async () => {
    const { topics, braze, config, start } = await setup();
    const gw = await start();
    const newer = { event_type: 'plan_changed', user_id: 'u-1', event_time: iso(60), $insert_id: 'new', user_properties: { plan: 'pro', country: 'DE' } };
    await produce(broker.cluster.bootstrap, topics.events, [{ key: 'u-1', value: JSON.stringify(newer) }]);
    await braze.waitForEvents(1, 20_000);

    // an event from before, dead-lettered earlier, replayed now
    const older = { event_type: 'page_view', user_id: 'u-1', event_time: iso(0), $insert_id: 'old', user_properties: { plan: 'free', country: 'DE', city: 'Berlin' } };
    const producer = testKafka(broker.cluster.bootstrap).producer();
    await producer.connect();
    await producer.send({
      topic: topics.dlq,
      messages: [toMessage({ leg: 'outbound', connector: 'braze', reason: 'drop_window_expired', error: 'old', key: 'u-1', value: Buffer.from(JSON.stringify(older)), source: { topic: topics.events, partition: 0, offset: '0' }, firstFailureMs: T0 })],
    });
    await producer.disconnect();
    const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, memoryLogger('info').logger);
    expect(report.replayed).toBe(1);
    await braze.waitForEvents(2, 20_000);
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 2, 10_000, 'delivered metric');

    // the old event is recorded as the event it is; its stale plan is not written, its new city is
    expect(braze.profile({ external_id: 'u-1' })?.events.map((e) => e.name)).toEqual(['plan_changed', 'page_view']);
    expect(braze.profile({ external_id: 'u-1' })?.attributes).toEqual({ plan: 'pro', country: 'DE', city: 'Berlin' });
    expect(braze.received.attributes.some((a) => a.plan === 'free')).toBe(false);
  });

  it('an event with more objects than one request holds is delivered whole: quantity 7,600 and 80 products', async () => {
    const { topics, braze, start } = await setup();
    const products = Array.from({ length: 80 }, (_, i) => ({ productId: `sku-${i}`, price: 1 + i }));
    await produce(broker.cluster.bootstrap, topics.events, [
      { key: 'u-1', value: JSON.stringify({ event_type: 'Seats Bought', user_id: 'u-1', event_time: iso(0), $insert_id: 'seats', price: 2, quantity: 7_600, productId: 'seat' }) },
      { key: 'dev-9', value: JSON.stringify({ event_type: 'Order Completed', device_id: 'dev-9', event_time: iso(1), $insert_id: 'cart', currency: 'EUR', products, user_properties: { plan: 'free' } }) },
    ]);
    const gw = await start();
    await braze.waitForEvents(2, 20_000);
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 2, 10_000, 'delivered metric');

    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    // never more than Braze's 75 objects in one request (the stand-in refuses more, as Braze does)
    expect(braze.stats.maxObjectsInRequest).toBeLessThanOrEqual(75);
    expect(braze.stats.byStatus[400] ?? 0).toBe(0);
    expect(braze.stats.silentlyDropped).toBe(0);
    const seats = braze.profile({ external_id: 'u-1' })?.purchases ?? [];
    expect(seats).toHaveLength(76);
    expect(seats.reduce((n, p) => n + Number(p.quantity) * Number(p.price), 0)).toBe(15_200);
    const cart = braze.profile({ user_alias: { alias_name: 'dev-9', alias_label: ALIAS_LABEL } });
    expect(cart?.purchases.map((p) => p.product_id)).toEqual(products.map((p) => p.productId));
    expect(cart?.attributes).toEqual({ plan: 'free' });
  });

  it("an anonymous user's events are kept when Braze refuses its attributes object", async () => {
    const { topics, braze, start } = await setup();
    // one attribute Braze will not take costs the attributes object, the one that creates the profile
    braze.rejectWhen((o, array) => (array === 'attributes' && o.bad !== undefined ? "'bad' is not valid" : undefined));
    await produce(broker.cluster.bootstrap, topics.events, [
      { key: 'dev-1', value: JSON.stringify({ event_type: 'Order Completed', device_id: 'dev-1', event_time: iso(0), $insert_id: 'o1', revenue: 5, productId: 'p', user_properties: { bad: 1 } }) },
    ]);
    const gw = await start();
    await braze.waitForEvents(1, 20_000);
    await waitFor(() => gw.metrics.value('gateway_events_dead_lettered_total'), (v) => v === 1, 10_000, 'dead-letter metric');
    expect(braze.stats.silentlyDropped).toBe(0);
    const profile = braze.profile({ user_alias: { alias_name: 'dev-1', alias_label: ALIAS_LABEL } });
    expect(profile?.events).toHaveLength(1);
    expect(profile?.purchases).toHaveLength(1);
  });

  it('a partial reject dead-letters only the refused object, and replay re-sends only that object', async () => {
    const { topics, braze, config, start } = await setup();
    braze.rejectWhen((o, array) => (array === 'purchases' && o.product_id === 'bad-sku' ? "'product_id' is not valid" : undefined));
    const gw = await start();
    const buy = { event_type: 'Order Completed', user_id: 'u-1', event_time: iso(0), $insert_id: 'buy', revenue: 10, productId: 'bad-sku', user_properties: { plan: 'pro' } };
    await produce(broker.cluster.bootstrap, topics.events, [{ key: 'u-1', value: JSON.stringify(buy) }]);
    await braze.waitForEvents(1, 20_000);
    const [dl] = await readTopic(broker.cluster.bootstrap, topics.dlq, 1, 20_000);
    expect(dl?.headers.payload).toBe('braze-object');
    expect(dl?.headers['braze-array']).toBe('purchases');
    expect(dl?.headers['source-topic']).toBe(topics.events);
    expect(JSON.parse(dl!.value!.toString())).toMatchObject({ external_id: 'u-1', product_id: 'bad-sku', price: 10 });
    expect(braze.received.events).toHaveLength(1);
    expect(braze.received.attributes).toHaveLength(1);
    await waitFor(() => gw.metrics.value('gateway_events_dead_lettered_total'), (v) => v === 1, 10_000, 'dead-letter metric');

    braze.rejectWhen(undefined);
    const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, memoryLogger('info').logger);
    expect(report).toMatchObject({ replayed: 1, brazeRejected: 0 });
    // only the purchase came again: the event and the attributes Braze had accepted were not re-sent
    expect(braze.received.purchases).toHaveLength(1);
    expect(braze.received.events).toHaveLength(1);
    expect(braze.received.attributes).toHaveLength(1);
  });

  it('a refused attributes object replayed after newer values were sent writes only what Braze does not have newer', async () => {
    const { topics, braze, config, start } = await setup();
    braze.rejectWhen((o, array) => (array === 'attributes' && o.plan === 'free' ? "'plan' is not valid" : undefined));
    const gw = await start();
    const old = { event_type: 'page_view', user_id: 'u-2', event_time: iso(0), $insert_id: 'old', user_properties: { plan: 'free', city: 'Berlin' } };
    await produce(broker.cluster.bootstrap, topics.events, [{ key: 'u-2', value: JSON.stringify(old) }]);
    const [dl] = await readTopic(broker.cluster.bootstrap, topics.dlq, 1, 20_000);
    expect(dl?.headers).toMatchObject({ payload: 'braze-object', 'braze-array': 'attributes', 'braze-user': 'ext:u-2', 'event-time': String(T0) });
    braze.rejectWhen(undefined);
    // meanwhile the user moved on: plan pro, an hour later
    const newer = { event_type: 'plan_changed', user_id: 'u-2', event_time: iso(60), $insert_id: 'new', user_properties: { plan: 'pro' } };
    await produce(broker.cluster.bootstrap, topics.events, [{ key: 'u-2', value: JSON.stringify(newer) }]);
    await braze.waitForEvents(2, 20_000);
    await waitFor(() => braze.profile({ external_id: 'u-2' })?.attributes.plan, (p) => p === 'pro', 10_000, 'plan pro');
    await gw.stop(5_000); // writes the attribute state

    const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, memoryLogger('info').logger);
    expect(report).toMatchObject({ replayed: 1, brazeRejected: 0, skippedNewer: 0 });
    const last = braze.received.attributes.at(-1);
    // the old plan is left out; the city, which Braze never had, goes
    expect(last).toEqual({ external_id: 'u-2', city: 'Berlin' });
    expect(braze.profile({ external_id: 'u-2' })?.attributes).toMatchObject({ plan: 'pro', city: 'Berlin' });
  });
});
