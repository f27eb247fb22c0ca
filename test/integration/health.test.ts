import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { replayDeadLetters } from '../../src/replay/replay.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { readTopic, useMockCluster, waitFor } from '../support/harness.js';
import { AMPLITUDE_KEY, CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();

async function setup(env: Record<string, string> = {}) {
  const { topics, amp, config, log, start } = await inboundHarness(broker, {
    KAFKA_SESSION_TIMEOUT_MS: '6000',
    HEALTH_CHECK_INTERVAL_MS: '250',
    HEALTH_SAVE_INTERVAL_MS: '250',
    ...env,
  });
  const post = async (gw: Gateway, from: number, count: number) => {
    const r = await request(`${gw.address}/currents`, {
      method: 'POST',
      body: JSON.stringify({ events: Array.from({ length: count }, (_, i) => sampleCurrentsEvent(from + i, { users: 50 })) }),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}` },
    });
    await r.body.dump();
    expect(r.statusCode).toBe(200);
  };
  return { topics, amp, config, log, start, post };
}

const amplitude = (gw: Gateway) => gw.health.snapshots().find((s) => s.name === 'amplitude')!;

describe('connector health and the drop window', () => {
  it('turns failing on a bad key within seconds, expires pending events into the dead-letter topic at the window, and replay delivers them once the key is fixed', async () => {
    const { amp, config, log, start, post, topics } = await setup({ DROP_WINDOW_MS: '4000' });
    amp.setApiKey('a-key-the-gateway-does-not-have');
    const gw = await start();
    const t0 = Date.now();
    await post(gw, 0, 200);
    const failing = await waitFor(() => amplitude(gw), (s) => s.state === 'failing', 10_000, 'failing');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(failing).toMatchObject({ lastErrorClass: 'auth', pending: 200 });

    // not before the window…
    expect(await gw.metrics.value('gateway_drop_window_expired_total')).toBe(0);
    // …and at it: every pending event moves to the dead-letter topic, the connector turns expired
    const expired = await waitFor(() => amplitude(gw), (s) => s.state === 'expired', 15_000, 'expired');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(4_000);
    expect(expired.pending).toBe(0);
    expect(await gw.metrics.value('gateway_drop_window_expired_total', { connector: 'amplitude' })).toBe(200);
    const dl = await readTopic(broker.cluster.bootstrap, topics.dlq, 200, 15_000);
    expect(dl.length).toBe(200);
    expect(new Set(dl.map((m) => m.headers.reason))).toEqual(new Set(['drop_window_expired']));
    expect(log.lines().filter((l) => String(l.msg).startsWith('drop window expired')).length).toBe(1);
    const metricsText = await gw.metrics.registry.metrics();
    expect(metricsText).toMatch(/gateway_connector_state\{connector="amplitude",state="expired"\} 1/);
    expect(amp.received.length).toBe(0);

    // the operator fixes the key, then replays what expired
    amp.setApiKey(AMPLITUDE_KEY);
    const report = await replayDeadLetters(config, { filter: { reasons: ['drop_window_expired'] }, dryRun: false }, log.logger);
    expect(report.replayed).toBe(200);
    await amp.waitForEvents(200, 30_000).catch(async (err) => {
      console.log(await gw.metrics.registry.getSingleMetric('gateway_events_dead_lettered_total')!.get(), amplitude(gw), await gw.metrics.value('gateway_events_consumed_total'), amp.stats);
      throw err;
    });
    expect(amp.uniqueInsertIds).toBe(200);
    await waitFor(() => amplitude(gw).state, (s) => s === 'idle', 10_000, 'idle after replay');
  }, 90_000);

  it('keeps connector health across a restart, so the drop window clock does not reset', async () => {
    const { amp, start, post } = await setup();
    const first = await start();
    await post(first, 0, 20);
    const before = await waitFor(() => amplitude(first), (s) => s.delivered === 20 && s.pending === 0, 20_000, 'delivered');
    expect(before.lastSuccessMs).toBeGreaterThan(0);
    // now the key stops working: failing-since is recorded
    amp.setApiKey('rotated');
    await post(first, 20, 5);
    const failing = await waitFor(() => amplitude(first), (s) => s.state === 'failing', 10_000, 'failing');
    await first.stop(1_000);
    broker.cleanups.pop();

    const second = await start();
    const restored = amplitude(second);
    expect(restored.lastSuccessMs).toBe(before.lastSuccessMs);
    expect(restored.failingSinceMs).toBe(failing.failingSinceMs);
    expect(restored.lastErrorClass).toBe('auth');
    expect(restored.delivered).toBe(20);
    const res = await request(`${second.address}/connectors`);
    const body = (await res.body.json()) as { connectors: Array<{ name: string; lastSuccess: string; state: string }> };
    expect(body.connectors.find((c) => c.name === 'amplitude')!.lastSuccess).toBe(new Date(before.lastSuccessMs!).toISOString());
  }, 90_000);
});
