import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import type { CurrentsEvent } from '../../src/currents-ingest/currents-types.js';
import { useMockCluster, waitFor } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();

async function setup(env: Record<string, string> = {}, ampOpts: Parameters<typeof inboundHarness>[2] = {}) {
  const { topics, amp, config, log, start } = await inboundHarness(broker, { AMPLITUDE_LINGER_MS: '50', ...env }, ampOpts);
  const gw = await start();
  const post = (events: CurrentsEvent[]) =>
    request(`${gw.address}/currents`, {
      method: 'POST',
      body: JSON.stringify({ events }),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}` },
    }).then(async (r) => {
      await r.body.dump();
      return r.statusCode;
    });
  return { topics, amp, gw, post, log, config, start };
}

let seq = 0;
function ev(device: string, sentAtMs: number): CurrentsEvent {
  const i = ++seq;
  return {
    id: `ev-${i}`,
    event_type: 'users.behaviors.CustomEvent',
    time: Math.floor(sentAtMs / 1000),
    user: { device_id: device },
    properties: { name: 'tick', custom_properties: { sent_at: sentAtMs, seq: i } },
  };
}

describe('per-id limits on the Amplitude leg', () => {
  it('paces a device sending 600 events/s so a strict Amplitude never answers 429, without slowing the others', async () => {
    const { amp, post, gw } = await setup();
    const hot = 'device-hot-0001';
    const others = Array.from({ length: 300 }, (_, i) => `device-${String(i).padStart(5, '0')}`);
    // arrival time of each event at the stand-in, sampled as it arrives
    const arrivals = new Map<string, number>();
    const sampler = setInterval(() => {
      const now = Date.now();
      for (let i = arrivals.size; i < amp.received.length; i++) arrivals.set(String(amp.received[i]!.insert_id), now);
    }, 10);
    broker.cleanups.push(async () => clearInterval(sampler));

    const sent = new Map<string, number>();
    const hotIds: string[] = [];
    // 3 s of traffic: the hot device at 600 events/s for the first second, 300 others at 2 events/s each throughout
    for (let tick = 0; tick < 30; tick++) {
      const t = Date.now();
      const batch: CurrentsEvent[] = [];
      if (tick < 10) for (let k = 0; k < 60; k++) {
        const e = ev(hot, t);
        hotIds.push(e.id);
        batch.push(e);
      }
      for (let k = 0; k < 20; k++) batch.push(ev(others[(tick * 20 + k) % 300]!, t));
      for (const e of batch) sent.set(e.id, t);
      expect(await post(batch)).toBe(200);
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
    }
    const otherIds = [...sent.keys()].filter((id) => !hotIds.includes(id));
    await waitFor(() => otherIds.filter((id) => arrivals.has(id)).length, (c) => c === otherIds.length, 15_000, 'the other devices\' events');
    const latencies = otherIds.map((id) => arrivals.get(id)! - sent.get(id)!).sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)]!;
    console.log(`other devices: p50 ${latencies[Math.floor(latencies.length / 2)]} ms, p99 ${p99} ms, max ${latencies.at(-1)} ms`);
    // the others never wait behind the hot device: their latency stays near the linger and fetch wait
    expect(p99).toBeLessThan(1_500);

    // the hot device's 600 events drain at its pace, in order, and Amplitude never had to throttle
    await waitFor(() => hotIds.filter((id) => arrivals.has(id)).length, (c) => c === hotIds.length, 60_000, 'every hot-device event');
    expect(amp.stats.throttled429).toBe(0);
    expect(amp.stats.byStatus[429] ?? 0).toBe(0);
    const hotOrder = amp.received.filter((e) => e.device_id === hot).map((e) => (e.event_properties as Record<string, number>)['[Custom event property] seq']!);
    expect(hotOrder).toEqual([...hotOrder].sort((a, b) => a - b));
    expect(new Set(amp.received.map((e) => e.insert_id)).size).toBe(sent.size);
    expect(await gw.metrics.value('gateway_limiter_parked_total', { reason: 'rate_limit' })).toBeGreaterThan(0);
    expect(await gw.metrics.value('gateway_limiter_decisions_total', { decision: 'wait' })).toBeGreaterThan(0);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
  }, 90_000);

  it('parks events over the daily quota and releases them when the rolling window allows', async () => {
    const { amp, post, gw } = await setup({ AMPLITUDE_ID_DAILY_QUOTA: '20', AMPLITUDE_ID_QUOTA_WINDOW_MS: '3000', AMPLITUDE_ID_QUOTA_BUCKET_MS: '500' });
    const device = 'device-quota-01';
    const t = Date.now();
    // 45 events spread over ~1.5 s, within the per-second rate, but more than 20 per window
    for (let b = 0; b < 3; b++) {
      expect(await post(Array.from({ length: 15 }, () => ev(device, Date.now())))).toBe(200);
      await new Promise((r) => setTimeout(r, 600));
    }
    await waitFor(() => amp.received.length, (c) => c >= 20, 10_000, 'the first 20');
    await new Promise((r) => setTimeout(r, 500));
    expect(amp.received.length).toBe(20);
    expect(await gw.metrics.value('gateway_limiter_parked_total', { reason: 'daily_quota' })).toBeGreaterThan(0);
    await waitFor(() => amp.received.length, (c) => c === 45, 20_000, 'the parked events, released');
    expect(Date.now() - t).toBeGreaterThan(3_000);
    expect(amp.stats.byStatus[429] ?? 0).toBe(0);
  }, 60_000);
});
