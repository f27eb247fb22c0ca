/**
 * Notifications to people: a JSON webhook (`{"text": ...}`, which Slack's incoming webhooks and
 * most chat tools accept as is) and e-mail through SMTP (nodemailer), for each scheduled cohort run
 * that succeeds or fails, a realtime sync failing and recovering, and a connector turning `failing`
 * or `expired`.
 *
 * Sending never blocks or fails the caller: `notify()` returns at once, messages go out one after
 * another in the background with a timeout each, and a message that cannot be sent is logged and
 * counted (`gateway_notifications_total{channel,result}`), nothing more. The queue is bounded:
 * beyond it the oldest waiting message is dropped, counted as such.
 */
import { Counter } from 'prom-client';
import { request } from 'undici';
import nodemailer from 'nodemailer';
import type { Metrics } from '../observability/metrics.js';
import type { Logger } from '../observability/logger.js';
import { scrubSecrets } from '../observability/logger.js';
import type { NotifySettings } from '../cohorts/cohort-config.js';

export type NotificationEvent = 'run_succeeded' | 'run_failed' | 'sync_failed' | 'sync_recovered' | 'sync_stopped' | 'connector_failing' | 'connector_expired';

export interface Notification {
  event: NotificationEvent;
  /** the connector or sync it is about */
  subject: string;
  /** one line for people */
  text: string;
  /** machine-readable details (counts, error), sent along in the webhook JSON */
  details?: Record<string, unknown>;
  atMs: number;
}

export interface Notifier {
  notify(n: Notification): void;
  /** resolves once every queued message was sent or given up (tests, shutdown) */
  idle(): Promise<void>;
  close(): Promise<void>;
}

const MAX_QUEUED = 1_000;

let countersByRegistry = new WeakMap<object, Counter<'channel' | 'result'>>();

function counter(metrics: Metrics): Counter<'channel' | 'result'> {
  let c = countersByRegistry.get(metrics.registry);
  if (!c) {
    c = new Counter({ name: 'gateway_notifications_total', help: 'notifications by channel (webhook, email) and result (sent, failed, dropped)', labelNames: ['channel', 'result'] as const, registers: [metrics.registry] });
    countersByRegistry.set(metrics.registry, c);
  }
  return c;
}

/** for tests that build many notifiers on fresh registries */
export function resetNotifierMetrics(): void {
  countersByRegistry = new WeakMap();
}

export function createNotifier(settings: NotifySettings, d: { metrics: Metrics; logger: Logger }): Notifier {
  const sent = counter(d.metrics);
  const channels: Array<{ name: 'webhook' | 'email'; send: (n: Notification) => Promise<void>; close?: () => void }> = [];
  const secrets = [settings.webhookUrl, settings.smtpUrl];

  if (settings.webhookUrl) {
    const url = settings.webhookUrl;
    channels.push({
      name: 'webhook',
      send: async (n) => {
        const res = await request(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'amplitude-braze-gateway/0.1' },
          body: JSON.stringify({ text: n.text, event: n.event, subject: n.subject, at: new Date(n.atMs).toISOString(), ...(n.details ? { details: n.details } : {}) }),
          headersTimeout: settings.timeoutMs,
          bodyTimeout: settings.timeoutMs,
        });
        const body = await res.body.text().catch(() => '');
        if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`the notification webhook answered ${res.statusCode}: ${body.slice(0, 200)}`);
      },
    });
  }
  if (settings.smtpUrl && settings.emailTo.length > 0) {
    const transport = nodemailer.createTransport(settings.smtpUrl, {});
    const to = settings.emailTo.join(', ');
    channels.push({
      name: 'email',
      send: async (n) => {
        await transport.sendMail({
          from: settings.emailFrom,
          to,
          subject: `[amplitude-braze-gateway] ${n.event.replace(/_/g, ' ')}: ${n.subject}`,
          text: `${n.text}\n\n${n.details ? JSON.stringify(n.details, null, 2) : ''}\n\n${new Date(n.atMs).toISOString()}\n`,
        });
      },
      close: () => transport.close(),
    });
  }

  const queue: Notification[] = [];
  let running: Promise<void> | undefined;
  let closed = false;

  const withTimeout = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`not sent within ${settings.timeoutMs} ms`)), settings.timeoutMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });

  const drain = async (): Promise<void> => {
    while (queue.length > 0) {
      const n = queue.shift()!;
      for (const c of channels) {
        try {
          await withTimeout(c.send(n));
          sent.inc({ channel: c.name, result: 'sent' });
        } catch (err) {
          sent.inc({ channel: c.name, result: 'failed' });
          d.logger.warn({ channel: c.name, event: n.event, subject: n.subject, err: scrubSecrets((err as Error).message, secrets) }, 'a notification could not be sent; the sync goes on');
        }
      }
    }
  };

  return {
    notify(n) {
      if (closed || channels.length === 0) return;
      if (queue.length >= MAX_QUEUED) {
        queue.shift();
        for (const c of channels) sent.inc({ channel: c.name, result: 'dropped' });
      }
      queue.push(n);
      if (!running) {
        running = drain().finally(() => {
          running = undefined;
        });
      }
    },
    async idle() {
      while (running) await running;
    },
    async close() {
      closed = true;
      while (running) await running;
      for (const c of channels) c.close?.();
    },
  };
}
