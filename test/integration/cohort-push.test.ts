/**
 * POST /cohorts, Amplitude's cohort webhook destination: token on every request, batches stored in
 * Kafka before the 2xx, applied in order, a repeated message_id applied once, hostile and oversized
 * bodies refused with 4xx, a realtime sync's failure and recovery notified, and a member identified
 * since it entered removed under the identifier it was added under.
 */
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import type { Notification } from '../../src/health/notify.js';
import { useMockCluster, waitFor } from '../support/harness.js';
import { WEBHOOK_TOKEN, brazeChanges, startCohortRig } from '../support/cohort-harness.js';

const COHORT = 'rt7cohort';

const batch = (messageId: string, inCohort: boolean, users: string[]): Record<string, unknown> => ({
  cohort_name: 'Realtime buyers',
  cohort_id: COHORT,
  in_cohort: inCohort,
  computed_time: '1731402000',
  message_id: messageId,
  users: users.map((u) => ({ user_id: u })),
});

describe('POST /cohorts (cohort webhook)', () => {
  const ctx = useMockCluster();

  it('applies enter and exit batches, a repeated message_id once, and refuses bad tokens and hostile bodies', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_SYNCS: `${COHORT}:realtime`, COHORT_WEBHOOK_MAX_USERS: '100', COHORT_WEBHOOK_MAX_BODY_BYTES: '20000' } });
    ctx.cleanups.push(() => r.close());

    const t0 = Date.now();
    const enter = await r.post('/cohorts', batch('m-1::enter::0', true, ['u-1', 'u-2', 'u-3']));
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(enter).toEqual({ status: 200, body: { stored: 3 } });
    await r.sync.pushesSettled();
    expect(brazeChanges(r.braze, COHORT).sort()).toEqual(['add e:u-1', 'add e:u-2', 'add e:u-3']);

    const exit = await r.post('/cohorts', batch('m-2::exit::0', false, ['u-2']));
    expect(exit.status).toBe(200);
    await r.sync.pushesSettled();
    expect(brazeChanges(r.braze, COHORT)).toContain('remove e:u-2');

    // Amplitude retries a batch it did not see answered in time: the same message_id is applied once
    const before = r.braze.received.attributes.length;
    const again = await r.post('/cohorts', batch('m-1::enter::0', true, ['u-1', 'u-2', 'u-3']));
    expect(again).toEqual({ status: 200, body: { stored: 0, duplicate: true } });
    await r.sync.pushesSettled();
    expect(r.braze.received.attributes.length).toBe(before);

    // still once after a restart (the applied ids live in the snapshot)
    await r.restart();
    expect((await r.post('/cohorts', batch('m-2::exit::0', false, ['u-2']))).body).toMatchObject({ duplicate: true });
    const st = await r.status();
    expect(st.syncs[0]).toMatchObject({ cohort_id: COHORT, cadence: 'realtime', members: 2 });
    expect((st.syncs[0]!.last_push as Record<string, unknown> | null)).toBeNull(); // a fresh process

    // the token on every request
    expect((await r.post('/cohorts', batch('m-3', true, ['u-9']), { authorization: 'Bearer nope' })).status).toBe(401);
    expect((await r.post('/cohorts', batch('m-3', true, ['u-9']), { authorization: '' })).status).toBe(401);
    // bodies that can never succeed
    expect((await r.post('/cohorts', '{"cohort_id": "x", ')).status).toBe(400);
    expect((await r.post('/cohorts', '{"cohort_id":"rt7cohort","in_cohort":true,"message_id":"m","users":[{"__proto__":{"x":1}}]}')).status).toBe(400);
    expect((await r.post('/cohorts', { ...batch('m-4', true, []), in_cohort: 'maybe' })).status).toBe(400);
    expect((await r.post('/cohorts', { ...batch('m-4', true, []), message_id: '' })).status).toBe(400);
    expect((await r.post('/cohorts', batch('m-4', true, Array.from({ length: 101 }, (_, i) => `x${i}`)))).status).toBe(413);
    expect((await r.post('/cohorts', { ...batch('m-5', true, ['u']), cohort_id: 'notsynced' })).status).toBe(400);
    const deep = JSON.stringify({ ...batch('m-6', true, ['u']), users: [{ user_id: 'u', p: JSON.parse('['.repeat(50) + ']'.repeat(50)) as unknown }] });
    expect((await r.post('/cohorts', deep)).status).toBe(400);
    // too large: refused from Content-Length before the body is read
    const big = await request(`${r.url}/cohorts`, { method: 'POST', headers: { authorization: `Bearer ${WEBHOOK_TOKEN}`, 'content-type': 'application/json' }, body: 'x'.repeat(30_000) });
    await big.body.dump();
    expect(big.statusCode).toBe(413);
    await r.sync.pushesSettled();
    expect(r.braze.received.attributes.filter((a) => a.external_id === 'u-9' || a.external_id === 'u')).toEqual([]);
  });

  it('folds push deltas into a new snapshot generation, and a restart finds members and applied ids intact', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_SYNCS: `${COHORT}:realtime` }, foldEvery: 3 });
    ctx.cleanups.push(() => r.close());
    for (let k = 0; k < 7; k++) expect((await r.post('/cohorts', batch(`f-${k}`, true, [`v-${k}a`, `v-${k}b`]))).status).toBe(200);
    expect((await r.post('/cohorts', batch('f-7', false, ['v-0a', 'v-6b']))).status).toBe(200);
    await r.sync.pushesSettled();
    expect((await r.status()).syncs[0]).toMatchObject({ members: 12 });
    await r.restart();
    expect((await r.status()).syncs[0]).toMatchObject({ members: 12 });
    for (const id of ['f-0', 'f-4', 'f-7']) expect((await r.post('/cohorts', batch(id, true, ['zz']))).body, id).toMatchObject({ duplicate: true });
    expect((await r.post('/cohorts', batch('f-8', false, ['v-1a']))).body).toEqual({ stored: 1 });
    await r.sync.pushesSettled();
    expect((await r.status()).syncs[0]).toMatchObject({ members: 11 });
    expect(brazeChanges(r.braze, COHORT).filter((c) => c.startsWith('remove')).sort()).toEqual(['remove e:v-0a', 'remove e:v-1a', 'remove e:v-6b']);
  });

  it('stores a batch before answering: one Braze could not take survives a restart and is applied; failure and recovery are notified', async () => {
    const notes: Notification[] = [];
    const notifier = { notify: (n: Notification) => notes.push(n), idle: async () => undefined, close: async () => undefined };
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_SYNCS: `${COHORT}:realtime`, BRAZE_RETRY_BASE_MS: '20', COHORT_BRAZE_MAX_RETRIES: '0' }, notifier });
    ctx.cleanups.push(() => r.close());
    r.braze.setApiKey('rotated');
    const res = await r.post('/cohorts', batch('m-10', true, ['a-1', 'a-2']));
    expect(res.status).toBe(200);
    await waitFor(() => notes.length, (n) => n > 0, 5_000, 'a failure notification');
    expect(notes[0]).toMatchObject({ event: 'sync_failed', subject: `cohort:${COHORT}` });
    expect((await r.status()).syncs[0]).toMatchObject({ pending_pushes: 1, members: 0 });

    await r.restart();
    r.braze.setApiKey('braze-key');
    await waitFor(() => brazeChanges(r.braze, COHORT).length, (n) => n === 2, 10_000, 'the stored batch applied after the restart');
    await r.sync.pushesSettled();
    expect((await r.status()).syncs[0]).toMatchObject({ members: 2, pending_pushes: 0 });
    // the recovery is notified by the process that saw the failure; a new process starts clean
    r.braze.setApiKey('rotated');
    await r.post('/cohorts', batch('m-11', false, ['a-1']));
    await waitFor(() => notes.filter((n) => n.event === 'sync_failed').length, (n) => n === 2, 5_000, 'a second failure');
    r.braze.setApiKey('braze-key');
    await waitFor(() => notes.filter((n) => n.event === 'sync_recovered').length, (n) => n === 1, 10_000, 'the recovery');
    await r.sync.pushesSettled();
    expect(brazeChanges(r.braze, COHORT)).toContain('remove e:a-1');
  });

  it('a user identified since: an exit or a new enter removes them under the identifier they were added under', async () => {
    const r = await startCohortRig(ctx.cluster, { env: { COHORT_SYNCS: `${COHORT}:realtime` } });
    ctx.cleanups.push(() => r.close());
    const alias = (d: string) => `a:${JSON.stringify({ alias_label: 'amplitude_device_id', alias_name: d })}`;
    const send = async (messageId: string, inCohort: boolean, users: Array<Record<string, string>>) => {
      r.braze.reset();
      expect((await r.post('/cohorts', { ...batch(messageId, inCohort, []), users })).status).toBe(200);
      await r.sync.pushesSettled();
      return brazeChanges(r.braze, COHORT);
    };
    // three anonymous members enter under their device alias
    expect((await send('i-1', true, [{ device_id: 'dev-1' }, { device_id: 'dev-2' }, { device_id: 'dev-3' }])).sort()).toEqual([alias('dev-1'), alias('dev-2'), alias('dev-3')].map((k) => `add ${k}`).sort());

    // dev-1 is identified and re-enters with its user id: added under the new identifier, removed under the old
    expect(await send('i-2', true, [{ user_id: 'u-1', device_id: 'dev-1' }])).toEqual([`remove ${alias('dev-1')}`, 'add e:u-1']);
    // dev-2 is identified and leaves: removed under the alias it is held under
    expect(await send('i-3', false, [{ user_id: 'u-2', device_id: 'dev-2' }])).toEqual([`remove ${alias('dev-2')}`]);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 2 });
    // u-1 leaves (its webhook user still carries the device id): the one key it is held under goes
    expect(await send('i-4', false, [{ user_id: 'u-1', device_id: 'dev-1' }])).toEqual(['remove e:u-1']);
    // an enter of a member held under its current key changes nothing
    expect(await send('i-5', true, [{ device_id: 'dev-3' }])).toEqual([]);

    // the snapshot holds exactly the remaining alias, also after a restart
    await r.restart();
    expect((await r.status()).syncs[0]).toMatchObject({ members: 1 });
    expect(await send('i-6', false, [{ user_id: 'u-3', device_id: 'dev-3' }])).toEqual([`remove ${alias('dev-3')}`]);
    expect((await r.status()).syncs[0]).toMatchObject({ members: 0 });
  });
});
