/**
 * The pull end to end against the strict stand-ins (Basic auth, 202 -> poll -> 302 to a pre-signed
 * URL that refuses an Authorization header, gzip CSV, quota counting), a real Kafka-protocol broker
 * for the snapshot topic, and the shared Braze client against the Braze stand-in.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { useMockCluster } from '../support/harness.js';
import { brazeChanges, member, members, startCohortRig, type CohortRig } from '../support/cohort-harness.js';

const COHORT = 'k3x9qpa';

describe('cohort pull sync', () => {
  const ctx = useMockCluster();
  const rig = async (env: Record<string, string> = {}): Promise<CohortRig> => {
    const r = await startCohortRig(ctx.cluster, { env });
    ctx.cleanups.push(() => r.close());
    return r;
  };

  it('first sync of 300 members, a restart with nothing changed, then 30 in and 20 out: exactly those sent', async () => {
    const r = await rig();
    // 290 identified members and 10 anonymous ones (no user id, and the export has no device id)
    const first = [...members(0, 290), ...Array.from({ length: 10 }, (_, i) => member(1_000 + i, ''))];
    r.amp.setCohort({ id: COHORT, name: 'Repeat buyers (30d)', members: first, lastComputed: 1_731_402_000 });

    const run1 = await r.sync.runNow(COHORT);
    expect(run1.result).toBe('success');
    expect(run1.adds).toBe(290);
    expect(run1.removes).toBe(0);
    expect(run1.unidentified).toEqual({ 'no_user_id+no_device_id': 10 });
    expect(r.amp.stats).toMatchObject({ exportRequests: 1, downloads: 1, presignedWithAuth: 0, unauthorized: 0 });
    expect(r.amp.stats.statusPolls).toBeGreaterThanOrEqual(2); // 202 JOB INPROGRESS, then 200
    const sent = brazeChanges(r.braze, COHORT);
    expect(sent).toHaveLength(290);
    expect(new Set(sent)).toEqual(new Set(members(0, 290).map((m) => `add e:${m.userId}`)));
    expect(r.braze.received.attributes.every((a) => a._update_existing_only === true)).toBe(true);
    expect(r.braze.stats.maxAttributesInRequest).toBeLessThanOrEqual(75);
    const st = await r.status();
    expect(st.budget).toMatchObject({ used: 1, left: 499 });
    expect(st.syncs[0]).toMatchObject({ cohort_id: COHORT, cadence: 'daily', state: 'synced', members: 290, cohort_name: 'Repeat buyers (30d)' });
    expect((st.syncs[0]!.last_run as Record<string, unknown>).skipped).toMatchObject({ unidentified: { 'no_user_id+no_device_id': 10 } });
    expect(r.health.snapshots().find((s) => s.name === `cohort:${COHORT}`)?.lastSuccessMs).toBeDefined();

    // a restart with nothing changed: no export, nothing sent
    await r.restart();
    const run2 = await r.sync.runNow(COHORT);
    expect(run2).toMatchObject({ result: 'skipped', skippedBecause: 'unchanged', exportsRequested: 0 });
    expect(r.amp.stats.exportRequests).toBe(1);
    expect(r.braze.received.attributes).toHaveLength(290);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 290 });

    // 30 in, 20 out: lastComputed moves, exactly those are sent
    const next = [...members(20, 290), ...members(2_000, 2_030), ...Array.from({ length: 10 }, (_, i) => member(1_000 + i, ''))];
    r.amp.setCohort({ id: COHORT, name: 'Repeat buyers (30d)', members: next, lastComputed: 1_731_488_400 });
    r.braze.reset();
    const run3 = await r.sync.runNow(COHORT);
    expect(run3).toMatchObject({ result: 'success', adds: 30, removes: 20, unchanged: 270 });
    const changes = brazeChanges(r.braze, COHORT);
    expect(changes.filter((c) => c.startsWith('remove')).sort()).toEqual(members(0, 20).map((m) => `remove e:${m.userId}`).sort());
    expect(changes.filter((c) => c.startsWith('add')).sort()).toEqual(members(2_000, 2_030).map((m) => `add e:${m.userId}`).sort());
    expect(r.amp.stats.exportRequests).toBe(2);
    expect((await r.status()).budget.left).toBe(498);
  });

  it('a download that fails halfway is fetched again, and the quota is spent once', async () => {
    const r = await rig();
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 300), lastComputed: 1_731_402_000 });
    r.amp.cutDownloads(1, 600);
    const run = await r.sync.runNow(COHORT);
    expect(run).toMatchObject({ result: 'success', adds: 300, downloadAttempts: 2, exportsRequested: 1 });
    expect(r.amp.stats).toMatchObject({ exportRequests: 1, downloadsCut: 1, downloads: 1 });
    expect(r.amp.quotaUsed).toBe(1);
    expect(brazeChanges(r.braze, COHORT)).toHaveLength(300);

    // every attempt of a run failing: the run fails, keeps the request id; the next run fetches the same export
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 310), lastComputed: 1_731_500_000 });
    r.amp.cutDownloads(3, 100);
    const failed = await r.sync.runNow(COHORT);
    expect(failed.result).toBe('failed');
    expect(failed.error).toMatch(/could not be downloaded in 3 attempts/);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 300, export_kept: failed.requestId });
    // recomputed again meanwhile: the kept export (310) is delivered first, and the next run exports anew
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 320), lastComputed: 1_731_600_000 });
    const again = await r.sync.runNow(COHORT);
    expect(again).toMatchObject({ result: 'success', adds: 10, exportsRequested: 0, requestId: failed.requestId });
    expect(r.amp.quotaUsed).toBe(2);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 310, export_kept: null });
    const newer = await r.sync.runNow(COHORT);
    expect(newer).toMatchObject({ result: 'success', adds: 10, exportsRequested: 1 });
    expect(r.amp.quotaUsed).toBe(3);
    expect((await r.sync.runNow(COHORT)).skippedBecause).toBe('unchanged');
  });

  it('a user identified between runs is added under the new identifier and removed under the old', async () => {
    const r = await rig({ COHORT_IDENTIFIERS: 'user_id=external_id,amplitude_id=user_alias:amplitude_id' });
    r.amp.setCohort({ id: COHORT, name: 'c', members: [...members(0, 5), member(77, '')], lastComputed: 1_731_402_000 });
    expect((await r.sync.runNow(COHORT)).adds).toBe(6);
    expect(r.braze.received.attributes.find((a) => a.user_alias !== undefined)?.user_alias).toEqual({ alias_name: member(77).amplitudeId, alias_label: 'amplitude_id' });
    r.braze.reset();
    r.amp.setCohort({ id: COHORT, name: 'c', members: [...members(0, 5), member(77, 'now-known-77')], lastComputed: 1_731_500_000 });
    const run = await r.sync.runNow(COHORT);
    expect(run).toMatchObject({ result: 'success', adds: 1, removes: 1, unchanged: 5 });
    expect(r.braze.received.attributes).toEqual([
      { user_alias: { alias_label: 'amplitude_id', alias_name: member(77).amplitudeId }, amplitude_cohorts: { remove: [COHORT] }, _update_existing_only: true },
      { external_id: 'now-known-77', amplitude_cohorts: { add: [COHORT] }, _update_existing_only: true },
    ]);
  });

  it('Braze 5xx and a bad key during a run: the run fails, the snapshot does not move, the next run completes without a new export', async () => {
    const notes: Array<{ event: string; text: string }> = [];
    const r = await startCohortRig(ctx.cluster, { notifier: { notify: (n) => notes.push(n), idle: async () => undefined, close: async () => undefined } });
    ctx.cleanups.push(() => r.close());
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 100), lastComputed: 1_731_402_000 });
    expect((await r.sync.runNow(COHORT)).result).toBe('success');
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 200), lastComputed: 1_731_500_000 });

    // 5xx beyond the retries of one run
    r.braze.injectFaults({ status: 503, count: 10 });
    const failed = await r.sync.runNow(COHORT);
    expect(failed.result).toBe('failed');
    expect(failed.error).toMatch(/503/);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 100, state: 'failed' });
    expect(r.health.snapshots().find((s) => s.name === `cohort:${COHORT}`)?.state).toBe('degraded');
    expect(notes.at(-1)).toMatchObject({ event: 'run_failed' });
    expect(notes.at(-1)?.text).toMatch(/snapshot did not move/);
    r.braze.reset();

    // a refused key: stops the run at once
    r.braze.setApiKey('rotated-key');
    const refused = await r.sync.runNow(COHORT);
    expect(refused.result).toBe('failed');
    expect(refused.error).toMatch(/401/);
    expect(r.health.snapshots().find((s) => s.name === `cohort:${COHORT}`)?.state).toBe('failing');
    expect((await r.status()).syncs[0]).toMatchObject({ members: 100 });
    r.braze.setApiKey('braze-key');

    const ok = await r.sync.runNow(COHORT);
    expect(ok).toMatchObject({ result: 'success', adds: 100, exportsRequested: 0 });
    expect(r.amp.quotaUsed).toBe(2);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 200, state: 'synced' });
    expect(notes.at(-1)).toMatchObject({ event: 'run_succeeded' });
  });

  it('an archived cohort stops its sync and says so; an exhausted budget fails the run without an export', async () => {
    const notes: Array<{ event: string; text: string }> = [];
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_DOWNLOAD_BUDGET: '1' }, notifier: { notify: (n) => notes.push(n), idle: async () => undefined, close: async () => undefined } });
    ctx.cleanups.push(() => r.close());
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 10), lastComputed: 1 });
    expect((await r.sync.runNow(COHORT)).result).toBe('success');
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 12), lastComputed: 2 });
    const spent = await r.sync.runNow(COHORT);
    expect(spent.result).toBe('failed');
    expect(spent.error).toMatch(/budget .* is spent/);
    expect(r.amp.stats.exportRequests).toBe(1);
    expect((await r.status()).budget.left).toBe(0);

    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 12), lastComputed: 3, archived: true });
    const archived = await r.sync.runNow(COHORT);
    expect(archived).toMatchObject({ result: 'skipped', skippedBecause: 'archived' });
    expect((await r.status()).syncs[0]).toMatchObject({ state: 'archived', members: 10 });
    expect(notes.at(-1)?.text).toMatch(/archived/);
    expect(r.braze.received.attributes).toHaveLength(10);
  });

  it('the download budget is per calendar month, and a kept export older than its 7-day link is requested anew (injected clock)', async () => {
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 23, 0));
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_DOWNLOAD_BUDGET: '1' }, clock });
    ctx.cleanups.push(() => r.close());
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 10), lastComputed: 1 });
    expect((await r.sync.runNow(COHORT)).result).toBe('success');
    r.amp.setCohort({ id: COHORT, name: 'c', members: members(0, 11), lastComputed: 2 });
    expect((await r.sync.runNow(COHORT)).error).toMatch(/budget for 2026-11 is spent/);
    clock.set(Date.UTC(2026, 11, 1, 0, 30));
    expect((await r.status()).budget).toMatchObject({ used: 0, left: 1 });
    r.braze.injectFaults({ status: 503, count: 20 });
    const failed = await r.sync.runNow(COHORT);
    expect(failed).toMatchObject({ result: 'failed', exportsRequested: 1 });
    r.braze.reset();
    clock.advance(8 * 86_400_000);
    // the kept request is past its link's lifetime: a new export, from the month's budget
    const next = await r.sync.runNow(COHORT);
    expect(next.result).toBe('failed');
    expect(next.error).toMatch(/budget for 2026-12 is spent/);
    expect((await r.status()).syncs[0]).toMatchObject({ export_kept: null, members: 10 });
  });
});
