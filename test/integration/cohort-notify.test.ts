/**
 * Notifications received by a local webhook (a plain HTTP server) and a local SMTP server
 * (smtp-server): a scheduled run's success and failure, a connector turning failing or expired, and a
 * notification that cannot be sent is logged and counted without blocking the sync.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { describe, expect, it } from 'vitest';
import { createNotifier, type Notifier } from '../../src/health/notify.js';
import { watchConnectorStates } from '../../src/health/notify-watch.js';
import { Metrics } from '../../src/observability/metrics.js';
import { loadConfig } from '../../src/config/config.js';
import { ManualClock } from '../../src/clock.js';
import { HealthRegistry } from '../../src/health/connector-health.js';
import { memoryLogger, useMockCluster, waitFor } from '../support/harness.js';
import { members, startCohortRig } from '../support/cohort-harness.js';

interface Received {
  hooks: Array<Record<string, unknown>>;
  mails: string[];
}

async function startReceivers(): Promise<{ got: Received; webhookUrl: string; smtpUrl: string; failHooks: (n: number) => void; close: () => Promise<void> }> {
  const got: Received = { hooks: [], mails: [] };
  let failing = 0;
  const http: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (failing > 0) {
        failing--;
        res.writeHead(500).end('down');
        return;
      }
      got.hooks.push(JSON.parse(body) as Record<string, unknown>);
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, _session, cb) {
      let text = '';
      stream.on('data', (c: Buffer) => (text += c.toString()));
      stream.on('end', () => {
        got.mails.push(text);
        cb();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  const smtpPort = (smtp.server.address() as AddressInfo).port;
  return {
    got,
    webhookUrl: `http://127.0.0.1:${(http.address() as AddressInfo).port}/hook`,
    smtpUrl: `smtp://127.0.0.1:${smtpPort}`,
    failHooks: (n) => {
      failing = n;
    },
    close: async () => {
      await new Promise<void>((r) => http.close(() => r()));
      await new Promise<void>((r) => smtp.close(() => r()));
    },
  };
}

describe('notifications', () => {
  const ctx = useMockCluster();

  it('a scheduled run\'s success and failure reach the webhook (Slack-compatible text) and the mailbox', async () => {
    const rx = await startReceivers();
    ctx.cleanups.push(() => rx.close());
    const { logger } = memoryLogger('silent');
    const metrics = new Metrics({ defaultMetrics: false });
    const notify = loadConfig({ KAFKA_BROKERS: 'x:1', NOTIFY_WEBHOOK_URL: rx.webhookUrl, NOTIFY_SMTP_URL: rx.smtpUrl, NOTIFY_EMAIL_TO: 'ops@example.com,growth@example.com' }).notify;
    const notifier: Notifier = createNotifier(notify, { metrics, logger });
    ctx.cleanups.push(() => notifier.close());
    const r = await startCohortRig(ctx.cluster, { notifier });
    ctx.cleanups.push(() => r.close());

    r.amp.setCohort({ id: 'k3x9qpa', name: 'Repeat buyers (30d)', members: members(0, 40), lastComputed: 10 });
    expect((await r.sync.runNow('k3x9qpa')).result).toBe('success');
    await notifier.idle();
    expect(rx.got.hooks).toHaveLength(1);
    expect(rx.got.hooks[0]).toMatchObject({ event: 'run_succeeded', subject: 'cohort:k3x9qpa', details: { adds: 40, removes: 0 } });
    expect(String(rx.got.hooks[0]!.text)).toMatch(/Repeat buyers \(30d\).*40 added, 0 removed/);
    await waitFor(() => rx.got.mails.length, (n) => n === 1, 5_000, 'the e-mail');
    expect(rx.got.mails[0]).toMatch(/To: ops@example.com, growth@example.com/);
    expect(rx.got.mails[0]).toMatch(/Subject: .*run succeeded: cohort:k3x9qpa/);

    r.amp.setCohort({ id: 'k3x9qpa', name: 'Repeat buyers (30d)', members: members(0, 45), lastComputed: 20 });
    r.braze.setApiKey('rotated');
    expect((await r.sync.runNow('k3x9qpa')).result).toBe('failed');
    await notifier.idle();
    await waitFor(() => rx.got.mails.length, (n) => n === 2, 5_000, 'the second e-mail');
    expect(rx.got.hooks[1]).toMatchObject({ event: 'run_failed' });
    expect(String(rx.got.hooks[1]!.text)).toMatch(/401/);
    expect(await metrics.value('gateway_notifications_total', { channel: 'webhook', result: 'sent' })).toBe(2);
    expect(await metrics.value('gateway_notifications_total', { channel: 'email', result: 'sent' })).toBe(2);

    // a connector turning failing is notified once, by the state watcher (also one found failing at its first look)
    const watch = watchConnectorStates(r.health, notifier, 60_000);
    ctx.cleanups.push(async () => watch.stop());
    r.health.connector('braze', 'braze').recordSuccess(1);
    watch.check();
    r.health.connector('braze', 'braze').recordFailure('auth', 'Braze refused the API key (401)');
    watch.check();
    watch.check();
    await notifier.idle();
    // the cohort connector was already failing (the refused key above) when the watcher first looked
    expect(rx.got.hooks.filter((h) => h.event === 'connector_failing').map((h) => h.subject)).toEqual(['cohort:k3x9qpa', 'braze']);
  });

  it('a notification that cannot be sent is logged and counted, and never blocks the sync', async () => {
    const rx = await startReceivers();
    ctx.cleanups.push(() => rx.close());
    const { logger, lines } = memoryLogger('info');
    const metrics = new Metrics({ defaultMetrics: false });
    rx.failHooks(1);
    const notifier = createNotifier(loadConfig({ KAFKA_BROKERS: 'x:1', NOTIFY_WEBHOOK_URL: rx.webhookUrl, NOTIFY_SMTP_URL: 'smtp://127.0.0.1:1', NOTIFY_EMAIL_TO: 'ops@example.com', NOTIFY_TIMEOUT_MS: '2000' }).notify, { metrics, logger });
    ctx.cleanups.push(() => notifier.close());
    const r = await startCohortRig(ctx.cluster, { notifier });
    ctx.cleanups.push(() => r.close());
    r.amp.setCohort({ id: 'k3x9qpa', name: 'c', members: members(0, 5), lastComputed: 10 });
    const started = Date.now();
    expect((await r.sync.runNow('k3x9qpa')).result).toBe('success');
    expect(Date.now() - started).toBeLessThan(2_000);
    await notifier.idle();
    expect(await metrics.value('gateway_notifications_total', { channel: 'webhook', result: 'failed' })).toBe(1);
    expect(await metrics.value('gateway_notifications_total', { channel: 'email', result: 'failed' })).toBe(1);
    expect(lines().filter((l) => l.msg === 'a notification could not be sent; the sync goes on').map((l) => l.channel).sort()).toEqual(['email', 'webhook']);
  });

  it('a connector turning expired is notified once, to the webhook and the mailbox, and its recovery after', async () => {
    const rx = await startReceivers();
    ctx.cleanups.push(() => rx.close());
    const { logger } = memoryLogger('silent');
    const metrics = new Metrics({ defaultMetrics: false });
    const notifier = createNotifier(loadConfig({ KAFKA_BROKERS: 'x:1', NOTIFY_WEBHOOK_URL: rx.webhookUrl, NOTIFY_SMTP_URL: rx.smtpUrl, NOTIFY_EMAIL_TO: 'ops@example.com' }).notify, { metrics, logger });
    ctx.cleanups.push(() => notifier.close());
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 12, 0));
    const health = new HealthRegistry(clock);
    const amplitude = health.connector('amplitude', 'amplitude');
    amplitude.recordSuccess(10);
    const watch = watchConnectorStates(health, notifier, 60_000);
    ctx.cleanups.push(async () => watch.stop());

    // the drop window moved the connector's pending events to the dead-letter topic
    clock.advance(3_600_000);
    amplitude.markExpired();
    watch.check();
    watch.check();
    await notifier.idle();
    const expired = rx.got.hooks.filter((h) => h.event === 'connector_expired');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({ subject: 'amplitude', details: { state: 'expired', previous: 'idle' } });
    expect(String(expired[0]!.text)).toMatch(/expired: .*dead-letter topic.*replay --reason drop_window_expired/);
    await waitFor(() => rx.got.mails.length, (n) => n === 1, 5_000, 'the e-mail');
    expect(rx.got.mails[0]).toMatch(/To: ops@example.com/);
    expect(rx.got.mails[0]).toMatch(/expired/);

    // delivering again ends the expiry: notified as a recovery, once
    amplitude.recordSuccess(1);
    watch.check();
    watch.check();
    await notifier.idle();
    expect(rx.got.hooks.map((h) => h.event)).toEqual(['connector_expired', 'sync_recovered']);
    expect(rx.got.hooks[1]).toMatchObject({ subject: 'amplitude', details: { previous: 'expired' } });
    expect(await metrics.value('gateway_notifications_total', { channel: 'webhook', result: 'sent' })).toBe(2);
  });
});
