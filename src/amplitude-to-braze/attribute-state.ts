/**
 * What the outbound leg last wrote to each Braze user's attributes, so that an attribute is sent
 * only when its value changed, never from an event older than the one it was last sent from, and
 * `$setOnce` is applied once per user. Braze bills each attribute write as a data point whether
 * or not the value changed (reference/braze-users-track.md §9), and Amplitude's export shape
 * carries the whole user-property snapshot on every event.
 *
 * Memory is bounded: per user, one compact record (a hash of each attribute's name and value and
 * the event time it came from, six doubles per attribute in one array per user), users kept in (approximate, second-chance) LRU order
 * up to `maxUsers`. Budget: about 250 bytes per user plus 48 bytes per attribute (measured: 100,000
 * users with 10 attributes each take 72.5 MB of heap), so the default 100,000 users stay under
 * 100 MB for typical profiles. A user evicted (or never seen since a
 * restart without the store) only costs one re-send of their current values.
 *
 * Two layers per attribute:
 *  - *latest*: what was sent or is in flight (optimistic): every decision compares against it, so
 *    a user's second event in the same batch does not re-send what the first one carries;
 *  - *confirmed*: what Braze accepted. Only this layer is persisted (`encodeUser`, `snapshot`), so a
 *    restart that re-reads messages after the last committed offset sends their attributes again
 *    rather than assuming they arrived.
 * `confirm(write)` moves a write to the confirmed layer once Braze accepted its attributes object;
 * `release(write)` undoes it in the latest layer when the object was refused (dead-lettered), so
 * the next event carrying the value sends it again.
 *
 * Hashes are 53-bit (cyrb53): two different values share a hash with a chance of about 1 in 2^53;
 * when they do, the change is not sent. Attribute names are hashed too, so no key string is kept.
 */
import type { BrazeAttributes, BrazeAttributeValue } from './braze-types.js';

/** One attributes object's effect on the state, handed back to `confirm` or `release`. */
export interface AttributeWrite {
  readonly userKey: string;
  /** flat triples: name hash, value hash, event time; value hash UNKNOWN (-1): an operation (`inc`, `add`, `remove`) left the value unknown */
  readonly entries: number[];
  /** the object carried `_update_existing_only: false` to create the (alias-only) profile */
  readonly creates: boolean;
}

export interface AttributeFilterResult {
  /**
   * What to send: the object given when nothing was left out, else a new object with the
   * identifier, the flags and the attributes kept (a new object rather than deletes, which would
   * put the given one in V8's slow dictionary mode)
   */
  attributes: BrazeAttributes;
  /** attributes left to send */
  kept: number;
  /** attribute writes not sent: value unchanged since last sent */
  unchanged: number;
  /** not sent: the event is older than the one the attribute was last sent from */
  stale: number;
  /** not sent: a `$setOnce` for an attribute this user already has */
  setOnce: number;
  write: AttributeWrite | undefined;
}

export interface AttributeStateStats {
  users: number;
  evicted: number;
  sent: number;
  unchanged: number;
  stale: number;
  setOnce: number;
}

export interface AttributeStateOptions {
  /** users remembered (LRU); default 100,000 */
  maxUsers?: number;
}

/** Keys of an attributes object that are not attributes. */
const NON_ATTRIBUTE_KEYS: ReadonlySet<string> = new Set([
  'external_id',
  'user_alias',
  'braze_id',
  '_update_existing_only',
  '_merge_objects',
  'push_token_import',
]);

// Entry layout in UserRecord.slots: [nameHash, latestHash, latestTime, confirmedHash, confirmedTime, flags]
const STRIDE = 6;
const F_ONCE = 1;
const NONE = Number.NaN;
/**
 * The value hash of an attribute an operation (`inc`, `add`, `remove`) wrote last: its value is
 * not known here, but the time it was written from is, so an older event's plain value is still
 * refused while any newer one (even equal to the last known value) is sent. Hashes are 0..2^53-1,
 * so -1 never equals one; it is stored like any hash, so the record format stays as it was (a
 * record written before this existed simply has no entry for such an attribute).
 */
const UNKNOWN = -1;

class UserRecord {
  /** STRIDE numbers per attribute; a plain array of doubles (V8 keeps them unboxed, in the heap) */
  slots: number[] = [];
  count = 0;
  /** Braze accepted an object that creates this profile */
  created = false;
  /** confirmed layer changed since last taken for persistence */
  dirty = false;
  /** used since the eviction hand last passed (second-chance LRU); a new user starts unused, so one-off users go first */
  used = false;

  find(nameHash: number): number {
    const s = this.slots;
    for (let at = 0, end = this.count * STRIDE; at < end; at += STRIDE) if (s[at] === nameHash) return at;
    return -1;
  }

  add(nameHash: number): number {
    const at = this.count * STRIDE;
    this.count++;
    this.slots.push(nameHash, NONE, NONE, NONE, NONE, 0);
    return at;
  }

  remove(at: number): void {
    const last = (this.count - 1) * STRIDE;
    const s = this.slots;
    for (let i = 0; i < STRIDE; i++) s[at + i] = s[last + i]!;
    s.length = last;
    this.count--;
  }
}

export class AttributeState {
  private readonly users = new Map<string, UserRecord>();
  private readonly maxUsers: number;
  readonly stats: AttributeStateStats = { users: 0, evicted: 0, sent: 0, unchanged: 0, stale: 0, setOnce: 0 };

  constructor(opts: AttributeStateOptions = {}) {
    this.maxUsers = Math.max(1, opts.maxUsers ?? 100_000);
  }

  get size(): number {
    return this.users.size;
  }

  /** True unless Braze has accepted an object that creates this user's profile. */
  needsCreation(userKey: string): boolean {
    return !(this.users.get(userKey)?.created ?? false);
  }

  /**
   * Leaves out of `attrs` every attribute that need not be sent (see `attributes` of the result),
   * and records the rest as sent (in the latest layer). `setOnceKeys`: attributes that came from `$setOnce` (sent only when this
   * user has no value recorded for them). Atomic operations (`inc`, `add`, `remove`) are always
   * sent and make the stored value unknown but keep its time, so the next plain value is sent
   * again unless its event is older than the operation's.
   */
  filter(userKey: string, attrs: BrazeAttributes, eventTimeMs: number, setOnceKeys?: ReadonlySet<string>, creates = false): AttributeFilterResult {
    const rec = this.touch(userKey, true)!;
    const entries: number[] = [];
    let keptKeys: string[] | undefined;
    let dropped = false;
    let kept = 0;
    let unchanged = 0;
    let stale = 0;
    let setOnce = 0;
    for (const key in attrs) {
      if (!isAttributeKey(key, attrs)) continue;
      const value = attrs[key];
      if (value === undefined) continue;
      const nameHash = nameHashOf(key);
      let at = rec.find(nameHash);
      if (setOnceKeys?.has(key)) {
        if (at >= 0) {
          dropped = true;
          setOnce++;
          continue;
        }
        at = rec.add(nameHash);
        const h = hashValue(value);
        const slots = rec.slots;
        slots[at + 1] = h;
        slots[at + 2] = eventTimeMs;
        slots[at + 5] = F_ONCE;
        entries.push(nameHash, h, eventTimeMs);
        (keptKeys ??= []).push(key);
        kept++;
        continue;
      }
      if (isOperation(value)) {
        // Not a value: always sent (an increment from an older event still happened). Afterwards
        // the value is unknown, but the time stays (the later of the two), so that an event older
        // than this one cannot write a plain value over it.
        if (at < 0) at = rec.add(nameHash);
        const slots = rec.slots;
        const lt = slots[at + 2]!;
        const t = Number.isNaN(lt) || eventTimeMs > lt ? eventTimeMs : lt;
        slots[at + 1] = UNKNOWN;
        slots[at + 2] = t;
        entries.push(nameHash, UNKNOWN, t);
        (keptKeys ??= []).push(key);
        kept++;
        continue;
      }
      const h = hashValue(value);
      if (at >= 0) {
        const slots = rec.slots;
        const lt = slots[at + 2]!;
        if (lt > eventTimeMs) {
          dropped = true;
          stale++;
          continue;
        }
        if (slots[at + 1] === h) {
          // Same value, from a newer event: remember the newer time, so an older event in between is stale.
          slots[at + 2] = eventTimeMs;
          dropped = true;
          unchanged++;
          continue;
        }
      } else {
        at = rec.add(nameHash);
      }
      const slots = rec.slots;
      slots[at + 1] = h;
      slots[at + 2] = eventTimeMs;
      entries.push(nameHash, h, eventTimeMs);
      (keptKeys ??= []).push(key);
      kept++;
    }
    this.stats.sent += kept;
    this.stats.unchanged += unchanged;
    this.stats.stale += stale;
    this.stats.setOnce += setOnce;
    const write = entries.length > 0 || creates ? { userKey, entries, creates } : undefined;
    let attributes = attrs;
    if (dropped) {
      attributes = {} as BrazeAttributes;
      for (const key in attrs) if (!isAttributeKey(key, attrs)) attributes[key] = attrs[key];
      if (keptKeys !== undefined) for (const key of keptKeys) attributes[key] = attrs[key];
    }
    return { attributes, kept, unchanged, stale, setOnce, write };
  }

  /** Braze accepted the attributes object `write` came from. */
  confirm(write: AttributeWrite | undefined): void {
    if (write === undefined) return;
    // Not a use: the eviction order follows the events, not the answers.
    const rec = this.users.get(write.userKey) ?? this.touch(write.userKey, true)!;
    if (write.creates) rec.created = true;
    const e = write.entries;
    for (let i = 0; i < e.length; i += 3) {
      const nameHash = e[i]!;
      const h = e[i + 1]!;
      const t = e[i + 2]!;
      let at = rec.find(nameHash);
      if (at < 0) {
        // Evicted or restored meanwhile: the write still happened.
        at = rec.add(nameHash);
        rec.slots[at + 1] = h;
        rec.slots[at + 2] = t;
      }
      const slots = rec.slots;
      const ct = slots[at + 4]!;
      if (Number.isNaN(ct) || t >= ct) {
        slots[at + 3] = h;
        slots[at + 4] = t;
      }
    }
    rec.dirty = true;
  }

  /**
   * The leg's one call per finished item: `confirm` when Braze accepted the item's attributes
   * object, `release` when it refused it (dead-lettered, alone or with the whole item).
   */
  settle(write: AttributeWrite | undefined, attributesAccepted: boolean): void {
    if (attributesAccepted) this.confirm(write);
    else this.release(write);
  }

  /** Braze refused the attributes object `write` came from: what it carried counts as never sent. */
  release(write: AttributeWrite | undefined): void {
    if (write === undefined) return;
    const rec = this.users.get(write.userKey);
    if (rec === undefined) return;
    const e = write.entries;
    for (let i = 0; i < e.length; i += 3) {
      const at = rec.find(e[i]!);
      if (at < 0) continue;
      const slots = rec.slots;
      // Only when the attribute still holds the refused value (a later event may have moved its
      // clock without sending anything); a different value recorded since stays.
      if (slots[at + 1] !== e[i + 1]) continue;
      // Every operation has the same (unknown) hash: the time tells a later one, still in flight, apart.
      if (e[i + 1] === UNKNOWN && slots[at + 2] !== e[i + 2]) continue;
      if (Number.isNaN(slots[at + 3]!)) {
        rec.remove(at);
      } else {
        slots[at + 1] = slots[at + 3]!;
        slots[at + 2] = slots[at + 4]!;
      }
    }
  }

  /** Forgets everything (for example on a partition rebalance without a store to reload from). */
  clear(): void {
    this.users.clear();
    this.stats.users = 0;
  }

  forget(userKey: string): void {
    this.users.delete(userKey);
    this.stats.users = this.users.size;
  }

  // -------------------------------------------------------------------------------------------
  // Persistence: the confirmed layer only.

  /** The confirmed state of one user, or undefined when nothing about them is confirmed. */
  encodeUser(userKey: string): Buffer | undefined {
    const rec = this.users.get(userKey);
    return rec === undefined ? undefined : encodeRecord(rec);
  }

  /** Replaces a user's state with a stored one (both layers set to it). A null value forgets the user. */
  restoreUser(userKey: string, value: Buffer | null): boolean {
    if (value === null) {
      this.forget(userKey);
      return true;
    }
    const rec = decodeRecord(value);
    if (rec === undefined) return false;
    this.users.delete(userKey);
    this.users.set(userKey, rec);
    this.evict();
    this.stats.users = this.users.size;
    return true;
  }

  /** Users whose confirmed state changed since the last call, with their encoded state (a compacted topic's records). */
  takeDirty(): Array<{ key: string; value: Buffer | null }> {
    const out: Array<{ key: string; value: Buffer | null }> = [];
    for (const [key, rec] of this.users) {
      if (!rec.dirty) continue;
      rec.dirty = false;
      out.push({ key, value: encodeRecord(rec) ?? null });
    }
    return out;
  }

  /** Marks a user's confirmed state as not yet persisted (after a failed write). */
  markDirty(userKey: string): void {
    const rec = this.users.get(userKey);
    if (rec !== undefined) rec.dirty = true;
  }

  /** Every user's confirmed state in one buffer: `[u16 key length][key][u32 record length][record]`... */
  snapshot(): Buffer {
    const parts: Buffer[] = [];
    for (const [key, rec] of this.users) {
      const value = encodeRecord(rec);
      if (value === undefined) continue;
      const k = Buffer.from(key, 'utf8');
      const head = Buffer.alloc(6);
      head.writeUInt16BE(k.length, 0);
      head.writeUInt32BE(value.length, 2);
      parts.push(head.subarray(0, 2), k, head.subarray(2, 6), value);
    }
    return Buffer.concat(parts);
  }

  /** Loads a `snapshot()`; returns how many users were restored. Throws on a malformed buffer. */
  restore(buf: Buffer): number {
    let at = 0;
    let n = 0;
    while (at < buf.length) {
      if (at + 2 > buf.length) throw new Error('attribute state snapshot: truncated key length');
      const kl = buf.readUInt16BE(at);
      at += 2;
      const key = buf.toString('utf8', at, at + kl);
      at += kl;
      if (at + 4 > buf.length) throw new Error('attribute state snapshot: truncated record length');
      const vl = buf.readUInt32BE(at);
      at += 4;
      if (at + vl > buf.length) throw new Error('attribute state snapshot: truncated record');
      if (!this.restoreUser(key, buf.subarray(at, at + vl))) throw new Error(`attribute state snapshot: bad record for ${key}`);
      at += vl;
      n++;
    }
    return n;
  }

  private touch(userKey: string, create: boolean): UserRecord | undefined {
    let rec = this.users.get(userKey);
    if (rec !== undefined) {
      // Second chance rather than moving the entry on every use: a flag here, the move at eviction.
      rec.used = true;
      return rec;
    }
    if (!create) return undefined;
    rec = new UserRecord();
    // Room first, so the new user is never the one evicted.
    this.evict(this.maxUsers - 1);
    this.users.set(userKey, rec);
    this.stats.users = this.users.size;
    return rec;
  }

  /**
   * Map order is insertion order: the oldest first. A user used since the hand last passed gets a
   * second chance (moved to the end, flag cleared); the first one not used is evicted. An
   * approximation of LRU (CLOCK) that costs nothing per use.
   */
  private evict(max = this.maxUsers): void {
    while (this.users.size > max) {
      let evicted = false;
      for (const [key, rec] of this.users) {
        if (rec.used) {
          rec.used = false;
          this.users.delete(key);
          this.users.set(key, rec);
          continue;
        }
        this.users.delete(key);
        this.stats.evicted++;
        evicted = true;
        break;
      }
      if (!evicted) return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Record encoding (format 1): u8 version, u8 flags (1: created), u16 count, then per attribute
// f64 name hash, f64 value hash (-1: written by an operation, value unknown), f64 event time,
// u8 flags (1: set once). Only confirmed values.

const RECORD_VERSION = 1;
const ENTRY_BYTES = 25;

function encodeRecord(rec: UserRecord): Buffer | undefined {
  let n = 0;
  const s = rec.slots;
  for (let i = 0, at = 0; i < rec.count; i++, at += STRIDE) if (!Number.isNaN(s[at + 3]!)) n++;
  if (n === 0 && !rec.created) return undefined;
  const buf = Buffer.alloc(4 + n * ENTRY_BYTES);
  buf.writeUInt8(RECORD_VERSION, 0);
  buf.writeUInt8(rec.created ? 1 : 0, 1);
  buf.writeUInt16BE(Math.min(n, 0xffff), 2);
  let o = 4;
  for (let i = 0, at = 0; i < rec.count && o < buf.length; i++, at += STRIDE) {
    if (Number.isNaN(s[at + 3]!)) continue;
    buf.writeDoubleBE(s[at]!, o);
    buf.writeDoubleBE(s[at + 3]!, o + 8);
    buf.writeDoubleBE(s[at + 4]!, o + 16);
    buf.writeUInt8(s[at + 5]!, o + 24);
    o += ENTRY_BYTES;
  }
  return buf;
}

function decodeRecord(buf: Buffer): UserRecord | undefined {
  if (buf.length < 4 || buf.readUInt8(0) !== RECORD_VERSION) return undefined;
  const n = buf.readUInt16BE(2);
  if (buf.length !== 4 + n * ENTRY_BYTES) return undefined;
  const rec = new UserRecord();
  rec.created = (buf.readUInt8(1) & 1) === 1;
  for (let i = 0, o = 4; i < n; i++, o += ENTRY_BYTES) {
    const at = rec.add(buf.readDoubleBE(o));
    const h = buf.readDoubleBE(o + 8);
    const t = buf.readDoubleBE(o + 16);
    const s = rec.slots;
    s[at + 1] = h;
    s[at + 2] = t;
    s[at + 3] = h;
    s[at + 4] = t;
    s[at + 5] = buf.readUInt8(o + 24);
  }
  return rec;
}

// ---------------------------------------------------------------------------------------------
// Hashing

/** Attribute names repeat on every event: their hashes are kept (up to 10,000 names, then started afresh). */
const nameHashes = new Map<string, number>();

function nameHashOf(name: string): number {
  let h = nameHashes.get(name);
  if (h === undefined) {
    if (nameHashes.size >= 10_000) nameHashes.clear();
    h = cyrb53(name, 0);
    nameHashes.set(name, h);
  }
  return h;
}

/** Identifier and flag keys are not attributes; neither is `email` when it is the identifier. */
function isAttributeKey(key: string, attrs: BrazeAttributes): boolean {
  if (NON_ATTRIBUTE_KEYS.has(key)) return false;
  return !(key === 'email' && attrs.external_id === undefined && attrs.user_alias === undefined && attrs.braze_id === undefined);
}

function isOperation(v: BrazeAttributeValue): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  let n = 0;
  for (const k in o) {
    if (k !== 'inc' && k !== 'add' && k !== 'remove') return false;
    n++;
  }
  return n === 1;
}

/** A 53-bit hash of a value; the type is part of it, so `1` and `"1"` differ. */
export function hashValue(v: BrazeAttributeValue): number {
  switch (typeof v) {
    case 'string':
      return cyrb53(v, 1);
    case 'number':
      return cyrb53(String(v), 2);
    case 'boolean':
      return v ? 3 : 4;
  }
  if (v === null) return 5;
  return cyrb53(JSON.stringify(v), 6);
}

/** cyrb53 (public domain, bryc): a fast 53-bit string hash. */
export function cyrb53(str: string, seed: number): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < str.length; i++) {
    const ch = str.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
