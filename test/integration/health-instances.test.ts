import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import type { ConnectorsReport } from '../../src/health/connector-health.js';
import { useMockCluster, waitFor } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const broker = useMockCluster();

/**
 * Two gateway instances on one cluster: each writes its own health records (connector@instance),
 * follows the other's, and answers /connectors with the merged view.
 * Needs the Gateway to build its HealthRegistry from the configuration (config.health).
 */
describe('connector health over several gateway instances', () => {
  it('merges both instances in /connectors, and a restarted instance gets its own record back', async () => {
    const { config, log } = await inboundHarness(broker, { HEALTH_SAVE_INTERVAL_MS: '200', HEALTH_CHECK_INTERVAL_MS: '200', KAFKA_SESSION_TIMEOUT_MS: '6000' });
    const start = async (instanceId: string): Promise<Gateway> => {
      const gw = new Gateway({ config: { ...config, health: { ...config.health, instanceId } }, logger: log.logger });
      broker.cleanups.push(() => gw.stop(5_000));
      await gw.start();
      expect(gw.health.instanceId, 'the Gateway builds its HealthRegistry from config.health').toBe(instanceId);
      return gw;
    };
    const connectors = async (gw: Gateway): Promise<ConnectorsReport> => {
      const r = await request(`${gw.address}/connectors`);
      return (await r.body.json()) as ConnectorsReport;
    };
    const amplitude = (r: ConnectorsReport) => r.connectors.find((c) => c.name === 'amplitude')!;

    const one = await start('gw-1');
    const two = await start('gw-2');
    const res = await request(`${one.address}/currents`, {
      method: 'POST',
      body: JSON.stringify({ events: Array.from({ length: 40 }, (_, i) => sampleCurrentsEvent(i, { users: 40 })) }),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}` },
    });
    await res.body.dump();
    expect(res.statusCode).toBe(200);

    // both answer with the same merged connector: every delivery counted once, both instances listed
    for (const gw of [one, two]) {
      const merged = await waitFor(
        async () => amplitude(await connectors(gw)),
        (c) => c.delivered === 40 && c.instances.length === 2 && c.instances.every((i) => !i.stale),
        30_000,
        `${gw.health.instanceId} shows both instances`,
      );
      expect(merged.pending).toBe(0);
      expect(merged.lastSuccess).not.toBeNull();
      expect(merged.instances.map((i) => [i.instance, i.self])).toEqual([
        [gw.health.instanceId, true],
        [gw.health.instanceId === 'gw-1' ? 'gw-2' : 'gw-1', false],
      ]);
    }
    const ownBefore = two.health.connector('amplitude', 'amplitude').record();

    // gw-2 restarts: its own counters come back from its own record, not from gw-1's
    await two.stop(5_000);
    const again = await start('gw-2');
    expect(again.health.connector('amplitude', 'amplitude').record()).toMatchObject({ delivered: ownBefore.delivered, lastSuccessMs: ownBefore.lastSuccessMs });
    expect(again.health.peers().map((p) => p.instance)).toEqual(['gw-1']);
    const merged = amplitude(await connectors(again));
    expect(merged.delivered).toBe(40);
  }, 120_000);
});
