import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { startBrazeStandIn, type BrazeStandIn } from '../../src/demo/standins/braze.js';
import type { AmplitudeStandIn } from '../../src/demo/standins/amplitude.js';
import { Gateway } from '../../src/gateway.js';
import { sampleEvent } from '../../src/demo/sample-events.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { settingsReference } from '../../src/config/config.js';
import { memoryLogger, readTopic, testConfig, testKafka, useMockCluster, waitFor } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

/**
 * The delivery core as an operator meets it: settings typed as the vendors document them, the
 * default back-off, answers the code must not retry in silence, a restart, a second instance.
 */
const broker = useMockCluster();

const defaultOf = (env: string): string => {
  const d = settingsReference().find((s) => s.env === env);
  if (!d) throw new Error(`no setting ${env}`);
  return d.default;
};

async function inbound(env: Record<string, string> | ((amp: AmplitudeStandIn) => Record<string, string>) = {}) {
  const h = await inboundHarness(broker, (amp) => ({ CURRENTS_ACK_TIMEOUT_MS: '2000', ...(typeof env === 'function' ? env(amp) : env) }));
  const gw = await h.start();
  const post = (body: string) =>
    request(`${gw.address}/currents`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}`, 'braze-currents-version': '1' },
    }).then((r) => r.body.dump().then(() => r.statusCode));
  const postAll = async (total: number, per: number, users: number) => {
    for (let i = 0; i < total; i += per) {
      const batch = JSON.stringify({ events: Array.from({ length: Math.min(per, total - i) }, (_, j) => sampleCurrentsEvent(i + j, { users })) });
      expect(await post(batch)).toBe(200);
    }
  };
  const distinct = () => new Set(h.amp.received.map((e) => String(e.insert_id))).size;
  return { ...h, gw, postAll, distinct };
}

describe('inbound (Amplitude) answers as an operator meets them', () => {
  it('delivers with AMPLITUDE_HTTP_API_URL set to the full endpoint URL, as Amplitude documents it', async () => {
    const { amp, postAll, distinct } = await inbound((a) => ({ AMPLITUDE_HTTP_API_URL: `${a.url}/2/httpapi` }));
    await postAll(500, 100, 50);
    await amp.waitForEvents(500, 20_000);
    expect(distinct()).toBe(500);
    expect(amp.stats.byStatus[404] ?? 0).toBe(0);
  });

  it('delivers through the Batch API when AMPLITUDE_HTTP_API_URL names it, at its 1,000 events/s per id', async () => {
    const { amp, gw, postAll, distinct } = await inbound((a) => ({ AMPLITUDE_HTTP_API_URL: `${a.url}/batch` }));
    // 100 events for each of 5 users in a few hundred ms: over HTTP V2's 30/s per id, within Batch's 1,000/s
    await postAll(500, 100, 5);
    await amp.waitForEvents(500, 20_000);
    expect(distinct()).toBe(500);
    expect(amp.stats.byRoute).toEqual({ '/batch': amp.stats.requests });
    expect(amp.stats.byStatus[429] ?? 0).toBe(0);
    expect(await gw.metrics.value('gateway_limiter_decisions_total', { decision: 'wait' })).toBe(0);
  });

  it('turns failing within seconds on a 404, logs one error naming the URL, loses nothing, and resumes by itself', async () => {
    const { amp, gw, postAll, distinct, log, topics } = await inbound();
    amp.injectFaults({ status: 404, count: 1_000_000, body: 'Invalid request path' });
    await postAll(300, 100, 50);
    const t0 = Date.now();
    const failing = await waitFor(() => gw.health.snapshots().find((s) => s.name === 'amplitude')!, (s) => s.state === 'failing', 5_000, 'failing');
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(failing.lastError).toMatch(/404/);
    await new Promise((r) => setTimeout(r, 1_000)); // several probes later: still one error line
    const errors = log.lines().filter((l) => l.level === 50 && String(l.msg).includes('404'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ status: 404, url: `${amp.url}/2/httpapi`, body: 'Invalid request path' });
    // probes are one request at a time, not the whole concurrency
    const during = amp.stats.byStatus[404] ?? 0;
    expect(during).toBeLessThan(20);
    amp.clearFaults();
    await amp.waitForEvents(300, 20_000);
    expect(distinct()).toBe(300);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    await waitFor(() => gw.health.snapshots().find((s) => s.name === 'amplitude')!.state, (s) => s === 'healthy' || s === 'idle', 5_000, 'healthy again');
    expect((await readTopic(broker.cluster.bootstrap, topics.dlq, 1, 500)).length).toBe(0);
  });

  it('recovers from a 15 s 503 outage with 16 requests in flight within 10 s of its end, on the default back-off', async () => {
    const { amp, postAll, distinct } = await inbound({
      AMPLITUDE_RETRY_BASE_MS: defaultOf('AMPLITUDE_RETRY_BASE_MS'),
      AMPLITUDE_RETRY_MAX_MS: defaultOf('AMPLITUDE_RETRY_MAX_MS'),
      AMPLITUDE_CONCURRENCY: '16',
      AMPLITUDE_MAX_EVENTS_PER_REQUEST: '20',
      AMPLITUDE_LIMITS_ENABLED: 'false',
    });
    // answered slowly, so that the whole concurrency is in flight when the first answers come back
    amp.injectFaults({ status: 503, count: 1_000_000, delayMs: 500 });
    await postAll(1_000, 100, 500);
    await waitFor(() => amp.stats.byStatus[503] ?? 0, (n) => n >= 16, 10_000, '16 requests refused');
    await new Promise((r) => setTimeout(r, 15_000));
    const refused = amp.stats.byStatus[503] ?? 0;
    amp.clearFaults();
    const end = Date.now();
    await amp.waitForEvents(1_000, 30_000);
    const recoveredMs = Date.now() - end;
    expect(distinct()).toBe(1_000);
    expect(recoveredMs).toBeLessThan(10_000);
    // one probe at a time while it lasted: 16 for the first wave, then a handful
    expect(refused).toBeLessThan(16 + 30);
    console.log(`503 outage: recovered ${recoveredMs} ms after its end; ${refused} requests refused in 15 s`);
  }, 90_000);
});

const KEY = 'core-test-key';
let n = 0;

async function outbound(env: Record<string, string> = {}, partitions = 4) {
  const id = `core${++n}-${Date.now()}`;
  const topics = { events: `amplitude.events.${id}`, dlq: `gateway.dead-letter.${id}`, state: `gateway.state.${id}` };
  await broker.cluster.createTopic(topics.events, partitions);
  await broker.cluster.createTopic(topics.dlq, 1);
  await broker.cluster.createTopic(topics.state, 1);
  const braze = await startBrazeStandIn({ apiKey: KEY });
  broker.cleanups.push(() => braze.close());
  const config = testConfig({
    KAFKA_BROKERS: broker.cluster.bootstrap,
    KAFKA_GROUP_ID: `gw-${id}`,
    KAFKA_SESSION_TIMEOUT_MS: '6000',
    TOPIC_AMPLITUDE_EVENTS: topics.events,
    TOPIC_DEAD_LETTER: topics.dlq,
    TOPIC_STATE: topics.state,
    HEALTH_SAVE_INTERVAL_MS: '200',
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

function seqs(braze: BrazeStandIn): number[] {
  return braze.received.events.map((e) => (e.properties as { seq: number }).seq);
}

async function produceEvents(topic: string, from: number, count: number, users: number, opts: { partitions?: number; timestampMs?: number } = {}) {
  const producer = testKafka(broker.cluster.bootstrap).producer();
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => {
    const s = sampleEvent(from + i, { users, revenueShare: 0 });
    return {
      key: s.key,
      value: JSON.stringify(s.value),
      ...(opts.partitions ? { partition: (from + i) % opts.partitions } : {}),
      ...(opts.timestampMs ? { timestamp: String(opts.timestampMs) } : {}),
    };
  });
  for (let i = 0; i < messages.length; i += 1_000) await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 1_000) });
  await producer.disconnect();
}

describe('outbound (Braze) answers as an operator meets them', () => {
  it('never counts a success whose errors name no object as delivered: those objects are dead-lettered, saying why', async () => {
    const { topics, braze, start } = await outbound({ BRAZE_LINGER_MS: '300' });
    braze.injectFaults({ status: 201, count: 1, afterProcessing: true, body: { message: 'success', errors: ['something Braze did not place'] } });
    await produceEvents(topics.events, 0, 20, 20);
    const gw = await start();
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 20, 15_000);
    expect(dl.length).toBeGreaterThan(0);
    expect(new Set(dl.map((m) => m.headers.reason))).toEqual(new Set(['rejected_unattributed']));
    expect(dl[0]!.headers.error).toMatch(/something Braze did not place/);
    const delivered = await gw.metrics.value('gateway_events_delivered_total');
    expect(delivered + dl.length).toBe(20);
  });

  it('a 2xx that is not Braze\'s answer (a proxy\'s page) is no delivery: failing at once, nothing counted or lost, resumes by itself', async () => {
    const { topics, braze, start } = await outbound({ BRAZE_AUTH_RETRY_MS: '500' });
    braze.injectFaults({ status: 200, count: 1_000_000, body: '<html><body>Sign in to continue</body></html>' });
    await produceEvents(topics.events, 0, 100, 10);
    const gw = await start();
    const failing = await waitFor(() => gw.health.snapshots().find((s) => s.name === 'braze')!, (s) => s.state === 'failing', 10_000, 'failing');
    expect(failing.lastError).toMatch(/without its JSON answer.*BRAZE_REST_ENDPOINT/);
    expect(await gw.metrics.value('gateway_events_delivered_total')).toBe(0);
    braze.clearFaults();
    await braze.waitForEvents(100, 20_000);
    expect(new Set(seqs(braze)).size).toBe(100);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  });

  it('counts the drop window from the Kafka record timestamp, so a restart keeps the oldest-pending age', async () => {
    const { topics, braze, start } = await outbound();
    braze.setApiKey('rotated');
    const threeHoursAgo = Date.now() - 3 * 3_600_000;
    await produceEvents(topics.events, 0, 50, 10, { timestampMs: threeHoursAgo });
    const age = async (gw: Gateway) =>
      waitFor(() => gw.health.snapshots().find((s) => s.name === 'braze')!, (s) => s.state === 'failing' && s.pending > 0, 10_000, 'failing with pending');
    const gw1 = await start();
    const before = await age(gw1);
    expect(before.oldestPendingAgeMs!).toBeGreaterThanOrEqual(3 * 3_600_000 - 60_000);
    await gw1.kill();
    const gw2 = await start();
    const after = await age(gw2);
    expect(after.oldestPendingAgeMs!).toBeGreaterThanOrEqual(3 * 3_600_000 - 60_000);
  });

  it('a second instance joining mid-stream and the first leaving: nothing lost, no re-sends from partitions that stayed', async () => {
    const partitions = 8;
    const total = 20_000;
    const { topics, braze, start } = await outbound({ BRAZE_MAX_IN_FLIGHT_EVENTS: '2000' }, partitions);
    // Braze answers a little slowly, so that a rebalance finds events in flight
    braze.injectFaults({ status: 201, count: 1_000_000, afterProcessing: true, delayMs: 30, body: { message: 'success' } });
    const producing = (async () => {
      for (let i = 0; i < total; i += 1_000) {
        await produceEvents(topics.events, i, 1_000, 2_000, { partitions });
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const gw1 = await start();
    await waitFor(() => braze.received.events.length, (c) => c >= 3_000, 30_000, 'first instance delivering');
    const gw2 = await start();
    await waitFor(() => gw2.consumerLoops[0]!.ready && gw1.consumerLoops[0]!.ready, (r) => r, 30_000, 'both instances in the group');
    const kept = new Set(gw1.consumerLoops[0]!.assigned.map((a) => Number(a.split(':')[1])));
    await waitFor(() => braze.received.events.length, (c) => c >= 10_000, 60_000, 'both delivering');
    await gw1.stop(10_000);
    await producing;
    await waitFor(() => new Set(seqs(braze)).size, (c) => c === total, 60_000, 'every event delivered');
    const seen = new Map<number, number>();
    for (const s of seqs(braze)) seen.set(s, (seen.get(s) ?? 0) + 1);
    const dupsByPartition = new Map<number, number>();
    for (const [s, c] of seen) if (c > 1) dupsByPartition.set(s % partitions, (dupsByPartition.get(s % partitions) ?? 0) + c - 1);
    const dupsKept = [...kept].reduce((a, p) => a + (dupsByPartition.get(p) ?? 0), 0);
    const dupsAll = [...dupsByPartition.values()].reduce((a, b) => a + b, 0);
    console.log(`scale-out: ${total} events, duplicates ${dupsAll} (partitions that stayed with the first instance: ${dupsKept}); by partition ${JSON.stringify([...dupsByPartition])}`);
    expect(dupsKept).toBe(0);
    // moved partitions re-send at most what the first instance held in flight when they moved
    expect(dupsAll).toBeLessThanOrEqual(2_000);
  }, 180_000);

  it('restarts a consumer kafkajs gives up on, and is not ready until it has joined again', async () => {
    const { topics, braze, start, log } = await outbound();
    await produceEvents(topics.events, 0, 200, 20);
    const gw = await start();
    await braze.waitForEvents(200, 20_000);
    // The next heartbeat meets a fatal group error (GROUP_AUTHORIZATION_FAILED, not retriable),
    // after which kafkajs does not restart the consumer by itself.
    // Other members heartbeat too (the health store's reader): push until the leg's consumer is the one hit.
    for (let i = 0; i < 10 && gw.ready; i++) {
      await broker.cluster.pushRequestErrors(12, [30]);
      await waitFor(() => gw.ready, (r) => !r, 4_000, 'not ready after the crash').catch(() => undefined);
    }
    expect(gw.ready).toBe(false);
    await waitFor(() => gw.metrics.value('gateway_consumer_restarts_total'), (v) => v >= 1, 30_000, 'a consumer restart');
    await waitFor(() => gw.ready, (r) => r, 30_000, 'ready again');
    expect(log.lines().filter((l) => l.msg === 'consumer crashed').length).toBeGreaterThanOrEqual(1);
    await produceEvents(topics.events, 200, 200, 20);
    await braze.waitForEvents(400, 30_000);
    expect(new Set(seqs(braze)).size).toBe(400);
  }, 120_000);

  it('a member whose leg is stopped (refused key) still heartbeats and rejoins promptly when a second instance joins', async () => {
    // librdkafka's mock broker completes a rebalance within about one session timeout (6 s here) of
    // its start, for a healthy member too: what this test rules out is the stopped member being
    // evicted (a session timeout without heartbeats, then a second rebalance) or sitting out.
    const { topics, braze, start, log } = await outbound();
    braze.setApiKey('rotated');
    await produceEvents(topics.events, 0, 400, 40);
    const gw1 = await start();
    await waitFor(() => gw1.health.snapshots().find((s) => s.name === 'braze')!.state, (s) => s === 'failing', 15_000, 'failing');
    const t0 = Date.now();
    const gw2 = await start();
    await waitFor(() => gw2.consumerLoops[0]!.assigned.length > 0 && gw1.consumerLoops[0]!.assigned.length > 0, (r) => r, 20_000, 'partitions shared');
    const rejoinMs = Date.now() - t0;
    console.log(`stopped member: partitions shared ${rejoinMs} ms after the second instance started`);
    expect(rejoinMs).toBeLessThan(15_000);
    // one rebalance, both members in it: the stopped member was never evicted from the group
    expect(log.lines().filter((l) => l.msg === 'joined consumer group' && JSON.stringify(l.assignment).includes('[0,1,2,3]'))).toHaveLength(1);
    braze.setApiKey(KEY);
    await waitFor(() => new Set(seqs(braze)).size, (c) => c === 400, 60_000, 'every event once the key works');
  }, 120_000);
});
