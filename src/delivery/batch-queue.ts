/**
 * Queues per key (per destination user or device), with the keys ready to send ordered by the age of their oldest
 * item. A key that has a request in flight is not ready: its newer items wait until that request
 * is finished, so one user's objects reach Braze in the order they were read, while other users'
 * items go around them. Serving the oldest item first keeps delivery close to offset order, which
 * keeps the committed offset close behind what was delivered (fewer re-sends after a crash).
 *
 * What a request may hold is counted in "parts": a destination whose requests carry several
 * arrays (Braze: events, attributes, purchases) gives each item its count per array; one with a
 * single list of events gives one count.
 */
export interface Batchable {
  key: string;
  /** how many objects the item adds to each of the request's arrays */
  parts: readonly number[];
  bytes: number;
}

export interface BatchLimits {
  /** most objects in any one array of a request */
  maxPerPart: number;
  /** most objects across all arrays; 0: no cap across arrays */
  maxTotal: number;
  maxBytes: number;
}

export class KeyedBatchQueue<T extends Batchable> {
  private readonly queues = new Map<string, Array<Seq<T>>>();
  private readonly ready = new MinHeap();
  private readonly busy = new Set<string>();
  private count = 0;
  private seq = 0;
  /** per-part sums of the request being filled (reused: take() is on the hot path) */
  private readonly sums = new Float64Array(8);

  constructor(private readonly limits: BatchLimits) {}

  get size(): number {
    return this.count;
  }

  /** items whose key is free to send now */
  get hasReady(): boolean {
    return this.ready.size > 0;
  }

  push(item: T): void {
    const seq = this.seq++;
    let q = this.queues.get(item.key);
    if (!q) {
      q = [];
      this.queues.set(item.key, q);
      if (!this.busy.has(item.key)) this.ready.push(seq, item.key);
    }
    q.push({ seq, item });
    this.count++;
  }

  /** the oldest ready item, for linger decisions */
  peekReady(): T | undefined {
    for (;;) {
      const key = this.ready.peek();
      if (key === undefined) return undefined;
      const head = this.queues.get(key)?.[0];
      if (head) return head.item;
      // every item of this key was removed (expired) while it waited
      this.ready.pop();
    }
  }

  /**
   * Takes the next request's worth of items. Its keys become busy until `release` is called.
   * An item larger than the limits on its own is still returned alone, so the caller can send it
   * and let the destination's answer decide.
   */
  take(): T[] {
    const out: T[] = [];
    const sums = this.sums.fill(0);
    let total = 0;
    let bytes = 0;
    const { maxPerPart, maxTotal, maxBytes } = this.limits;
    while (this.ready.size > 0) {
      const key = this.ready.peek() as string;
      const q = this.queues.get(key);
      if (!q) {
        // every item of this key was removed (expired) while it waited
        this.ready.pop();
        continue;
      }
      // Take this user's items only while they are older than the next user's oldest: a user with
      // items spread over the whole backlog must not pull its newest ones ahead of everyone else's
      // old ones, or the committable offset falls far behind what was delivered.
      const nextSeq = this.ready.peekSecondSeq();
      let taken = 0;
      let full = false;
      while (taken < q.length) {
        const s = q[taken] as Seq<T>;
        if (taken > 0 && s.seq > nextSeq) break;
        const it = s.item;
        let fits = bytes + it.bytes <= maxBytes;
        let added = 0;
        for (let k = 0; k < it.parts.length; k++) {
          const n = it.parts[k] as number;
          added += n;
          if ((sums[k] as number) + n > maxPerPart) fits = false;
        }
        if (maxTotal !== 0 && total + added > maxTotal) fits = false;
        if (!fits && out.length + taken > 0) {
          full = true;
          break;
        }
        for (let k = 0; k < it.parts.length; k++) sums[k] = (sums[k] as number) + (it.parts[k] as number);
        total += added;
        bytes += it.bytes;
        taken++;
        if (!fits) {
          full = true;
          break;
        }
      }
      if (taken > 0) {
        for (let i = 0; i < taken; i++) out.push((q[i] as Seq<T>).item);
        this.busy.add(key);
        this.count -= taken;
        if (taken === q.length) this.queues.delete(key);
        else q.splice(0, taken);
        this.ready.pop();
      }
      if (full) break;
    }
    return out;
  }

  /** Removes and returns the queued items matching `pred`, keeping the order of the rest. */
  removeWhere(pred: (item: T) => boolean): T[] {
    const removed: T[] = [];
    for (const [key, q] of this.queues) {
      const keep = q.filter((s) => {
        if (!pred(s.item)) return true;
        removed.push(s.item);
        return false;
      });
      if (keep.length === q.length) continue;
      if (keep.length === 0) this.queues.delete(key);
      else this.queues.set(key, keep);
    }
    this.count -= removed.length;
    return removed;
  }

  /** The request holding these keys is finished: their waiting items may go. */
  release(keys: Iterable<string>): void {
    for (const key of keys) {
      if (!this.busy.delete(key)) continue;
      const head = this.queues.get(key)?.[0];
      if (head) this.ready.push(head.seq, key);
    }
  }

  /** `release` of the keys of a finished request's items (no Set: a key released twice is a no-op). */
  releaseItems(items: readonly T[]): void {
    for (let i = 0; i < items.length; i++) {
      const key = (items[i] as T).key;
      if (!this.busy.delete(key)) continue;
      const head = this.queues.get(key)?.[0];
      if (head) this.ready.push(head.seq, key);
    }
  }

  /** every queued item, oldest key first (for health probes and shutdown reports) */
  *items(): IterableIterator<T> {
    for (const q of this.queues.values()) for (const s of q) yield s.item;
  }
}

interface Seq<T> {
  seq: number;
  item: T;
}

/** Keys ordered by the arrival number of their oldest item. */
class MinHeap {
  private readonly seqs: number[] = [];
  private readonly keys: string[] = [];

  get size(): number {
    return this.seqs.length;
  }

  peek(): string | undefined {
    return this.keys[0];
  }

  /** the smallest seq below the top: the top's children (Infinity when there is none) */
  peekSecondSeq(): number {
    const a = this.seqs[1] ?? Infinity;
    const b = this.seqs[2] ?? Infinity;
    return a < b ? a : b;
  }

  push(seq: number, key: string): void {
    const { seqs, keys } = this;
    let i = seqs.length;
    seqs.push(seq);
    keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((seqs[parent] as number) <= seq) break;
      seqs[i] = seqs[parent] as number;
      keys[i] = keys[parent] as string;
      i = parent;
    }
    seqs[i] = seq;
    keys[i] = key;
  }

  pop(): void {
    const { seqs, keys } = this;
    const lastSeq = seqs.pop() as number;
    const lastKey = keys.pop() as string;
    const n = seqs.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (seqs[r] as number) < (seqs[l] as number) ? r : l;
      if ((seqs[c] as number) >= lastSeq) break;
      seqs[i] = seqs[c] as number;
      keys[i] = keys[c] as string;
      i = c;
    }
    seqs[i] = lastSeq;
    keys[i] = lastKey;
  }
}
