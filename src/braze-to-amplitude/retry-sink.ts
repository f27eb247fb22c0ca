import type { Clock } from '../clock.js';
import type { ConsumedMessage, MessageSink } from '../kafka/consumer-loop.js';
import { NOT_BEFORE_HEADER } from './amplitude-leg.js';

interface Waiting {
  msgs: Array<{ msg: ConsumedMessage; notBefore: number }>;
  timer?: NodeJS.Timeout;
}

/**
 * The retry topic's consumer hands each parked event back to its leg once its not-before time
 * has come, in the order it was parked per key (a due event never overtakes an earlier one still
 * waiting). Until then the event waits here with its offset uncommitted, so a restart reads it
 * again; when too many wait, the retry consumer pauses instead of buffering without bound.
 */
export class RetrySink implements MessageSink {
  private readonly waiting = new Map<string, Waiting>();
  private count = 0;

  constructor(
    private readonly leg: MessageSink,
    private readonly clock: Clock,
    private readonly maxHeld: number,
  ) {}

  accept(msg: ConsumedMessage): void {
    const raw = msg.headers[NOT_BEFORE_HEADER];
    const notBefore = Number((Array.isArray(raw) ? raw[0] : raw)?.toString() ?? 0);
    const key = msg.key?.toString() ?? '';
    const w = this.waiting.get(key);
    if (w) {
      w.msgs.push({ msg, notBefore });
      this.count++;
      return;
    }
    if (!(notBefore > this.clock.now())) {
      this.leg.accept(msg);
      return;
    }
    this.count++;
    const fresh: Waiting = { msgs: [{ msg, notBefore }] };
    this.waiting.set(key, fresh);
    this.schedule(key, fresh);
  }

  private schedule(key: string, w: Waiting): void {
    const head = w.msgs[0];
    if (!head) {
      this.waiting.delete(key);
      return;
    }
    w.timer = setTimeout(() => this.release(key), Math.max(1, head.notBefore - this.clock.now()));
  }

  private release(key: string): void {
    const w = this.waiting.get(key);
    if (!w) return;
    const now = this.clock.now();
    while (w.msgs.length > 0 && (w.msgs[0] as { notBefore: number }).notBefore <= now) {
      const { msg } = w.msgs.shift() as { msg: ConsumedMessage };
      this.count--;
      this.leg.accept(msg);
    }
    this.schedule(key, w);
  }

  get held(): number {
    return this.count;
  }

  hasCapacity(): boolean {
    return this.count < this.maxHeld && this.leg.hasCapacity();
  }

  /** Events not yet due stay in the topic (uncommitted) for the next start; the rest drain with the leg. */
  async drain(timeoutMs: number): Promise<boolean> {
    for (const w of this.waiting.values()) if (w.timer) clearTimeout(w.timer);
    this.waiting.clear();
    this.count = 0;
    return this.leg.drain(timeoutMs);
  }
}
