import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import type { CurrentsEvent } from '../../src/currents-ingest/currents-types.js';
import { ManualClock } from '../../src/clock.js';
import type { Gateway } from '../../src/gateway.js';
import { useMockCluster, waitFor } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();
let seq = 0;

function ev(user: string | undefined, device: string, sentAtMs: number): CurrentsEvent {
  const i = ++seq;
  return {
    id: `li-${i}`,
    event_type: 'users.behaviors.CustomEvent',
    time: Math.floor(sentAtMs / 1000),
    user: { device_id: device, ...(user ? { external_user_id: user } : {}) },
    properties: { name: 'tick', custom_properties: { seq: i } },
  };
}

async function post(address: string, events: CurrentsEvent[]): Promise<number> {
  const r = await request(`${address}/currents`, {
    method: 'POST',
    body: JSON.stringify({ events }),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}` },
  });
  await r.body.dump();
  return r.statusCode;
}

/** Most events of one id inside any one-second window of their arrival times. */
function maxPerSecond(times: number[]): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < t.length; hi++) {
    while ((t[lo] as number) <= (t[hi] as number) - 1000) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

describe('per-id limits with several instances', () => {
  it('two instances sharing the group: one user\'s events from several devices never exceed 30 in any second at the strict stand-in', async () => {
    const h = await inboundHarness(broker, { AMPLITUDE_LINGER_MS: '50' });
    // as an operator runs two copies: each its own instance id, so the co-partitioned assigner
    // splits the partitions between them instead of taking both for one instance
    const a = await h.start({ GATEWAY_INSTANCE_ID: 'limits-instance-a' });
    const b = await h.start({ GATEWAY_INSTANCE_ID: 'limits-instance-b' });
    await waitFor(() => a.ready && b.ready, (r) => r, 30_000, 'both instances in the group');
    // each owns partition p of the short park tier exactly when it owns Currents partition p
    const owned = (gw: Gateway, topic: string): string => gw.consumerLoops.flatMap((l) => l.assigned).filter((t) => t.startsWith(`${topic}:`)).map((t) => Number(t.slice(t.lastIndexOf(':') + 1))).sort((x, y) => x - y).join(',');
    await waitFor(
      () => ({ a: owned(a, h.topics.currents), aRetry: owned(a, h.topics.retry), b: owned(b, h.topics.currents), bRetry: owned(b, h.topics.retry) }),
      (o) => o.a !== '' && o.b !== '' && o.a.split(',').length + o.b.split(',').length === 4 && o.a === o.aRetry && o.b === o.bRetry,
      30_000,
      'the partitions split between the instances, the same in both groups',
    );
    const arrivals: number[] = [];
    const sampler = setInterval(() => {
      for (let i = arrivals.length; i < h.amp.received.length; i++) arrivals.push(Date.now());
    }, 5);
    broker.cleanups.push(async () => clearInterval(sampler));

    const user = 'user-multi-device-01';
    const sent: string[] = [];
    // 2 s at 150 events/s for the user, from 6 devices, posted through both instances
    for (let tick = 0; tick < 20; tick++) {
      const t = Date.now();
      const batch = Array.from({ length: 15 }, (_, k) => ev(user, `device-of-user-${k % 6}`, t));
      for (const e of batch) sent.push(e.id);
      expect(await post(tick % 2 === 0 ? (a.address as string) : (b.address as string), batch)).toBe(200);
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
    }
    await waitFor(() => h.amp.received.filter((e) => e.user_id === user).length, (n) => n === sent.length, 90_000, 'every event of the user');
    expect(h.amp.stats.throttled429).toBe(0);
    const userTimes = h.amp.received.map((e, i) => ({ e, t: arrivals[i] ?? Date.now() })).filter((x) => x.e.user_id === user).map((x) => x.t);
    expect(maxPerSecond(userTimes)).toBeLessThanOrEqual(30);
    expect(new Set(h.amp.received.map((e) => e.insert_id)).size).toBe(sent.length);
  }, 150_000);

  it('a 429 naming a device over its daily quota parks its events (not dead-lettered), tells the pacer, and delivers them once the window allows; other devices go on', async () => {
    const ampClock = new ManualClock(Date.now());
    // requests of at most 5 events, so that a request of the hot device's fits what Amplitude still takes
    const h = await inboundHarness(broker, { AMPLITUDE_ID_QUOTA_WINDOW_MS: '60000', AMPLITUDE_ID_QUOTA_BUCKET_MS: '2000', AMPLITUDE_THROTTLE_HOLD_MS: '500', AMPLITUDE_MAX_EVENTS_PER_REQUEST: '5' }, { dailyQuota: 5, clock: ampClock });
    const gw = await h.start();
    const hot = 'device-over-quota';
    const t = Date.now();
    const hotEvents = Array.from({ length: 20 }, () => ev(undefined, hot, t));
    const others = Array.from({ length: 10 }, (_, i) => ev(undefined, `device-fine-${i}`, t));
    expect(await post(gw.address as string, [...hotEvents.slice(0, 10), ...others])).toBe(200);
    await waitFor(() => h.amp.received.filter((e) => e.device_id !== hot).length, (n) => n === 10, 20_000, 'the other devices');
    expect(await post(gw.address as string, hotEvents.slice(10))).toBe(200);
    // Amplitude takes what fits its quota of 5 and refuses any request of the device's that would
    // go over (a whole request: it cannot take part of one). The pacer is told, so the device's
    // events wait in the long tier, in order, instead of being sent and refused again and again.
    const hotCount = () => h.amp.received.filter((e) => e.device_id === hot).length;
    await waitFor(() => h.amp.stats.quota429, (n) => n >= 1, 20_000, 'a quota refusal');
    await new Promise((r) => setTimeout(r, 3_000));
    const day1 = hotCount();
    expect(day1).toBeGreaterThanOrEqual(1);
    expect(day1).toBeLessThanOrEqual(5);
    const refusals = h.amp.stats.quota429;
    await new Promise((r) => setTimeout(r, 4_000));
    // one retry a quota bucket (2 s here), one request each: not a refusal per event
    expect(h.amp.stats.quota429 - refusals).toBeLessThanOrEqual(4);
    expect(hotCount()).toBe(day1);
    expect(await gw.metrics.value('gateway_events_dead_lettered_total')).toBe(0);
    // each day later at Amplitude, the window allows 5 more, delivered in order, until all 20 are there
    for (let day = 1; hotCount() < 20 && day <= 5; day++) {
      ampClock.advance(25 * 3_600_000);
      const want = Math.min(20, day1 + 5 * day);
      await waitFor(hotCount, (n) => n >= want, 30_000, `day ${day + 1}'s parked events, delivered`);
    }
    const order = h.amp.received.filter((e) => e.device_id === hot).map((e) => e.insert_id);
    expect(order).toEqual(hotEvents.map((e) => e.id));
  }, 150_000);
});
