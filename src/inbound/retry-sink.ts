import type { Clock } from '../clock.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import { NOT_BEFORE_HEADER } from './amplitude-leg.js';

/**
 * The retry topic's consumer hands each parked event back to its leg once its not-before time
 * has come. Until then the event waits here (its offset uncommitted, so a restart reads it again);
 * when too many wait, the retry consumer pauses instead of buffering without bound.
 */
export class RetrySink implements MessageSink {
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly leg: MessageSink,
    private readonly clock: Clock,
    private readonly maxHeld: number,
  ) {}

  accept(msg: ConsumedMessage): void {
    const raw = msg.headers[NOT_BEFORE_HEADER];
    const notBefore = Number((Array.isArray(raw) ? raw[0] : raw)?.toString() ?? 0);
    const wait = notBefore - this.clock.now();
    if (!(wait > 0)) {
      this.leg.accept(msg);
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.leg.accept(msg);
    }, wait);
    this.timers.add(t);
  }

  get held(): number {
    return this.timers.size;
  }

  hasCapacity(): boolean {
    return this.timers.size < this.maxHeld && this.leg.hasCapacity();
  }

  /** Events not yet due stay in the topic (uncommitted) for the next start; the rest drain with the leg. */
  async drain(timeoutMs: number): Promise<boolean> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    return this.leg.drain(timeoutMs);
  }
}
