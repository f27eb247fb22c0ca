/**
 * The cohort sync inside the whole gateway: built from the environment, sharing the gateway's Braze
 * client, its first run at start, GET /cohorts on the admin surface and POST /cohorts on the public
 * one, the sync as a connector in /connectors and the metrics, its run notified.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { startAmplitudeCohortStandIn } from '../../src/demo/standins/amplitude-cohorts.js';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import { memoryLogger, testConfig, useMockCluster, waitFor } from '../support/harness.js';
import { AMP_KEY, AMP_SECRET, BRAZE_KEY, WEBHOOK_TOKEN, brazeChanges, members } from '../support/cohort-harness.js';

describe('cohort sync in the gateway', () => {
  const ctx = useMockCluster();

  it('runs at start, serves GET /cohorts (admin) and POST /cohorts (public), and shows up as a connector', async () => {
    const amp = await startAmplitudeCohortStandIn({ apiKey: AMP_KEY, secretKey: AMP_SECRET });
    ctx.cleanups.push(() => amp.close());
    const braze = await startBrazeStandIn({ apiKey: BRAZE_KEY });
    ctx.cleanups.push(() => braze.close());
    const hooks: Array<Record<string, unknown>> = [];
    const hook = createServer((req, res) => {
      let b = '';
      req.on('data', (c: Buffer) => (b += c.toString()));
      req.on('end', () => {
        hooks.push(JSON.parse(b) as Record<string, unknown>);
        res.end('ok');
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
    ctx.cleanups.push(() => new Promise<void>((r) => hook.close(() => r())));
    amp.setCohort({ id: 'k3x9qpa', name: 'Repeat buyers', members: members(0, 120), lastComputed: 100 });

    const config = testConfig({
      KAFKA_BROKERS: ctx.cluster.bootstrap,
      KAFKA_GROUP_ID: `cohort-gw-${Date.now()}`,
      ADMIN_HTTP_PORT: '0',
      BRAZE_REST_ENDPOINT: braze.url,
      BRAZE_API_KEY: BRAZE_KEY,
      AMPLITUDE_API_KEY: AMP_KEY,
      AMPLITUDE_SECRET_KEY: AMP_SECRET,
      AMPLITUDE_API_URL: amp.url,
      COHORT_SYNCS: 'k3x9qpa:daily',
      COHORT_WEBHOOK_TOKEN: WEBHOOK_TOKEN,
      COHORT_POLL_BASE_MS: '10',
      TOPIC_COHORTS: `gateway.cohorts.gw-${Date.now()}`,
      NOTIFY_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`,
    });
    const gateway = new Gateway({ config, logger: memoryLogger('warn').logger });
    ctx.cleanups.push(() => gateway.stop(5_000));
    await gateway.start();

    await waitFor(() => brazeChanges(braze, 'k3x9qpa').length, (n) => n === 120, 20_000, 'the run at start');
    const get = async (base: string | undefined, path: string): Promise<{ status: number; body: Record<string, unknown> }> => {
      const r = await request(`${base}${path}`);
      const text = await r.body.text();
      return { status: r.statusCode, body: r.statusCode === 200 ? (JSON.parse(text) as Record<string, unknown>) : {} };
    };
    const st = await waitFor(() => get(gateway.adminAddress, '/cohorts'), (s) => (s.body.syncs as Array<Record<string, unknown>> | undefined)?.[0]?.members === 120, 10_000, 'the snapshot');
    expect(st.body.budget).toMatchObject({ used: 1, left: 499 });
    expect((await get(gateway.address, '/cohorts')).status).toBe(404); // admin only

    const post = await request(`${gateway.address}/cohorts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${WEBHOOK_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ cohort_id: 'k3x9qpa', cohort_name: 'Repeat buyers', in_cohort: true, computed_time: '1', message_id: 'gw-1', users: [{ user_id: 'pushed-1' }] }),
    });
    expect(post.statusCode).toBe(200);
    await post.body.dump();
    const onAdmin = await request(`${gateway.adminAddress}/cohorts`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    await onAdmin.body.dump();
    expect(onAdmin.statusCode).toBe(404); // public only
    await waitFor(() => brazeChanges(braze, 'k3x9qpa'), (c) => c.includes('add e:pushed-1'), 10_000, 'the pushed member');

    const connectors = (await get(gateway.adminAddress, '/connectors')).body.connectors as Array<Record<string, unknown>>;
    expect(connectors.map((c) => c.name)).toContain('cohort:k3x9qpa');
    // The gauge follows the snapshot's commit, which comes just after Braze has the change.
    const metrics = await waitFor(
      async () => (await request(`${gateway.adminAddress}/metrics`)).body.text(),
      (m) => /gateway_cohort_members\{connector="cohort:k3x9qpa"\} 121/.test(m),
      5_000,
      'the members gauge after the push',
    );
    expect(metrics).toMatch(/gateway_cohort_downloads_left 499/);
    await waitFor(() => hooks.length, (n) => n >= 1, 5_000, 'the run notification');
    expect(hooks[0]).toMatchObject({ event: 'run_succeeded', subject: 'cohort:k3x9qpa' });
  });
});
