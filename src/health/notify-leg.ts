/**
 * Notifications as one of the gateway's flows (src/leg.ts): on when NOTIFY_WEBHOOK_URL or
 * NOTIFY_SMTP_URL with NOTIFY_EMAIL_TO is set. Watches every connector for a turn to `failing` or
 * `expired`, and hands its notifier to the cohort sync for run results.
 */
import type { LegContext } from '../leg.js';
import { createNotifier, type Notifier } from './notify.js';
import { watchConnectorStates } from './notify-watch.js';

/** A built flow (the shape of src/leg.ts's BuiltLeg) with nothing to consume or serve. */
export interface NotificationsLeg {
  name: 'notifications';
  notifier: Notifier;
  loops: never[];
  readiness: never[];
  routes: never[];
  watched: never[];
  pending(): number;
  close(): Promise<void>;
}

export function buildNotifications(ctx: LegContext): NotificationsLeg | undefined {
  const s = ctx.config.notify;
  if (!s.webhookUrl && !(s.smtpUrl && s.emailTo.length > 0)) return undefined;
  const notifier = createNotifier(s, { metrics: ctx.metrics, logger: ctx.logger.child({ component: 'notify' }) });
  const watch = watchConnectorStates(ctx.health, notifier, s.checkIntervalMs);
  ctx.logger.info({ webhook: s.webhookUrl !== undefined, email: s.emailTo.length > 0 }, 'notifications on');
  return {
    name: 'notifications',
    notifier,
    loops: [],
    readiness: [],
    routes: [],
    watched: [],
    pending: () => 0,
    close: async () => {
      watch.stop();
      await notifier.close();
    },
  };
}
