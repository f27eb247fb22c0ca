/**
 * Queues per key (per Braze user) with a FIFO of keys ready to send. A key that has a request in
 * flight is not ready: its newer items wait until that request is finished, so one user's
 * objects reach Braze in the order they were read, while other users' items go around them.
 */
export interface Batchable {
  key: string;
  events: number;
  attributes: number;
  purchases: number;
  bytes: number;
}

export interface BatchLimits {
  maxPerArray: number;
  /** 0: no cap across arrays */
  maxTotal: number;
  maxBytes: number;
}

export class KeyedBatchQueue<T extends Batchable> {
  private readonly queues = new Map<string, T[]>();
  private readonly ready: string[] = [];
  private readyHead = 0;
  private readonly busy = new Set<string>();
  private count = 0;

  constructor(private readonly limits: BatchLimits) {}

  get size(): number {
    return this.count;
  }

  /** items whose key is free to send now */
  get hasReady(): boolean {
    return this.readyHead < this.ready.length;
  }

  push(item: T): void {
    let q = this.queues.get(item.key);
    if (!q) {
      q = [];
      this.queues.set(item.key, q);
      if (!this.busy.has(item.key)) this.ready.push(item.key);
    }
    q.push(item);
    this.count++;
  }

  /** the first ready item, for linger decisions */
  peekReady(): T | undefined {
    const key = this.ready[this.readyHead];
    return key === undefined ? undefined : this.queues.get(key)?.[0];
  }

  /**
   * Takes the next request's worth of items. Its keys become busy until `release` is called.
   * An item larger than the limits on its own is still returned alone, so the caller can send it
   * and let the destination's answer decide.
   */
  take(): T[] {
    const out: T[] = [];
    let events = 0;
    let attributes = 0;
    let purchases = 0;
    let bytes = 0;
    const { maxPerArray, maxTotal, maxBytes } = this.limits;
    while (this.readyHead < this.ready.length) {
      const key = this.ready[this.readyHead] as string;
      const q = this.queues.get(key) as T[];
      let taken = 0;
      let full = false;
      while (taken < q.length) {
        const it = q[taken] as T;
        const e = events + it.events;
        const a = attributes + it.attributes;
        const p = purchases + it.purchases;
        const fits =
          e <= maxPerArray && a <= maxPerArray && p <= maxPerArray && (maxTotal === 0 || e + a + p <= maxTotal) && bytes + it.bytes <= maxBytes;
        if (!fits && out.length + taken > 0) {
          full = true;
          break;
        }
        events = e;
        attributes = a;
        purchases = p;
        bytes += it.bytes;
        taken++;
        if (!fits) {
          full = true;
          break;
        }
      }
      if (taken > 0) {
        for (let i = 0; i < taken; i++) out.push(q[i] as T);
        this.busy.add(key);
        this.count -= taken;
        if (taken === q.length) this.queues.delete(key);
        else q.splice(0, taken);
        this.readyHead++;
      }
      if (full) break;
    }
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready.splice(0, this.readyHead);
      this.readyHead = 0;
    }
    return out;
  }

  /** The request holding these keys is finished: their waiting items may go. */
  release(keys: Iterable<string>): void {
    for (const key of keys) {
      if (!this.busy.delete(key)) continue;
      if (this.queues.has(key)) this.ready.push(key);
    }
  }

  /** every queued item, oldest key first (for health probes and shutdown reports) */
  *items(): IterableIterator<T> {
    for (const q of this.queues.values()) yield* q;
  }
}
