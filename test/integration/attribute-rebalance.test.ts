import { describe, expect, it } from 'vitest';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import { Gateway } from '../../src/gateway.js';
import { memoryLogger, produce, testConfig, useMockCluster, waitFor } from '../support/harness.js';

// The attribute state across a scale-out: the member that gains partitions must know what the
// previous owner sent, or it writes every user's snapshot again (data points Braze bills) and an
// old event can overwrite a newer value.

const KEY = 'attribute-rebalance-key';
const broker = useMockCluster();
const T0 = Date.UTC(2025, 2, 14, 9);
const USERS = 200;

/** one event per user, export shape, at `minutes` after T0 */
function round(tag: string, minutes: number, plan: string) {
  return Array.from({ length: USERS }, (_, i) => ({
    key: `user-${i}`,
    value: JSON.stringify({
      event_type: 'page_view',
      user_id: `user-${i}`,
      event_time: new Date(T0 + minutes * 60_000).toISOString(),
      $insert_id: `${tag}-${i}`,
      user_properties: { plan, country: 'DE' },
    }),
  }));
}

describe('attribute state across a rebalance', () => {
  it('a member joining mid-stream knows what the first one sent: no attribute written again, no older event overwrites', async () => {
    const id = `ar-${Date.now()}`;
    const topics = { events: `amplitude.events.${id}`, dlq: `gateway.dead-letter.${id}`, attributeState: `gateway.attribute-state.${id}` };
    await broker.cluster.createTopic(topics.events, 8);
    await broker.cluster.createTopic(topics.dlq, 1);
    const braze = await startBrazeStandIn({ apiKey: KEY });
    broker.cleanups.push(() => braze.close());
    const instance = async (name: string) => {
      const config = testConfig({
        KAFKA_BROKERS: broker.cluster.bootstrap,
        KAFKA_GROUP_ID: `gw-${id}`,
        GATEWAY_INSTANCE_ID: name,
        TOPIC_AMPLITUDE_EVENTS: topics.events,
        TOPIC_DEAD_LETTER: topics.dlq,
        TOPIC_ATTRIBUTE_STATE: topics.attributeState,
        BRAZE_REST_ENDPOINT: braze.url,
        BRAZE_API_KEY: KEY,
      });
      const gw = new Gateway({ config, listen: false, logger: memoryLogger('info').logger });
      broker.cleanups.push(() => gw.stop(5_000));
      await gw.start();
      return gw;
    };

    const a = await instance('a');
    await produce(broker.cluster.bootstrap, topics.events, round('r1', 10, 'pro'));
    await braze.waitForEvents(USERS, 30_000);
    expect(braze.received.attributes).toHaveLength(USERS);

    // Well within the state's 5 s flush interval: what the first member sent is not written yet.
    const b = await instance('b');
    await waitFor(() => a.consumerLoops[0]!.assigned.length > 0 && b.consumerLoops[0]!.assigned.length > 0 && a.consumerLoops[0]!.assigned.length < 8, (r) => r, 30_000, 'partitions shared');
    // the same values, newer: nothing to write; then older, different values: must not overwrite
    await produce(broker.cluster.bootstrap, topics.events, [...round('r2', 20, 'pro'), ...round('r0', 5, 'free')]);
    await braze.waitForEvents(3 * USERS, 30_000);
    await waitFor(() => Promise.all([a, b].map((g) => g.metrics.value('gateway_events_delivered_total'))), (v) => v[0]! + v[1]! === 3 * USERS, 10_000, 'delivered');

    const written = braze.received.attributes.length - USERS;
    console.log(`after the rebalance: ${written} attribute objects written again (${b.consumerLoops[0]!.assigned.length} of 8 partitions moved)`);
    expect(written).toBe(0);
  }, 90_000);
});
