import { describe, expect, it } from 'vitest';
import { AttributeState } from '../../src/amplitude-to-braze/attribute-state.js';
import { AttributeStore } from '../../src/amplitude-to-braze/attribute-store.js';
import type { BrazeAttributes } from '../../src/amplitude-to-braze/braze-types.js';
import { memoryLogger, testKafka, useMockCluster } from '../support/harness.js';

const broker = useMockCluster();

/** one attributes object through the state, confirmed as Braze would; returns what would be sent */
function send(s: AttributeState, user: string, t: number, o: Record<string, unknown>): Record<string, unknown> {
  const r = s.filter(`ext:${user}`, { external_id: user, ...o } as BrazeAttributes, t);
  s.confirm(r.write);
  const { external_id: _id, ...rest } = r.attributes;
  return rest;
}

describe('attribute state in a compacted topic', () => {
  it('survives a restart: confirmed values are not sent again, an older event does not overwrite, the latest record per key wins', async () => {
    const topic = `gateway.attribute-state.${Date.now()}`;
    await broker.cluster.createTopic(topic, 3);
    const kafka = testKafka(broker.cluster.bootstrap);
    const producer = kafka.producer();
    await producer.connect();
    broker.cleanups.push(() => producer.disconnect());
    const log = memoryLogger('info').logger;

    const before = new AttributeState();
    const store = new AttributeStore({ kafka, topic, state: before, logger: log, fetchMaxWaitMs: 50, intervalMs: 60_000 });
    store.start({ send: async (t, messages) => void (await producer.send({ topic: t, acks: -1, messages })) });
    for (let u = 0; u < 50; u++) send(before, `u-${u}`, 100, { plan: 'free', country: 'DE' });
    expect(await store.flush()).toBe(50);
    // newer values for some users: a second record for the same keys (the mock broker never compacts)
    for (let u = 0; u < 10; u++) send(before, `u-${u}`, 200, { plan: 'pro' });
    // written to the state but never confirmed by Braze: must not be persisted
    before.filter('ext:u-49', { external_id: 'u-49', plan: 'team' } as BrazeAttributes, 300);
    await store.stop();

    const after = new AttributeState();
    const restarted = new AttributeStore({ kafka, topic, state: after, logger: log, fetchMaxWaitMs: 50 });
    expect(await restarted.load()).toBe(50);
    expect(send(after, 'u-0', 210, { plan: 'pro', country: 'DE' })).toEqual({});
    expect(send(after, 'u-1', 150, { plan: 'free' })).toEqual({}); // older than the pro sent at 200
    expect(send(after, 'u-20', 210, { plan: 'free', country: 'DE' })).toEqual({});
    expect(send(after, 'u-49', 310, { plan: 'team' })).toEqual({ plan: 'team' }); // was never confirmed
    expect(send(after, 'u-new', 1, { plan: 'free' })).toEqual({ plan: 'free' });
  });

  it('a missing topic loads as nothing saved', async () => {
    const state = new AttributeState();
    const store = new AttributeStore({ kafka: testKafka(broker.cluster.bootstrap), topic: `absent.${Date.now()}`, state, logger: memoryLogger('info').logger, fetchMaxWaitMs: 50 });
    expect(await store.load()).toBe(0);
  });
});
