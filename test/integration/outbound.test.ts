import { describe, expect, it } from 'vitest';
import { startBrazeStandIn, type BrazeStandIn } from '../../src/demo/standins/braze.js';
import { Gateway } from '../../src/gateway.js';
import { sampleEvent } from '../../src/demo/sample-events.js';
import { memoryLogger, produce, readTopic, testConfig, useMockCluster, waitFor } from '../support/harness.js';

const KEY = 'braze-test-key';
const broker = useMockCluster();

let n = 0;
/** a fresh topic set per test, so tests never see each other's messages or offsets */
async function setup(env: Record<string, string> = {}, brazeOpts: Partial<Parameters<typeof startBrazeStandIn>[0]> = {}) {
  const id = `t${++n}-${Date.now()}`;
  const topics = { events: `amplitude.events.${id}`, dlq: `gateway.dead-letter.${id}` };
  await broker.cluster.createTopic(topics.events, 4);
  await broker.cluster.createTopic(topics.dlq, 1);
  const braze = await startBrazeStandIn({ apiKey: KEY, ...brazeOpts });
  broker.cleanups.push(() => braze.close());
  const config = testConfig({
    KAFKA_BROKERS: broker.cluster.bootstrap,
    KAFKA_GROUP_ID: `gw-${id}`,
    TOPIC_AMPLITUDE_EVENTS: topics.events,
    TOPIC_DEAD_LETTER: topics.dlq,
    BRAZE_REST_ENDPOINT: braze.url,
    BRAZE_API_KEY: KEY,
    ...env,
  });
  const log = memoryLogger('info');
  const start = async () => {
    const gw = new Gateway({ config, listen: false, logger: log.logger });
    broker.cleanups.push(() => gw.stop(5_000));
    await gw.start();
    return gw;
  };
  return { topics, braze, config, start, log };
}

function events(count: number, users: number) {
  return Array.from({ length: count }, (_, i) => sampleEvent(i, { users, revenueShare: 0 }));
}

async function produceSamples(topic: string, samples: ReturnType<typeof events>) {
  await produce(broker.cluster.bootstrap, topic, samples.map((s) => ({ key: s.key, value: JSON.stringify(s.value) })));
}

/** Braze events carry `properties.seq`: the sample index they came from */
function seqs(braze: BrazeStandIn): number[] {
  return braze.received.events.map((e) => (e.properties as { seq: number }).seq);
}

describe('outbound leg: Amplitude events on Kafka -> Braze /users/track', () => {
  it('delivers thousands of events across many users exactly once, in order per user, with the right fields', async () => {
    const { topics, braze, start } = await setup();
    const samples = events(5_000, 400);
    await produceSamples(topics.events, samples);
    const gw = await start();
    await braze.waitForEvents(5_000, 30_000);
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 5_000, 5_000, 'delivered metric');

    const got = seqs(braze);
    expect(got.length).toBe(5_000);
    expect(new Set(got).size).toBe(5_000);
    // order per user: each user's seqs arrive increasing
    const lastByUser = new Map<string, number>();
    for (const e of braze.received.events) {
      const who = JSON.stringify(e.external_id ?? e.user_alias);
      const seq = (e.properties as { seq: number }).seq;
      expect(seq).toBeGreaterThan(lastByUser.get(who) ?? -1);
      lastByUser.set(who, seq);
    }
    // exact fields for one identified and one anonymous user
    const s0 = samples[0]!.value;
    const e0 = braze.received.events.find((e) => (e.properties as { seq: number }).seq === 0)!;
    expect(e0).toMatchObject({ name: s0.event_type, time: new Date('2025-03-14T09:00:00.000Z').toISOString() });
    const anon = samples.find((s) => s.value.user_id === undefined)!;
    const ea = braze.received.events.find((e) => (e.properties as { seq: number }).seq === (anon.value.event_properties as { seq: number }).seq)!;
    expect(ea.user_alias).toEqual({ alias_name: anon.value.device_id, alias_label: 'amplitude_device_id' });
    expect(braze.received.attributes.length).toBe(5_000);
    expect(braze.stats.maxEventsInRequest).toBeLessThanOrEqual(75);
    expect(braze.stats.byStatus[401] ?? 0).toBe(0);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  });

  it('dead-letters poison messages with a reason and keeps the partition moving', async () => {
    const { topics, braze, start } = await setup();
    const good = events(1_000, 50);
    const poison: Array<{ value: string; reason: string }> = [
      { value: '{not json', reason: 'not_json' },
      { value: '[1,2,3]', reason: 'not_object' },
      { value: '42', reason: 'not_object' },
      { value: JSON.stringify({ user_id: 'user-x', time: 1 }), reason: 'no_event_type' },
      { value: JSON.stringify({ event_type: 'orphan', time: 1 }), reason: 'no_identifier' },
    ];
    const mixed: Array<{ key: string; value: string }> = [];
    good.forEach((g, i) => {
      mixed.push({ key: g.key, value: JSON.stringify(g.value) });
      if (i % 200 === 0) for (const p of poison) mixed.push({ key: g.key, value: p.value });
    });
    await produce(broker.cluster.bootstrap, topics.events, mixed);
    const gw = await start();
    await braze.waitForEvents(1_000, 30_000);
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 25, 15_000);
    expect(dl.length).toBe(25);
    const reasons = dl.map((m) => m.headers.reason).sort();
    expect(reasons).toEqual(poison.flatMap((p) => Array(5).fill(p.reason)).sort());
    for (const m of dl) {
      expect(m.headers['source-topic']).toBe(topics.events);
      expect(m.headers['source-partition']).toMatch(/^\d+$/);
      expect(m.headers['source-offset']).toMatch(/^\d+$/);
      expect(m.headers.connector).toBe('braze');
      expect(m.headers.error).toBeTruthy();
      expect(Date.parse(m.headers['first-failure-time']!)).toBeGreaterThan(0);
    }
    expect(new Set(seqs(braze)).size).toBe(1_000);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total', { reason: 'not_json' })).toBe(5);
  });

  it('skips Braze-originated events (loop prevention) and filtered events, and counts them', async () => {
    const { topics, braze, start } = await setup({ OUTBOUND_EVENTS_DENY: 'debug_*' });
    const msgs = [
      { key: 'u', value: JSON.stringify({ event_type: '[Appboy] Email Open', user_id: 'user-1', time: 1 }) },
      { key: 'u', value: JSON.stringify({ event_type: 'campaign_sent', library: 'Braze', user_id: 'user-1', time: 1 }) },
      { key: 'u', value: JSON.stringify({ event_type: 'debug_ping', user_id: 'user-1', time: 1 }) },
      { key: 'u', value: JSON.stringify({ event_type: 'kept', user_id: 'user-1', time: 1 }) },
    ];
    await produce(broker.cluster.bootstrap, topics.events, msgs);
    const gw = await start();
    await braze.waitForEvents(1, 20_000);
    await waitFor(() => gw.metrics.value('gateway_events_skipped_total'), (v) => v === 3, 5_000, 'skipped');
    expect(braze.received.events.map((e) => e.name)).toEqual(['kept']);
    expect(await gw.metrics.value('gateway_events_skipped_total', { reason: 'loop_prevention' })).toBe(2);
    expect(await gw.metrics.value('gateway_events_skipped_total', { reason: 'filtered' })).toBe(1);
  });

  it('dead-letters only the objects Braze names in a success with errors', async () => {
    const { topics, braze, start } = await setup();
    braze.rejectWhen((obj, array) => (array === 'events' && (obj.properties as { seq?: number } | undefined)?.seq! % 100 === 7 ? "'name' is not valid" : undefined));
    await produceSamples(topics.events, events(500, 40));
    const gw = await start();
    await waitFor(() => gw.metrics.value('gateway_events_delivered_total'), (v) => v === 495, 20_000, 'delivered');
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 5, 10_000);
    expect(dl.map((m) => m.headers.reason)).toEqual(Array(5).fill('rejected_by_destination'));
    // each refused object is its own dead letter, the Braze object as sent: replay re-sends just it
    expect(dl.map((m) => [m.headers.payload, m.headers['braze-array']])).toEqual(Array(5).fill(['braze-object', 'events']));
    expect(dl.map((m) => (JSON.parse(m.value!.toString()) as { properties: { seq: number } }).properties.seq).sort((a, b) => a - b)).toEqual([7, 107, 207, 307, 407]);
    expect(seqs(braze).length).toBe(495);
  });

  it('rides out a 5xx storm with nothing lost', async () => {
    const { topics, braze, start } = await setup();
    // one probe at a time while Braze fails: each fault below costs one back-off interval
    braze.injectFaults({ status: 503, count: 6 });
    braze.injectFaults({ status: 500, count: 4 });
    braze.injectFaults({ status: 0, count: 2 });
    await produceSamples(topics.events, events(2_000, 200));
    const gw = await start();
    await braze.waitForEvents(2_000, 40_000);
    expect(new Set(seqs(braze)).size).toBe(2_000);
    expect(braze.stats.faultsServed).toBe(12);
    expect(await gw.metrics.value('gateway_destination_retries_total')).toBeGreaterThanOrEqual(12);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    const snap = gw.health.snapshots()[0]!;
    expect(snap.lastSuccessMs).toBeGreaterThan(0);
  });

  it('slows the whole destination on a 429 storm, honouring X-RateLimit-Reset and Retry-After', async () => {
    const { topics, braze, start } = await setup();
    const resetAt = Math.ceil(Date.now() / 1000) + 2;
    braze.injectFaults({ status: 429, count: 5, headers: { 'X-RateLimit-Reset': String(resetAt), 'X-RateLimit-Remaining': '0' } });
    braze.injectFaults({ status: 429, count: 5, headers: { 'Retry-After': '1' } });
    await produceSamples(topics.events, events(1_000, 100));
    const gw = await start();
    await braze.waitForEvents(1_000, 40_000);
    expect(new Set(seqs(braze)).size).toBe(1_000);
    expect(Date.now()).toBeGreaterThanOrEqual(resetAt * 1000 + 1000);
    // one request meets each 429 window before the destination-wide hold sends the others to wait
    expect(braze.stats.byStatus[429]).toBe(10);
    expect(await gw.metrics.value('gateway_destination_retries_total', { class: 'rate_limited' })).toBeGreaterThanOrEqual(10);
  });

  it('stops on a refused key without committing or dropping, and resumes once the key works', async () => {
    const { topics, braze, start, log } = await setup();
    braze.setApiKey('the-right-key');
    await produceSamples(topics.events, events(300, 30));
    const gw = await start();
    const failing = await waitFor(() => gw.health.snapshots()[0]!, (s) => s.state === 'failing', 10_000, 'failing state');
    expect(failing.lastErrorClass).toBe('auth');
    expect(failing.pending).toBeGreaterThan(0);
    expect(braze.received.events.length).toBe(0);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    // the operator rotates the key on the Braze side to the one the gateway holds
    braze.setApiKey(KEY);
    await braze.waitForEvents(300, 20_000);
    await waitFor(() => gw.health.snapshots()[0]!.state, (s) => s === 'idle', 5_000, 'idle');
    expect(new Set(seqs(braze)).size).toBe(300);
    const lines = log.lines();
    expect(lines.filter((l) => String(l.msg).includes('outbound leg stopped')).length).toBe(1);
    expect(JSON.stringify(lines)).not.toContain(KEY);
  });

  it('splits a request Braze answers 413 and keeps every event', async () => {
    const { topics, braze, start } = await setup();
    braze.injectFaults({ status: 413, count: 3 });
    await produceSamples(topics.events, events(300, 300));
    const gw = await start();
    await braze.waitForEvents(300, 20_000);
    expect(new Set(seqs(braze)).size).toBe(300);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  });

  it('commits what was delivered, so a restart does not resend it', async () => {
    const { topics, braze, start } = await setup();
    await produceSamples(topics.events, events(500, 50));
    const gw = await start();
    await braze.waitForEvents(500, 20_000);
    await gw.stop(5_000);
    await produceSamples(topics.events, events(600, 50).slice(500));
    await start();
    await braze.waitForEvents(600, 20_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(seqs(braze).length).toBe(600);
    expect(new Set(seqs(braze)).size).toBe(600);
  });
});
