import { randomInt } from 'node:crypto';
import type { IHeaders, Kafka, Producer } from 'kafkajs';
import type { Clock } from '../clock.js';
import { describeError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { IdPacer, PartitionSnapshot, PersistedMark } from './id-pacer.js';
import { readTopicToEnd } from '../kafka/read-to-end.js';

export interface LimiterStoreDeps {
  kafka: Kafka;
  /** the compacted topic (TOPIC_LIMITS, default gateway.limits) */
  topic: string;
  pacer: IdPacer;
  logger: Logger;
  clock: Clock;
  /** periodic save of every partition held (LIMITS_SAVE_INTERVAL_MS) */
  intervalMs: number;
  fetchMaxWaitMs: number;
  /** the throw-away reader's group id starts with this */
  groupIdPrefix: string;
  /** most bytes in one record; a partition's snapshot is split into chunks of this size */
  chunkBytes?: number;
  loadTimeoutMs?: number;
}

/** The head record of one partition's snapshot: which chunks, in which slot, of which generation. */
interface Head {
  v: 1;
  gen: number;
  slot: 0 | 1;
  chunks: number;
  bytes: number;
  savedAtMs: number;
}

const BLOB_VERSION = 1;
const CHUNK_HEADER = 12;

export function headKey(partition: number): string {
  return `limits/${partition}`;
}

function chunkKey(partition: number, slot: number, i: number): string {
  return `limits/${partition}/s${slot}/${i}`;
}

/** One partition's snapshot as one byte string: version, the limiter's bytes, the marks as JSON. */
export function encodeSnapshot(s: PartitionSnapshot): Buffer {
  const marks = Buffer.from(JSON.stringify(s.marks.map((m) => [m.key, m.short, m.long, m.untilMs])), 'utf8');
  const out = Buffer.allocUnsafe(5 + s.daily.byteLength + marks.byteLength);
  out.writeUInt8(BLOB_VERSION, 0);
  out.writeUInt32LE(s.daily.byteLength, 1);
  out.set(s.daily, 5);
  marks.copy(out, 5 + s.daily.byteLength);
  return out;
}

export function decodeSnapshot(b: Buffer): PartitionSnapshot {
  if (b.length < 5 || b.readUInt8(0) !== BLOB_VERSION) throw new Error('not a limiter snapshot of a known version');
  const n = b.readUInt32LE(1);
  if (5 + n > b.length) throw new Error('truncated limiter snapshot');
  const daily = new Uint8Array(b.subarray(5, 5 + n));
  const raw: unknown = JSON.parse(b.subarray(5 + n).toString('utf8'));
  if (!Array.isArray(raw)) throw new Error('limiter snapshot marks are not a list');
  const marks: PersistedMark[] = [];
  for (const m of raw) {
    if (!Array.isArray(m) || m.length !== 4) continue;
    const [key, short, long, untilMs] = m as unknown[];
    if (typeof key !== 'string' || !isCount(short) || !isCount(long) || typeof untilMs !== 'number' || !Number.isFinite(untilMs)) continue;
    marks.push({ key, short, long, untilMs });
  }
  return { daily, marks };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function parseHead(v: Buffer): Head | undefined {
  try {
    const h = JSON.parse(v.toString('utf8')) as Partial<Head>;
    if (h.v !== 1 || typeof h.gen !== 'number' || (h.slot !== 0 && h.slot !== 1) || !isCount(h.chunks) || !isCount(h.bytes)) return undefined;
    return { v: 1, gen: h.gen, slot: h.slot, chunks: h.chunks, bytes: h.bytes, savedAtMs: Number(h.savedAtMs ?? 0) };
  } catch {
    return undefined;
  }
}

/**
 * Persists the pacer's daily counts (and its parked-key marks) per partition of the Currents topic
 * in a compacted topic, so a restart or a rebalance does not start every id at zero.
 *
 * Records: `limits/<p>` is the head (JSON: generation, slot, chunk count); `limits/<p>/s<slot>/<i>`
 * are the chunks, each `[u32 generation hi][u32 generation lo][u32 index]` + a slice of the
 * snapshot. A save writes its chunks into the slot the current head does not use, then the head, so
 * a reader always finds one complete generation; chunks of a slot beyond the new count are deleted
 * (tombstones). A snapshot is about 13 bytes per id with counts, in chunks of `chunkBytes`.
 *
 * Wiring (the gateway, for the inbound consumer of the Currents topic): `onAssigned(partitions)`
 * when the member joins with its assignment (restores the new ones, saves and drops the lost ones);
 * `onRebalancing()` from the inbound consumers' join hook (kafka/join-hook.ts), so the owned partitions
 * are saved when a rebalance starts (the next owner reads fresh counts, not the last periodic
 * save's); `start()` once the producer is connected (periodic saves), `stop()` after the consumers
 * stopped (a last save).
 */
export class LimiterStore {
  private producer: Producer | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** last head written or read per partition: the next save uses the other slot */
  private readonly heads = new Map<number, Head>();
  private saving: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly chunkBytes: number;
  /** partitions of the Currents topic this member owns (from onAssigned); undefined: all held */
  private owned: Set<number> | undefined;
  /** partitions first seen in an event, restored together on the next tick */
  private seen: number[] = [];
  private seenTimer: NodeJS.Timeout | undefined;
  /** the save a rebalance started, shared by the groups that rebalance with it */
  private rebalanceSave: Promise<void> | undefined;

  constructor(private readonly d: LimiterStoreDeps) {
    this.chunkBytes = Math.max(1024, d.chunkBytes ?? 512 * 1024);
    // A partition whose event arrives before onAssigned announced it is restored all the same.
    d.pacer.setRestorer((p) => {
      this.seen.push(p);
      this.seenTimer ??= setTimeout(() => {
        this.seenTimer = undefined;
        const ps = this.seen;
        this.seen = [];
        void this.restore(ps);
      }, 5);
    });
  }

  /** Begins periodic saves through this producer. */
  start(producer: Producer): void {
    this.producer = producer;
    this.stopped = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => void this.saveAll().catch(() => undefined), this.d.intervalMs);
    this.timer.unref?.();
  }

  /** A last save of every partition held, then no more. */
  async stop(): Promise<void> {
    if (this.seenTimer) clearTimeout(this.seenTimer);
    this.seenTimer = undefined;
    this.d.pacer.setRestorer(undefined);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.saveAll().catch((err: unknown) => this.d.logger.warn({ err: describeError(err) }, 'limiter store: the last save failed; the next owner starts from the previous one'));
    this.stopped = true;
  }

  /**
   * The member's assignment after a rebalance (partitions of the Currents topic): partitions no
   * longer held are saved and dropped, new ones restored. Resolves once restored; their events
   * wait in the pacer meanwhile.
   */
  async onAssigned(partitions: Iterable<number>): Promise<number> {
    const assigned = new Set(partitions);
    const before = this.owned;
    this.owned = assigned;
    // marked before anything is awaited, so no event of a new partition is decided on fresh counts
    const started = this.d.pacer.beginRestore(assigned);
    const lost = this.d.pacer.heldPartitions().filter((p) => !assigned.has(p) && (before === undefined || before.has(p)));
    if (lost.length > 0) {
      await Promise.all(lost.map((p) => this.write(p, true).catch(() => undefined)));
      for (const p of lost) this.d.pacer.dropPartition(p);
    }
    return this.restore(started);
  }

  /**
   * Restores the counts of these partitions (those the pacer does not already hold) from the topic.
   * A partition without a snapshot, or whose snapshot cannot be read, starts fresh (logged).
   * Returns the number of partitions restored from a snapshot.
   */
  load(partitions: Iterable<number>): Promise<number> {
    return this.restore(this.d.pacer.beginRestore(partitions));
  }

  /** Reads and installs the counts of partitions the pacer marked restoring. */
  private async restore(started: number[]): Promise<number> {
    if (started.length === 0) return 0;
    const t0 = Date.now();
    let records: Map<string, { value: Buffer; headers: IHeaders }>;
    try {
      records = await this.readAll(new Set(started));
    } catch (err) {
      this.d.logger.warn({ partitions: started, err: describeError(err) }, 'limiter store: could not read the saved counts; these partitions start from zero');
      for (const p of started) this.d.pacer.restorePartition(p, undefined);
      return 0;
    }
    let restored = 0;
    for (const p of started) {
      const snap = this.assemble(p, records);
      this.d.pacer.restorePartition(p, snap);
      if (snap) restored++;
    }
    this.d.logger.info({ partitions: started, restored, ms: Date.now() - t0 }, 'limiter store: daily counts restored');
    return restored;
  }

  /** Saves one partition's snapshot (serialised with other saves). */
  save(partition: number): Promise<void> {
    const run = this.saving.then(() => this.write(partition, false));
    this.saving = run.catch(() => undefined);
    return run;
  }

  /**
   * A rebalance starts: saves the partitions this member owns, so whoever is assigned them next
   * reads counts as of now (those it loses are saved again when the assignment arrives). The
   * inbound leg's three groups rebalance together: calls while a save is under way share it.
   */
  onRebalancing(): Promise<void> {
    this.rebalanceSave ??= this.saveAll()
      .catch((err: unknown) => this.d.logger.warn({ err: describeError(err) }, 'limiter store: the save at the start of a rebalance failed; the next owner reads the previous one'))
      .finally(() => (this.rebalanceSave = undefined));
    return this.rebalanceSave;
  }

  /**
   * Saves every partition the pacer holds and this member owns (a partition seen only through a
   * retry topic, owned by another member, is never written: its owner's snapshot wins).
   */
  async saveAll(): Promise<void> {
    if (this.stopped) return;
    await Promise.all(this.d.pacer.heldPartitions().map((p) => this.save(p)));
  }

  private async write(partition: number, lost: boolean): Promise<void> {
    const producer = this.producer;
    if (!producer || (!lost && this.owned !== undefined && !this.owned.has(partition))) return;
    const snap = this.d.pacer.exportPartition(partition);
    if (!snap) return;
    const blob = encodeSnapshot(snap);
    const prev = this.heads.get(partition);
    const slot: 0 | 1 = prev?.slot === 0 ? 1 : 0;
    const gen = this.d.clock.now() * 1024 + randomInt(1024);
    const chunks = Math.max(1, Math.ceil(blob.length / this.chunkBytes));
    const messages: Array<{ key: string; value: Buffer | null }> = [];
    for (let i = 0; i < chunks; i++) {
      const body = blob.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes);
      const rec = Buffer.allocUnsafe(CHUNK_HEADER + body.length);
      rec.writeUInt32BE(Math.floor(gen / 0x100000000), 0);
      rec.writeUInt32BE(gen % 0x100000000, 4);
      rec.writeUInt32BE(i, 8);
      body.copy(rec, CHUNK_HEADER);
      messages.push({ key: chunkKey(partition, slot, i), value: rec });
    }
    // chunks a larger earlier snapshot left in this slot
    const stale = this.staleChunks.get(`${partition}/${slot}`) ?? 0;
    for (let i = chunks; i < stale; i++) messages.push({ key: chunkKey(partition, slot, i), value: null });
    // acks from all in-sync replicas, chunks before the head that names them
    for (const m of messages) await producer.send({ topic: this.d.topic, acks: -1, messages: [m] });
    const head: Head = { v: 1, gen, slot, chunks, bytes: blob.length, savedAtMs: this.d.clock.now() };
    await producer.send({ topic: this.d.topic, acks: -1, messages: [{ key: headKey(partition), value: Buffer.from(JSON.stringify(head)) }] });
    this.heads.set(partition, head);
    this.staleChunks.set(`${partition}/${slot}`, chunks);
  }

  /** per partition and slot, how many chunks the last snapshot there had */
  private readonly staleChunks = new Map<string, number>();

  private assemble(p: number, records: Map<string, { value: Buffer; headers: IHeaders }>): PartitionSnapshot | undefined {
    const headRec = records.get(headKey(p));
    if (!headRec) return undefined;
    const head = parseHead(headRec.value);
    if (!head) {
      this.d.logger.warn({ partition: p }, 'limiter store: unreadable head record; the partition starts from zero');
      return undefined;
    }
    this.heads.set(p, head);
    for (const slot of [0, 1]) {
      let n = 0;
      while (records.has(chunkKey(p, slot, n))) n++;
      this.staleChunks.set(`${p}/${slot}`, n);
    }
    const parts: Buffer[] = [];
    for (let i = 0; i < head.chunks; i++) {
      const rec = records.get(chunkKey(p, head.slot, i))?.value;
      const gen = rec && rec.length >= CHUNK_HEADER ? rec.readUInt32BE(0) * 0x100000000 + rec.readUInt32BE(4) : -1;
      if (!rec || gen !== head.gen || rec.readUInt32BE(8) !== i) {
        this.d.logger.warn({ partition: p, chunk: i }, 'limiter store: a snapshot chunk is missing or of another generation; the partition starts from zero');
        return undefined;
      }
      parts.push(rec.subarray(CHUNK_HEADER));
    }
    try {
      return decodeSnapshot(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
    } catch (err) {
      this.d.logger.warn({ partition: p, err: describeError(err) }, 'limiter store: the snapshot does not decode; the partition starts from zero');
      return undefined;
    }
  }

  /** Reads the topic to its end; keeps the latest value of the records of these partitions. */
  private async readAll(wanted: Set<number>): Promise<Map<string, { value: Buffer; headers: IHeaders }>> {
    const out = new Map<string, { value: Buffer; headers: IHeaders }>();
    const wants = (key: string): boolean => {
      const m = /^limits\/(\d+)(?:\/|$)/.exec(key);
      return m !== null && wanted.has(Number(m[1]));
    };
    await readTopicToEnd({
      kafka: this.d.kafka,
      topic: this.d.topic,
      groupIdPrefix: this.d.groupIdPrefix,
      fetchMaxWaitMs: this.d.fetchMaxWaitMs,
      timeoutMs: this.d.loadTimeoutMs ?? 60_000,
      maxBytes: 64 << 20,
      onMessage: (_partition, m) => {
        const key = m.key?.toString('utf8');
        if (!key || !wants(key)) return;
        // offsets only grow within a partition, and a key always lands on one partition
        if (m.value === null) out.delete(key);
        else out.set(key, { value: m.value, headers: m.headers ?? {} });
      },
    });
    return out;
  }
}
