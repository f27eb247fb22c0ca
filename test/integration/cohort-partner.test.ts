/**
 * The partner transport (BRAZE_PARTNER_API_KEY + BRAZE_DATA_IMPORT_KEY): Braze's partner cohort API,
 * the cohort named first, at most 1,000 ids a call, its answers (423, 401) acted on as outcomes.
 */
import { describe, expect, it } from 'vitest';
import { startBrazePartnerStandIn } from '../../src/demo/standins/braze-partner.js';
import { useMockCluster } from '../support/harness.js';
import { member, members, startCohortRig } from '../support/cohort-harness.js';

describe('cohort sync through the partner API', () => {
  const ctx = useMockCluster();

  it('names the cohort, sends changes in calls of at most 1,000 ids, retries a 423, and fails the run on a refused secret', async () => {
    const partner = await startBrazePartnerStandIn({ partnerName: 'amplitude', partnerApiKey: 'pk', clientSecret: 'import-key' });
    ctx.cleanups.push(() => partner.close());
    const r = await startCohortRig(ctx.cluster, {
      env: { BRAZE_REST_ENDPOINT: partner.url, BRAZE_PARTNER_API_KEY: 'pk', BRAZE_DATA_IMPORT_KEY: 'import-key', COHORT_IDENTIFIERS: 'user_id=external_id,amplitude_id=user_alias:amplitude_id' },
    });
    ctx.cleanups.push(() => r.close());
    r.amp.setCohort({ id: 'k3x9qpa', name: 'Repeat buyers', members: [...members(0, 2_499), member(5_000, '')], lastComputed: 10 });
    partner.injectFaults({ status: 423, count: 1 });

    const run = await r.sync.runNow('k3x9qpa');
    expect(run).toMatchObject({ result: 'success', adds: 2_500 });
    expect(partner.names.get('k3x9qpa')).toBe('[Amplitude] Repeat buyers: k3x9qpa');
    expect(partner.stats.maxIdsInRequest).toBe(1_000);
    expect(partner.stats.byStatus[423]).toBe(1);
    const held = partner.members.get('k3x9qpa')!;
    expect(held.size).toBe(2_500);
    expect(held.has('user:user-0')).toBe(true);
    expect(held.has(`alias:amplitude_id:${member(5_000).amplitudeId}`)).toBe(true);
    expect((await r.status()).syncs[0]).toMatchObject({ destination: 'partner', members: 2_500 });

    // 100 leave; the data import key was regenerated in Braze: 401, the run fails and moves nothing
    r.amp.setCohort({ id: 'k3x9qpa', name: 'Repeat buyers', members: [...members(100, 2_499), member(5_000, '')], lastComputed: 20 });
    partner.setClientSecret('regenerated');
    const refused = await r.sync.runNow('k3x9qpa');
    expect(refused.result).toBe('failed');
    expect(refused.error).toMatch(/Invalid client secret/);
    expect(r.health.snapshots().find((s) => s.name === 'cohort:k3x9qpa')?.state).toBe('failing');
    expect((await r.status()).syncs[0]).toMatchObject({ members: 2_500 });

    partner.setClientSecret('import-key');
    const ok = await r.sync.runNow('k3x9qpa');
    expect(ok).toMatchObject({ result: 'success', removes: 100, adds: 0, exportsRequested: 0 });
    expect(held.size).toBe(2_400);
    expect(held.has('user:user-0')).toBe(false);
  });
});
