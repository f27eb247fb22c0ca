/**
 * The export flow's other shapes against the strict stand-in: a job that is never ready within
 * COHORT_POLL_TIMEOUT_MS (the run fails, is notified, and keeps its request id, so the next run
 * spends no second export; a request Amplitude no longer knows is forgotten), and a file served
 * plain rather than gzip, or in the /file answer's own 200 body rather than through the 302.
 */
import { describe, expect, it } from 'vitest';
import type { Notification } from '../../src/health/notify.js';
import { startAmplitudeCohortStandIn } from '../../src/demo/standins/amplitude-cohorts.js';
import { useMockCluster } from '../support/harness.js';
import { AMP_KEY, AMP_SECRET, brazeChanges, members, startCohortRig } from '../support/cohort-harness.js';

const COHORT = 'k3x9qpa';

describe('cohort export: poll cap and file shapes', () => {
  const ctx = useMockCluster();

  it('an export never ready within the poll cap fails the run, is notified, and keeps its request id', async () => {
    const notes: Notification[] = [];
    const notifier = { notify: (n: Notification) => notes.push(n), idle: async () => undefined, close: async () => undefined };
    // a job that stays JOB INPROGRESS for far longer than the cap
    const amp = await startAmplitudeCohortStandIn({ apiKey: AMP_KEY, secretKey: AMP_SECRET, pollsUntilDone: 1_000_000 });
    ctx.cleanups.push(() => amp.close());
    const r = await startCohortRig(ctx.cluster, { amp, notifier, env: { COHORT_POLL_TIMEOUT_MS: '300' } });
    ctx.cleanups.push(() => r.close());
    amp.setCohort({ id: COHORT, name: 'Slow cohort', members: members(0, 20), lastComputed: 1_731_402_000 });

    const started = Date.now();
    const failed = await r.sync.runNow(COHORT);
    expect(failed).toMatchObject({ result: 'failed', exportsRequested: 1, downloaded: false, downloadAttempts: 0 });
    expect(failed.error).toMatch(/not ready after .*COHORT_POLL_TIMEOUT_MS.*request id is kept/);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(amp.stats.statusPolls).toBeGreaterThanOrEqual(2);
    expect(amp.stats.fileCalls).toBe(0);
    expect(notes.at(-1)).toMatchObject({ event: 'run_failed', subject: `cohort:${COHORT}` });
    expect(notes.at(-1)?.text).toMatch(/not ready/);
    const st = await r.status();
    expect(st.syncs[0]).toMatchObject({ state: 'failed', members: 0, export_kept: failed.requestId });
    expect(st.budget).toMatchObject({ used: 1 });
    expect(r.health.snapshots().find((s) => s.name === `cohort:${COHORT}`)?.state).toBe('degraded');

    // the next run polls the same job again: no second export, no second unit of the quota
    const polls = amp.stats.statusPolls;
    const again = await r.sync.runNow(COHORT);
    expect(again).toMatchObject({ result: 'failed', exportsRequested: 0, requestId: failed.requestId });
    expect(amp.stats.statusPolls).toBeGreaterThan(polls);
    expect(amp.quotaUsed).toBe(1);
    expect(amp.stats.exportRequests).toBe(1);
    expect(r.braze.received.attributes).toEqual([]);

    // Amplitude forgot the job (404 on its status): the kept id is dropped, and the run after asks anew
    amp.reset();
    amp.setCohort({ id: COHORT, name: 'Slow cohort', members: members(0, 20), lastComputed: 1_731_402_000 });
    const forgotten = await r.sync.runNow(COHORT);
    expect(forgotten).toMatchObject({ result: 'failed', exportsRequested: 0, requestId: failed.requestId });
    expect(forgotten.error).toMatch(/no longer knows export/);
    expect((await r.status()).syncs[0]).toMatchObject({ export_kept: null });
    const fresh = await r.sync.runNow(COHORT);
    expect(fresh).toMatchObject({ result: 'failed', exportsRequested: 1 });
    expect(fresh.requestId).not.toBe(failed.requestId);
    expect(amp.stats.exportRequests).toBe(1);
  });

  for (const shape of [
    { name: 'a plain (not gzip) file behind the 302', gzip: false, redirect: true },
    { name: 'a gzip file in the /file answer\'s own 200 body', gzip: true, redirect: false },
    { name: 'a plain file in the 200 body', gzip: false, redirect: false },
  ]) {
    it(`downloads ${shape.name}`, async () => {
      const amp = await startAmplitudeCohortStandIn({ apiKey: AMP_KEY, secretKey: AMP_SECRET, gzip: shape.gzip, redirect: shape.redirect });
      ctx.cleanups.push(() => amp.close());
      const r = await startCohortRig(ctx.cluster, { amp });
      ctx.cleanups.push(() => r.close());
      // quoted fields with a comma, a doubled quote and a newline in them, as Amplitude may write them
      const odd = [
        { amplitudeId: '700000001', userId: 'comma, inside' },
        { amplitudeId: '700000002', userId: 'say "hi"' },
        { amplitudeId: '700000003', userId: 'two\nlines' },
      ];
      amp.setCohort({ id: COHORT, name: 'c', members: [...members(0, 250), ...odd], lastComputed: 1_731_402_000 });
      const run = await r.sync.runNow(COHORT);
      expect(run).toMatchObject({ result: 'success', adds: 253, downloadAttempts: 1, exportsRequested: 1 });
      expect(amp.stats).toMatchObject({ fileCalls: 1, downloads: 1, presignedWithAuth: 0, unauthorized: 0 });
      const sent = brazeChanges(r.braze, COHORT);
      expect(new Set(sent)).toEqual(new Set([...members(0, 250), ...odd].map((m) => `add e:${m.userId}`)));
      expect(sent).toHaveLength(253);
    });
  }
});
