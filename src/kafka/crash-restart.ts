import type { Logger } from '../observability/logger.js';
import { describeError } from '../errors.js';

/** how long after a crash kafkajs does not recover from a new consumer is started */
export const CONSUMER_RESTART_DELAY_MS = 1_000;

export interface CrashRestartOptions {
  /** for the log lines: `<name> crashed`, `<name> restarted after …` */
  name: string;
  /** fields every log line carries (the leg, the topic) */
  fields: Record<string, unknown>;
  logger: Logger;
  /** disconnects the crashed consumer and starts a new member in its place; throws if it cannot */
  replace: () => Promise<void>;
  /** after a replacement that worked (a metric) */
  onReplaced?: () => void;
  stopping: () => boolean;
}

/**
 * What a consumer does about kafkajs's CRASH event. kafkajs restarts after most errors itself;
 * after the others (a fatal group error during a rebalance, say) the member would sit outside its
 * group for good while the process looked healthy. So a new member is started a moment later, and
 * again after each failed try; until one has joined, `crashed` keeps the consumer not ready.
 */
export class CrashRestart {
  private timer: NodeJS.Timeout | undefined;
  private out = false;

  constructor(private readonly o: CrashRestartOptions) {}

  /** true from a crash kafkajs gives up on until the new member has joined */
  get crashed(): boolean {
    return this.out;
  }

  onCrash(payload: { error: Error; restart: boolean }): void {
    this.o.logger.error({ ...this.o.fields, err: payload.error.message, restart: payload.restart }, `${this.o.name} crashed`);
    if (payload.restart || this.o.stopping()) return;
    this.out = true;
    this.schedule();
  }

  /** the (new) member joined its group */
  onJoined(): void {
    this.out = false;
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.timer || this.o.stopping()) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.attempt();
    }, CONSUMER_RESTART_DELAY_MS);
  }

  private async attempt(): Promise<void> {
    if (this.o.stopping()) return;
    try {
      await this.o.replace();
      this.o.onReplaced?.();
      this.o.logger.warn(this.o.fields, `${this.o.name} restarted after a crash kafkajs does not recover from`);
    } catch (err) {
      this.o.logger.error({ ...this.o.fields, err: describeError(err) }, `${this.o.name} restart failed; trying again`);
      this.schedule();
    }
  }
}
