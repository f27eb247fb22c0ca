/**
 * At-least-once bookkeeping for one consumer: which offsets of each partition were read and
 * which of them are finished (delivered, dead-lettered or skipped). The committable offset of a
 * partition is the first offset not yet finished, so a crash replays only unfinished work, never
 * skips it, however out of order deliveries complete.
 */
export interface PartitionState {
  /** offsets read, in read order (Kafka delivers a partition in order) */
  offsets: number[];
  done: Uint8Array;
  head: number;
  /** one past the newest offset read: the commit point when nothing is pending */
  next: number;
  lastCommitted: number;
  /** index shift applied by compaction; handles created before it translate their index */
  epochShift: number;
  /** set when the partition was revoked: late completions must not touch the counts */
  forgotten: boolean;
}

export interface CommitPoint {
  topic: string;
  partition: number;
  offset: string;
}

export class OffsetTracker {
  private readonly parts = new Map<string, PartitionState>();
  private pendingCount = 0;

  private state(topic: string, partition: number): PartitionState {
    const id = `${topic}\u0000${partition}`;
    let s = this.parts.get(id);
    if (!s) {
      s = { offsets: [], done: new Uint8Array(1024), head: 0, next: -1, lastCommitted: -1, epochShift: 0, forgotten: false };
      this.parts.set(id, s);
    }
    return s;
  }

  /**
   * The state of one partition, looked up once per fetched batch (not once per message): pass it
   * to `trackAt` for each of the batch's messages.
   */
  partition(topic: string, partition: number): PartitionState {
    return this.state(topic, partition);
  }

  /**
   * Registers a read message of partition `s`; returns its slot (an index to finish it with, along
   * with the partition's current `epochShift`), or -1 when this consumer has already read that
   * offset (finished or still in hand). kafkajs forgets its fetch position on every group rejoin
   * and fetches a partition it kept again from the last commit; without this, messages already
   * delivered (or still in flight) would be sent a second time.
   */
  trackAt(s: PartitionState, o: number): number {
    if (o < s.next) return -1;
    const index = s.offsets.length;
    s.offsets.push(o);
    if (s.done.length < s.offsets.length) {
      const bigger = new Uint8Array(s.done.length * 2);
      bigger.set(s.done);
      s.done = bigger;
    }
    s.next = o + 1;
    this.pendingCount++;
    return index;
  }

  /** Finishes the message `trackAt` gave `index` when the partition's epochShift was `epoch`; idempotent. */
  finishAt(s: PartitionState, index: number, epoch: number): void {
    const i = index - (s.epochShift - epoch);
    if (i < 0) return; // compacted away: it was already finished
    this.finish(s, i);
  }

  /**
   * `partition` + `trackAt` for one message, with a handle object to finish it with; undefined when
   * the offset was read before. (The consumer loop uses the per-batch form.)
   */
  track(topic: string, partition: number, offset: string): TrackedOffset | undefined {
    const s = this.state(topic, partition);
    const index = this.trackAt(s, Number(offset));
    return index < 0 ? undefined : new TrackedOffset(this, s, index);
  }

  /** @internal */
  finish(s: PartitionState, index: number): void {
    if (s.forgotten || s.done[index] === 1) return;
    s.done[index] = 1;
    this.pendingCount--;
    while (s.head < s.offsets.length && s.done[s.head] === 1) s.head++;
    // Compact once the finished prefix dominates, so memory stays proportional to what is pending.
    if (s.head > 4096 && s.head * 2 > s.offsets.length) {
      const rest = s.offsets.slice(s.head);
      const restDone = s.done.slice(s.head, s.offsets.length);
      const done = new Uint8Array(Math.max(1024, rest.length * 2));
      done.set(restDone);
      s.offsets = rest;
      s.done = done;
      // existing handles hold old indexes; shift them through the epoch offset
      s.epochShift += s.head;
      s.head = 0;
    }
  }

  get pending(): number {
    return this.pendingCount;
  }

  /** Offsets that can be committed now and have moved since the last call. */
  commitPoints(): CommitPoint[] {
    const out: CommitPoint[] = [];
    for (const [id, s] of this.parts) {
      if (s.next < 0) continue;
      const point = s.head < s.offsets.length ? (s.offsets[s.head] as number) : s.next;
      if (point > s.lastCommitted) {
        const [topic, partition] = id.split('\u0000') as [string, string];
        out.push({ topic, partition: Number(partition), offset: String(point) });
      }
    }
    return out;
  }

  markCommitted(points: CommitPoint[]): void {
    for (const p of points) {
      const s = this.parts.get(`${p.topic}\u0000${p.partition}`);
      if (s) s.lastCommitted = Math.max(s.lastCommitted, Number(p.offset));
    }
  }

  /** Forget a partition this consumer no longer owns (after a rebalance). */
  forget(topic: string, partition: number): void {
    const s = this.parts.get(`${topic}\u0000${partition}`);
    if (!s) return;
    for (let i = s.head; i < s.offsets.length; i++) if (s.done[i] !== 1) this.pendingCount--;
    s.forgotten = true;
    this.parts.delete(`${topic}\u0000${partition}`);
  }
}

export class TrackedOffset {
  private readonly epoch: number;
  constructor(
    private readonly tracker: OffsetTracker,
    private readonly s: PartitionState,
    private readonly index: number,
  ) {
    this.epoch = s.epochShift;
  }

  /** Marks the message finished; idempotent. */
  done(): void {
    this.tracker.finishAt(this.s, this.index, this.epoch);
  }
}
