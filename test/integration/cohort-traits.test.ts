/**
 * Traits and computations: user properties from the cohort export (propKeys, no extra quota) and
 * computations from the User Profile API, kept in Braze as custom attributes by user id, for users
 * active in the last 90 days, sent only when a value changed.
 */
import { describe, expect, it } from 'vitest';
import { useMockCluster } from '../support/harness.js';
import { startCohortRig } from '../support/cohort-harness.js';
import type { StandInCohortMember } from '../../src/demo/standins/amplitude-cohorts.js';

const day = 86_400_000;
const iso = (msAgo: number) => new Date(Date.now() - msAgo).toISOString().slice(0, 10);

describe('trait and computation sync', () => {
  const ctx = useMockCluster();

  it('sends traits by user id, only for active users, only when changed', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { TRAIT_PROPERTIES: 'plan,country', TRAIT_COMPUTATIONS: 'ltv_bucket' } });
    ctx.cleanups.push(() => r.close());
    const m = (i: number, plan: string, lastUsedDaysAgo = 1, userId = `u-${i}`): StandInCohortMember => ({ amplitudeId: String(9_000 + i), userId, props: { plan, country: 'DE', last_used: iso(lastUsedDaysAgo * day) } });
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: [m(1, 'pro'), m(2, 'free'), m(3, 'pro', 200), m(4, 'free', 1, '')], lastComputed: 10 });
    r.amp.setProfile('u-1', { ltv_bucket: 'high', last_used: iso(day) });
    r.amp.setProfile('u-2', { ltv_bucket: 3 });

    const run1 = await r.sync.runNow('k3x9qpa');
    expect(run1).toMatchObject({ result: 'success', adds: 3, traitsSent: 2 });
    expect(r.amp.stats.exportRequests).toBe(1);
    const traits = () => r.braze.received.attributes.filter((a) => a.amplitude_cohorts === undefined);
    expect(traits().sort((a, b) => String(a.external_id).localeCompare(String(b.external_id)))).toEqual([
      { external_id: 'u-1', plan: 'pro', country: 'DE', ltv_bucket: 'high' },
      { external_id: 'u-2', plan: 'free', country: 'DE', ltv_bucket: 3 },
    ]);
    expect(r.amp.stats.profileCalls).toBe(2);

    // one value changed: only that user's attributes go
    r.braze.reset();
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: [m(1, 'pro'), m(2, 'pro'), m(3, 'pro', 200), m(4, 'free', 1, '')], lastComputed: 20 });
    const run2 = await r.sync.runNow('k3x9qpa');
    expect(run2).toMatchObject({ result: 'success', adds: 0, removes: 0, traitsSent: 1 });
    expect(traits()).toEqual([{ external_id: 'u-2', plan: 'pro', country: 'DE', ltv_bucket: 3 }]);

    // after a restart, unchanged values are still not sent again
    await r.restart();
    r.braze.reset();
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: [m(1, 'pro'), m(2, 'pro')], lastComputed: 30 });
    const run3 = await r.sync.runNow('k3x9qpa');
    expect(run3).toMatchObject({ result: 'success', removes: 1, traitsSent: 0 });
    expect(traits()).toEqual([]);
  });
});
