/**
 * The cohort sync's durable state, in the compacted topic `gateway.cohorts` (TOPIC_COHORTS), keyed
 * so that compaction keeps exactly what a restart needs:
 *
 * | key                              | value |
 * |---|---|
 * | `snap/<sync>/meta`               | JSON: generation, chunk count, members, lastComputed, recent push message ids |
 * | `snap/<sync>/g<0|1>/<n>`         | one chunk of the member set (20,000 members, varint-length keys, deflated) |
 * | `snap/<sync>/d/<seq>`            | JSON: one push delta applied on top of the generation it names |
 * | `req/<sync>`                     | JSON: the export requested and not yet delivered (its request_id), or a tombstone |
 * | `budget/<YYYY-MM>`               | JSON: exports requested that month |
 * | `inbox/<cohort>/<message_id>`    | JSON: a webhook batch stored before its 2xx, tombstoned once applied |
 *
 * A new snapshot is written as a new generation into the other parity's chunk keys, and only then
 * the meta record that names it: a crash halfway leaves the meta naming the previous generation,
 * whose chunks were not touched. A 2,000,000-member snapshot is about a hundred records of some
 * hundreds of kilobytes, within Kafka's message size and the test broker's per-partition retention.
 *
 * The reader keeps the latest record per key itself: compaction is lazy (and the test broker never
 * compacts), as in src/health/health-store.ts.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { Admin, ConfigResourceTypes, Kafka, Producer } from 'kafkajs';

/** ConfigResourceTypes.TOPIC: kafkajs is CommonJS and Node's ESM loader does not see that export by name */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;
import type { Logger } from '../observability/logger.js';
import { describeError } from '../errors.js';
import { readTopicToEnd } from '../kafka/read-to-end.js';
import { MemberSet, applyChange } from './member-set.js';

export const CHUNK_MEMBERS = 20_000;

export interface SnapshotMeta {
  v: 1;
  generation: number;
  chunks: number;
  members: number;
  /** the export this snapshot came from: its cohort's lastComputed / lastMod (ms) */
  lastComputedMs?: number;
  lastModMs?: number;
  cohortName?: string;
  savedAtMs: number;
  /** the partner API was told the cohort's name (partner transport) */
  partnerNamed?: string;
  /** push message ids applied (newest last, bounded), so a repeated one is applied once */
  messageIds: string[];
  /** the last push delta applied on top of this generation */
  deltaSeq: number;
}

export interface PushDelta {
  generation: number;
  seq: number;
  messageId: string;
  adds: string[];
  removes: string[];
}

export interface PendingRequest {
  requestId: string;
  cohortId: string;
  requestedAtMs: number;
  propKeys: string[];
  /** the cohort's lastComputed and lastMod when it was requested: what the export reflects */
  lastComputedMs: number;
  lastModMs?: number;
}

export interface StoredPush {
  cohortId: string;
  messageId: string;
  inCohort: boolean;
  computedTime?: string;
  receivedAtMs: number;
  users: Array<{ user_id?: string; device_id?: string; amplitude_id?: string; properties?: Record<string, string | number | boolean | null> }>;
}

/** recent push message ids kept per sync */
export const MESSAGE_ID_MEMORY = 10_000;

export interface CohortStoreDeps {
  kafka: Kafka;
  producer: Producer;
  topic: string;
  logger: Logger;
  fetchMaxWaitMs: number;
  groupIdPrefix: string;
  loadTimeoutMs?: number;
}

function json<T>(v: Buffer): T | undefined {
  try {
    return JSON.parse(v.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

export class CohortStore {
  /** latest value per key, as loaded and as written since */
  private readonly records = new Map<string, Buffer>();
  private readonly snapshots = new Map<string, { meta: SnapshotMeta; members: MemberSet; applied: string[] }>();

  constructor(private readonly d: CohortStoreDeps) {}

  /** Reads the topic to its end, keeping the latest record per key (a null value deletes). */
  async load(): Promise<{ records: number; ms: number }> {
    const started = Date.now();
    const latest = new Map<string, { partition: number; offset: bigint; value: Buffer | null }>();
    const read = await readTopicToEnd({
      kafka: this.d.kafka,
      topic: this.d.topic,
      groupIdPrefix: this.d.groupIdPrefix,
      fetchMaxWaitMs: this.d.fetchMaxWaitMs,
      timeoutMs: this.d.loadTimeoutMs ?? 120_000,
      maxBytes: 64 << 20,
      errorPrefix: 'cohort store: ',
      checkTopic: (admin) => this.checkCompacted(admin),
      onMessage: (partition, m) => {
        const key = m.key?.toString('utf8');
        if (!key) return;
        const offset = BigInt(m.offset);
        const prev = latest.get(key);
        if (prev === undefined || prev.partition !== partition || offset > prev.offset) latest.set(key, { partition, offset, value: m.value });
      },
    });
    if (!read.exists) {
      this.d.logger.warn({ topic: this.d.topic }, `cohort store: ${this.d.topic} does not exist yet; create it with cleanup.policy=compact (a topic auto-created with time retention would lose the snapshots after its retention)`);
      return { records: 0, ms: Date.now() - started };
    }
    if (read.partitions === 0) return { records: 0, ms: Date.now() - started };
    for (const [k, v] of latest) if (v.value !== null) this.records.set(k, v.value);
    return { records: this.records.size, ms: Date.now() - started };
  }

  /** warns when the topic deletes by time: the snapshots must outlive any retention */
  private async checkCompacted(admin: Admin): Promise<void> {
    try {
      const res = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: TOPIC_RESOURCE, name: this.d.topic, configNames: ['cleanup.policy'] }] });
      const policy = res.resources[0]?.configEntries.find((e) => e.configName === 'cleanup.policy')?.configValue;
      if (policy !== undefined && !policy.split(',').includes('compact')) {
        this.d.logger.error({ topic: this.d.topic, policy }, `cohort store: ${this.d.topic} has cleanup.policy=${policy}; set it to compact, or snapshots and the download count are lost after the retention and whole cohorts are sent again`);
      }
    } catch {
      // brokers that do not answer DescribeConfigs (the test broker): nothing to say
    }
  }

  private async put(messages: Array<{ key: string; value: Buffer | null }>): Promise<void> {
    if (messages.length === 0) return;
    // acks from all in-sync replicas: a record only the leader had could vanish in a failover
    for (let i = 0; i < messages.length; i += 50) {
      await this.d.producer.send({ topic: this.d.topic, acks: -1, messages: messages.slice(i, i + 50) });
    }
    for (const m of messages) {
      if (m.value === null) this.records.delete(m.key);
      else this.records.set(m.key, m.value);
    }
  }

  private getJson<T>(key: string): T | undefined {
    const v = this.records.get(key);
    return v === undefined ? undefined : json<T>(v);
  }

  // ---- snapshots -------------------------------------------------------------------------------

  /** The membership last delivered for a sync (built once from the chunks and deltas, then kept). */
  snapshot(sync: string): { meta: SnapshotMeta; members: MemberSet; applied: string[] } | undefined {
    const cached = this.snapshots.get(sync);
    if (cached) return cached;
    const meta = this.getJson<SnapshotMeta>(`snap/${sync}/meta`);
    if (!meta || meta.v !== 1) return undefined;
    const parts: Buffer[] = [];
    for (let n = 0; n < meta.chunks; n++) {
      const rec = this.records.get(`snap/${sync}/g${meta.generation % 2}/${n}`);
      if (!rec || rec.length < 8 || rec.readUInt32BE(0) !== meta.generation || rec.readUInt32BE(4) !== n) {
        this.d.logger.error({ sync, generation: meta.generation, chunk: n }, 'cohort store: a snapshot chunk is missing; the sync starts from an empty snapshot (the next run re-sends the whole cohort)');
        return undefined;
      }
      parts.push(inflateRawSync(rec.subarray(8)));
    }
    // the chunks are consecutive slices of one set's packed members, in order
    let members: MemberSet;
    try {
      members = MemberSet.fromPacked(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    } catch (err) {
      this.d.logger.error({ sync, err: describeError(err) }, 'cohort store: the snapshot does not decode; the sync starts from an empty snapshot (the next run re-sends the whole cohort)');
      return undefined;
    }
    // push deltas applied after this generation was written, in order
    const deltas: PushDelta[] = [];
    for (const [k, v] of this.records) {
      if (!k.startsWith(`snap/${sync}/d/`)) continue;
      const d = json<PushDelta>(v);
      if (d && d.generation === meta.generation && d.seq <= meta.deltaSeq) deltas.push(d);
    }
    deltas.sort((a, b2) => a.seq - b2.seq);
    for (const d of deltas) members = applyChange(members, d.adds, d.removes);
    const snap = { meta, members, applied: [...meta.messageIds, ...deltas.map((d) => d.messageId)] };
    this.snapshots.set(sync, snap);
    return snap;
  }

  /** Writes a whole new generation, then the meta record that names it; old push deltas are dropped. */
  async saveSnapshot(sync: string, members: MemberSet, meta: Omit<SnapshotMeta, 'v' | 'generation' | 'chunks' | 'members' | 'deltaSeq'>): Promise<SnapshotMeta> {
    const prev = this.snapshot(sync)?.meta ?? this.getJson<SnapshotMeta>(`snap/${sync}/meta`);
    const generation = (prev?.generation ?? 0) + 1;
    const bounds = members.splitOffsets(CHUNK_MEMBERS);
    const chunks = bounds.length - 1;
    const parity = generation % 2;
    const messages: Array<{ key: string; value: Buffer | null }> = [];
    for (let n = 0; n < chunks; n++) {
      const body = deflateRawSync(members.data.subarray(bounds[n]!, bounds[n + 1]!), { level: 1 });
      const head = Buffer.alloc(8);
      head.writeUInt32BE(generation, 0);
      head.writeUInt32BE(n, 4);
      messages.push({ key: `snap/${sync}/g${parity}/${n}`, value: Buffer.concat([head, body]) });
    }
    // chunks of this parity beyond the new count belong to an older generation: drop them
    for (const k of this.records.keys()) {
      const m = new RegExp(`^snap/${escapeRe(sync)}/g${parity}/(\\d+)$`).exec(k);
      if (m && Number(m[1]) >= chunks) messages.push({ key: k, value: null });
    }
    await this.put(messages);
    // computed fields last: a caller folding deltas passes the previous meta along
    const full: SnapshotMeta = { ...meta, v: 1, generation, chunks, members: members.size, deltaSeq: 0, messageIds: meta.messageIds.slice(-MESSAGE_ID_MEMORY) };
    await this.put([{ key: `snap/${sync}/meta`, value: Buffer.from(JSON.stringify(full)) }]);
    // deltas of the previous generation are folded into this one
    const stale = [...this.records.keys()].filter((k) => k.startsWith(`snap/${sync}/d/`)).map((key) => ({ key, value: null }));
    await this.put(stale).catch((err: unknown) => this.d.logger.warn({ sync, err: describeError(err) }, 'cohort store: old push deltas not dropped (harmless: they name an older generation)'));
    this.snapshots.set(sync, { meta: full, members, applied: [...full.messageIds] });
    return full;
  }

  /**
   * Records a push delta Braze accepted on top of the current generation (a small record instead
   * of a whole snapshot per webhook batch); every `foldEvery` deltas the caller writes a full
   * snapshot instead.
   */
  async saveDelta(sync: string, messageId: string, adds: string[], removes: string[], members: MemberSet): Promise<SnapshotMeta> {
    const snap = this.snapshot(sync);
    if (!snap) throw new Error(`cohort store: no snapshot for ${sync} to apply a delta to`);
    const seq = snap.meta.deltaSeq + 1;
    const delta: PushDelta = { generation: snap.meta.generation, seq, messageId, adds, removes };
    await this.put([{ key: `snap/${sync}/d/${seq}`, value: Buffer.from(JSON.stringify(delta)) }]);
    // the meta record names the last delta; the delta records carry their own message ids
    const meta: SnapshotMeta = { ...snap.meta, deltaSeq: seq, members: members.size };
    await this.put([{ key: `snap/${sync}/meta`, value: Buffer.from(JSON.stringify(meta)) }]);
    this.snapshots.set(sync, { meta, members, applied: [...snap.applied, messageId].slice(-MESSAGE_ID_MEMORY) });
    return meta;
  }

  /** push message ids applied to this sync's snapshot, oldest first (at most MESSAGE_ID_MEMORY) */
  appliedIds(sync: string): string[] {
    return this.snapshot(sync)?.applied.slice(-MESSAGE_ID_MEMORY) ?? [];
  }

  wasApplied(sync: string, messageId: string): boolean {
    return this.snapshot(sync)?.applied.includes(messageId) ?? false;
  }

  // ---- pending export, budget ------------------------------------------------------------------

  pendingRequest(sync: string): PendingRequest | undefined {
    return this.getJson<PendingRequest>(`req/${sync}`);
  }

  async setPendingRequest(sync: string, r: PendingRequest | undefined): Promise<void> {
    await this.put([{ key: `req/${sync}`, value: r ? Buffer.from(JSON.stringify(r)) : null }]);
  }

  budgetUsed(month: string): number {
    return this.getJson<{ used: number }>(`budget/${month}`)?.used ?? 0;
  }

  async setBudgetUsed(month: string, used: number): Promise<void> {
    await this.put([{ key: `budget/${month}`, value: Buffer.from(JSON.stringify({ used })) }]);
  }

  // ---- webhook inbox ---------------------------------------------------------------------------

  /** Stores a webhook batch (acks from all in-sync replicas) before it is answered. */
  async storePush(p: StoredPush): Promise<void> {
    await this.put([{ key: inboxKey(p.cohortId, p.messageId), value: Buffer.from(JSON.stringify(p)) }]);
  }

  async dropPush(cohortId: string, messageId: string): Promise<void> {
    await this.put([{ key: inboxKey(cohortId, messageId), value: null }]);
  }

  hasPush(cohortId: string, messageId: string): boolean {
    return this.records.has(inboxKey(cohortId, messageId));
  }

  /** stored batches not yet applied, oldest first */
  storedPushes(): StoredPush[] {
    const out: StoredPush[] = [];
    for (const [k, v] of this.records) {
      if (!k.startsWith('inbox/')) continue;
      const p = json<StoredPush>(v);
      if (p) out.push(p);
    }
    return out.sort((a, b) => a.receivedAtMs - b.receivedAtMs);
  }

  // ---- generic small records (traits) ------------------------------------------------------------

  getRecord(key: string): Buffer | undefined {
    return this.records.get(key);
  }
}

function inboxKey(cohortId: string, messageId: string): string {
  return `inbox/${cohortId}/${messageId}`;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
