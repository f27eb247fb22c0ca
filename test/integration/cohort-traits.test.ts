/**
 * Traits and computations: user properties from the cohort export (propKeys, no extra quota) and
 * computations from the User Profile API, kept in Braze as custom attributes by user id, for users
 * active in the last 90 days, each attribute sent only when its own value changed, a missing value
 * never written; TRAIT_COMPUTATIONS on their own; trait properties carried by webhook pushes.
 */
import { describe, expect, it } from 'vitest';
import { useMockCluster } from '../support/harness.js';
import { brazeChanges, startCohortRig } from '../support/cohort-harness.js';
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

    // one value changed: only that attribute of that user goes (country and ltv_bucket did not change)
    r.braze.reset();
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: [m(1, 'pro'), m(2, 'pro'), m(3, 'pro', 200), m(4, 'free', 1, '')], lastComputed: 20 });
    const run2 = await r.sync.runNow('k3x9qpa');
    expect(run2).toMatchObject({ result: 'success', adds: 0, removes: 0, traitsSent: 1 });
    expect(traits()).toEqual([{ external_id: 'u-2', plan: 'pro' }]);

    // after a restart, unchanged values are still not sent again
    await r.restart();
    r.braze.reset();
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: [m(1, 'pro'), m(2, 'pro')], lastComputed: 30 });
    const run3 = await r.sync.runNow('k3x9qpa');
    expect(run3).toMatchObject({ result: 'success', removes: 1, traitsSent: 0 });
    expect(traits()).toEqual([]);
  });

  it('TRAIT_COMPUTATIONS alone: every active member with a user id gets its computations, each sent only when it changed', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { TRAIT_COMPUTATIONS: 'ltv_bucket,churn_risk' } });
    ctx.cleanups.push(() => r.close());
    const m = (i: number, lastUsedDaysAgo = 1, userId = `u-${i}`): StandInCohortMember => ({ amplitudeId: String(9_100 + i), userId, props: { last_used: iso(lastUsedDaysAgo * day) } });
    // u-3 inactive by the export's last_used (no profile call spent on it), u-4 anonymous, u-5's
    // computations are unset (null: nothing written, no profile created), u-6 unknown to the Profile API
    const cohort = [m(1), m(2), m(3, 200), m(4, 1, ''), m(5), m(6)];
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: cohort, lastComputed: 10 });
    r.amp.setProfile('u-1', { ltv_bucket: 'high', churn_risk: 0.2 });
    r.amp.setProfile('u-2', { ltv_bucket: 3 });
    r.amp.setProfile('u-3', { ltv_bucket: 'low' });
    r.amp.setProfile('u-5', { something_else: 1 });
    const traits = () => r.braze.received.attributes.filter((a) => a.amplitude_cohorts === undefined).sort((a, b) => String(a.external_id).localeCompare(String(b.external_id)));

    const run1 = await r.sync.runNow('k3x9qpa');
    expect(run1).toMatchObject({ result: 'success', adds: 5, traitsSent: 2 });
    expect(traits()).toEqual([
      { external_id: 'u-1', ltv_bucket: 'high', churn_risk: 0.2 },
      { external_id: 'u-2', ltv_bucket: 3 },
    ]);
    expect(r.amp.stats.profileCalls).toBe(4); // u-1, u-2, u-5, u-6
    expect(r.amp.stats.profileThrottled).toBe(0);

    // one computation of one user changed: only that attribute goes; nothing else is re-sent
    r.braze.reset();
    r.amp.setProfile('u-1', { ltv_bucket: 'high', churn_risk: 0.7 });
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: cohort, lastComputed: 20 });
    const run2 = await r.sync.runNow('k3x9qpa');
    expect(run2).toMatchObject({ result: 'success', adds: 0, removes: 0, traitsSent: 1 });
    expect(traits()).toEqual([{ external_id: 'u-1', churn_risk: 0.7 }]);
    expect(r.amp.stats.profileCalls).toBe(8);

    // a computation that became unset is not written (no null blanks the attribute), the rest unchanged
    r.braze.reset();
    r.amp.setProfile('u-2', {});
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: cohort, lastComputed: 30 });
    expect(await r.sync.runNow('k3x9qpa')).toMatchObject({ result: 'success', traitsSent: 0 });
    expect(traits()).toEqual([]);
  });

  it('a property missing from the export is never written, and each attribute goes only when its own value changed', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { TRAIT_PROPERTIES: 'plan,country' } });
    ctx.cleanups.push(() => r.close());
    const m = (i: number, props: Record<string, string>): StandInCohortMember => ({ amplitudeId: String(9_200 + i), userId: `u-${i}`, props: { last_used: iso(day), ...props } });
    const traits = () => r.braze.received.attributes.filter((a) => a.amplitude_cohorts === undefined).sort((a, b) => String(a.external_id).localeCompare(String(b.external_id)));
    let computed = 10;
    const run = async (members: StandInCohortMember[]) => {
      r.braze.reset();
      r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members, lastComputed: (computed += 10) });
      const report = await r.sync.runNow('k3x9qpa');
      expect(report.result).toBe('success');
      return report;
    };

    // u-1 has no country (the export writes ""), u-2 has neither property: no profile of empty attributes
    expect(await run([m(1, { plan: 'pro' }), m(2, {})])).toMatchObject({ adds: 2, traitsSent: 1 });
    expect(traits()).toEqual([{ external_id: 'u-1', plan: 'pro' }]);
    // the country arrives: only it goes
    expect(await run([m(1, { plan: 'pro', country: 'DE' }), m(2, {})])).toMatchObject({ traitsSent: 1 });
    expect(traits()).toEqual([{ external_id: 'u-1', country: 'DE' }]);
    // the plan is missing this time: nothing is written (not "", and country did not change)
    expect(await run([m(1, { country: 'DE' }), m(2, {})])).toMatchObject({ traitsSent: 0 });
    expect(traits()).toEqual([]);
    // the plan is back with the value Braze already has: still nothing
    expect(await run([m(1, { plan: 'pro', country: 'DE' }), m(2, {})])).toMatchObject({ traitsSent: 0 });
    expect(traits()).toEqual([]);
    // after a restart the per-attribute state is read back: one changed value, one attribute sent
    await r.restart();
    expect(await run([m(1, { plan: 'free', country: 'DE' }), m(2, { country: 'FR' })])).toMatchObject({ traitsSent: 2 });
    expect(traits()).toEqual([
      { external_id: 'u-1', plan: 'free' },
      { external_id: 'u-2', country: 'FR' },
    ]);
  });

  it('a webhook batch that carries trait properties sends the changed ones (by user id, only when changed)', async () => {
    const COHORT = 'rt7cohort';
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_SYNCS: `${COHORT}:realtime`, TRAIT_PROPERTIES: 'plan,country' } });
    ctx.cleanups.push(() => r.close());
    const traits = () => r.braze.received.attributes.filter((a) => a.amplitude_cohorts === undefined).sort((a, b) => String(a.external_id).localeCompare(String(b.external_id)));
    const push = async (messageId: string, users: Array<Record<string, unknown>>) => {
      r.braze.reset();
      const res = await r.post('/cohorts', { cohort_name: 'rt', cohort_id: COHORT, in_cohort: true, computed_time: '1731402000', message_id: messageId, users });
      expect(res.status).toBe(200);
      await r.sync.pushesSettled();
    };
    // flat or under user_properties, as the destination's template writes them; `tier` is not configured
    await push('t-1', [{ user_id: 'u-1', plan: 'pro', tier: 'gold' }, { user_id: 'u-2', user_properties: { plan: 'free', country: '' } }, { device_id: 'd-3', plan: 'pro' }]);
    expect(brazeChanges(r.braze, COHORT).sort()).toEqual(['add a:{"alias_label":"amplitude_device_id","alias_name":"d-3"}', 'add e:u-1', 'add e:u-2']);
    expect(traits()).toEqual([
      { external_id: 'u-1', plan: 'pro' },
      { external_id: 'u-2', plan: 'free' },
    ]);
    await push('t-2', [{ user_id: 'u-1', plan: 'pro', country: 'DE' }]);
    expect(traits()).toEqual([{ external_id: 'u-1', country: 'DE' }]);
    await push('t-3', [{ user_id: 'u-1', plan: 'pro', country: 'DE' }]);
    expect(traits()).toEqual([]);
    expect(r.amp.stats.profileCalls).toBe(0);
  });
});
