import type { Clock } from '../clock.js';
import type { HealthSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectorHealth } from './connector-health.js';
import { dropWindowDecision, warningLevel } from './drop-window.js';
import type { HealthMetrics } from './health-metrics.js';
import type { HealthStore } from './health-store.js';

/** A leg whose oldest pending events can be moved out when the drop window fires. */
export interface Expirable {
  expireBefore(cutoffMs: number): Promise<number>;
}

/**
 * Watches each connector against the drop window: Amplitude drops a connector's pending events
 * after 48 hours without a delivery, so the gateway moves them to the dead-letter topic itself
 * (reason drop_window_expired, replayable), says so once in the log and in a metric, and warns on
 * the way there so nobody learns of it at hour 48.
 */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private readonly warned = new Map<string, string>();

  constructor(
    private readonly d: {
      settings: HealthSettings;
      connectors: Array<{ health: ConnectorHealth; leg: Expirable }>;
      metrics: HealthMetrics;
      store?: HealthStore;
      logger: Logger;
      clock: Clock;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.d.settings.checkIntervalMs);
  }

  /** One pass over every connector; passes never overlap. */
  check(): Promise<void> {
    this.running = this.running.then(() => this.checkOnce()).catch((err: unknown) => {
      this.d.logger.error({ err: (err as Error).message }, 'health check failed');
    });
    return this.running;
  }

  private async checkOnce(): Promise<void> {
    const { settings, logger, clock } = this.d;
    for (const { health, leg } of this.d.connectors) {
      const snap = health.snapshot();
      const now = clock.now();
      const level = warningLevel(snap, now, settings.dropWindowMs);
      if (level !== 'none' && this.warned.get(snap.name) !== level) {
        logger.warn(
          { connector: snap.name, state: snap.state, pending: snap.pending, secondsSinceLastSuccess: snap.secondsSinceLastSuccess, level },
          `connector ${snap.name} has not delivered for a long time while events are pending; at ${settings.dropWindowMs / 3_600_000} h they move to the dead-letter topic`,
        );
        this.warned.set(snap.name, level);
      } else if (level === 'none') this.warned.delete(snap.name);

      const decision = dropWindowDecision(snap, now, settings.dropWindowMs);
      if (!decision.expire || decision.cutoffMs === undefined) continue;
      const moved = await leg.expireBefore(decision.cutoffMs);
      if (moved === 0) continue;
      health.markExpired();
      this.d.metrics.dropWindowExpired.inc({ connector: snap.name }, moved);
      logger.error(
        { connector: snap.name, moved, cutoff: new Date(decision.cutoffMs).toISOString() },
        `drop window expired: ${moved} events of ${snap.name} older than ${settings.dropWindowMs / 3_600_000} h moved to the dead-letter topic (reason drop_window_expired); replay them with \`replay --reason drop_window_expired\` once the connector works`,
      );
    }
    await this.d.store?.save();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }
}
