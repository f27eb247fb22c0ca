/**
 * GATEWAY_WORKERS: the gateway consuming in several processes on one host. The primary forks the
 * children (the same Gateway, consuming legs only), serves HTTP and /metrics for all of them, and
 * restarts a child that dies; the consumer groups spread and hand back the partitions.
 */
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { sampleEvent } from '../../src/demo/sample-events.js';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import type { CurrentsEvent } from '../../src/currents-ingest/currents-types.js';
import { produce, useMockCluster, waitFor } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();
const BRAZE_KEY = 'workers-braze-key';

async function metricsText(gw: Gateway): Promise<string> {
  const r = await request(`${gw.adminAddress}/metrics`);
  return r.body.text();
}

function series(text: string, name: string, labels: string): number {
  const m = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('GATEWAY_WORKERS: consuming in several processes', () => {
  it('spreads both consuming legs over two processes; a child killed with SIGKILL mid-stream is restarted and nothing is lost', async () => {
    const outTopic = `amplitude.events.workers-${Date.now()}`;
    await broker.cluster.createTopic(outTopic, 8);
    const braze = await startBrazeStandIn({ apiKey: BRAZE_KEY });
    broker.cleanups.push(() => braze.close());
    const h = await inboundHarness(broker, {
      GATEWAY_WORKERS: '2',
      TOPIC_AMPLITUDE_EVENTS: outTopic,
      BRAZE_REST_ENDPOINT: braze.url,
      BRAZE_API_KEY: BRAZE_KEY,
      BRAZE_RATE_LIMIT_REQUESTS: '3000',
    });
    const gw = await h.start();
    const [pid] = gw.workerPids;
    expect(pid).toBeGreaterThan(0);
    await waitFor(() => gw.ready, (r) => r, 30_000, 'both processes ready');
    // the primary takes its share of Braze's workspace budget; the child the other half
    expect(gw.config.braze?.rateLimitRequests).toBe(1500);

    const total = 20_000;
    await produce(
      broker.cluster.bootstrap,
      outTopic,
      Array.from({ length: total }, (_, i) => {
        const s = sampleEvent(i, { users: 2_000, revenueShare: 0 });
        return { key: s.key, value: JSON.stringify(s.value) };
      }),
    );
    // Currents events through the primary's public port, 400 devices, 3,000 events
    const inbound: CurrentsEvent[] = Array.from({ length: 3_000 }, (_, i) => ({
      id: `wk-${i}`,
      event_type: 'users.behaviors.CustomEvent',
      time: Math.floor(Date.now() / 1000),
      user: { device_id: `wk-device-${i % 400}`, external_user_id: `wk-user-${i % 400}` },
      properties: { name: 'tick', custom_properties: { seq: i } },
    }));
    for (let i = 0; i < inbound.length; i += 500) {
      const r = await request(`${gw.address}/currents`, {
        method: 'POST',
        body: JSON.stringify({ events: inbound.slice(i, i + 500) }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}` },
      });
      await r.body.dump();
      expect(r.statusCode).toBe(200);
    }

    await waitFor(() => braze.received.events.length, (n) => n >= 4_000, 60_000, 'some outbound deliveries');
    // both processes consume; /metrics tells their series apart by `worker`
    const before = await metricsText(gw);
    expect(series(before, 'gateway_events_consumed_total', 'leg="outbound",worker="0"')).toBeGreaterThan(0);
    expect(series(before, 'gateway_events_consumed_total', 'leg="outbound",worker="1"')).toBeGreaterThan(0);
    expect(before).toMatch(/^gateway_workers_up\{worker="0"\} 1$/m);
    process.kill(pid as number, 'SIGKILL');
    const atKill = braze.received.events.length;

    const seqs = () => braze.received.events.map((e) => (e.properties as { seq: number }).seq);
    await waitFor(() => new Set(seqs()).size, (n) => n === total, 120_000, 'every outbound event after the kill');
    await waitFor(() => new Set(h.amp.received.map((e) => e.insert_id)).size, (n) => n === inbound.length, 120_000, 'every inbound event after the kill');
    const duplicates = seqs().length - total;
    console.log(`workers kill test: ${atKill} outbound events delivered before the kill, ${duplicates} duplicates (ratio ${(duplicates / total).toFixed(4)}); inbound ${h.amp.received.length - inbound.length} duplicates`);

    // noticed, counted and restarted; the new child rejoins and the primary is ready again
    await waitFor(() => gw.workerPids[0], (p) => p !== undefined && p !== pid, 30_000, 'a new child');
    await waitFor(() => gw.ready, (r) => r, 30_000, 'ready again');
    expect(h.log.lines().filter((l) => l.msg === 'worker exited unexpectedly; its partitions go to the other members and are re-read from the last commit; starting a new one')).toHaveLength(1);

    const text = await metricsText(gw);
    expect(text).toMatch(/^gateway_worker_restarts_total\{worker="1"\} 1$/m);
    expect(text).toMatch(/^gateway_workers_up\{worker="0"\} 1$/m);
    // the new child's own series are there (a restarted process's counters start again from 0)
    expect(text).toMatch(/^gateway_process_process_resident_memory_bytes\{worker="1"\} \d+$/m);
    // every Braze request went within the workspace's budget, from either process
    expect(braze.stats.byStatus[429] ?? 0).toBe(0);

    // a graceful stop takes the child with it
    const child = gw.workerPids[0] as number;
    await gw.stop(5_000);
    await waitFor(() => alive(child), (a) => !a, 10_000, 'the child gone after stop');
  }, 240_000);
});
