/**
 * A cohort's membership as the Braze identifiers it was delivered under, in a compact form that
 * holds 2,000,000 members in a few tens of megabytes and diffs two of them in one linear pass.
 *
 * Each member is its identifier key (see cohort-identifiers.ts: `e:<external_id>`,
 * `a:<label>\u0000<name>`, ...), stored as UTF-8 in one byte buffer with an offset table. The
 * order is a sort key per member in a Float64Array: a 31-bit hash of the key times 2^22 plus the
 * member's position in the buffer, so a native typed-array sort (no comparator, no objects) puts
 * the members in hash order and still says where each one's bytes are. Two sets are diffed by
 * walking both in hash order; members whose hashes are equal are told apart by their bytes, so the
 * result is exact, collisions included.
 *
 * Keying by the delivered identifier rather than by amplitude_id is what makes pull and push share
 * one snapshot (the webhook carries user ids, not amplitude ids) and makes an identification fall
 * out of the diff: a member seen under `a:amplitude_device_id\0dev-1` last time and under
 * `e:u-1` now is one add and one remove, exactly what Braze needs.
 */

/** members per set: the position must fit the sort key's low 22 bits */
export const MAX_MEMBERS = 1 << 22;
const POS = 2 ** 22;

/** FNV-1a over the UTF-8 bytes, folded to 31 bits. */
function hashBytes(b: Uint8Array, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) {
    h ^= b[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 1) & 0x7fffffff;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytesEqual(a: Uint8Array, af: number, at: number, b: Uint8Array, bf: number, bt: number): boolean {
  if (at - af !== bt - bf) return false;
  for (let i = 0; i < at - af; i++) if (a[af + i] !== b[bf + i]) return false;
  return true;
}

export class MemberSet {
  /** use MemberSetBuilder, MemberSet.of or MemberSet.fromParts: `order` must be finish()'s output */
  constructor(
    /** UTF-8 bytes of every member key, back to back */
    readonly bytes: Uint8Array,
    /** member i's bytes are bytes[offsets[i] .. offsets[i+1]) */
    readonly offsets: Uint32Array,
    /** hash * 2^22 + position, ascending */
    readonly order: Float64Array,
  ) {}

  static empty(): MemberSet {
    return new MemberSet(new Uint8Array(0), new Uint32Array(1), new Float64Array(0));
  }

  /** from raw parts (decoding a snapshot): keys in any order, duplicates dropped */
  static fromParts(bytes: Uint8Array, offsets: Uint32Array): MemberSet {
    return finish(bytes, offsets, offsets.length - 1);
  }

  static of(keys: Iterable<string>): MemberSet {
    const b = new MemberSetBuilder();
    for (const k of keys) b.add(k);
    return b.build();
  }

  get size(): number {
    return this.order.length;
  }

  /** the key of the member at sorted index i */
  keyAt(i: number): string {
    const p = this.order[i]! % POS;
    return decoder.decode(this.bytes.subarray(this.offsets[p]!, this.offsets[p + 1]!));
  }

  *keys(): IterableIterator<string> {
    for (let i = 0; i < this.order.length; i++) yield this.keyAt(i);
  }

  has(key: string): boolean {
    const kb = encoder.encode(key);
    const h = hashBytes(kb, 0, kb.length);
    // first index whose hash is >= h
    let lo = 0;
    let hi = this.order.length;
    const target = h * POS;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.order[mid]! < target) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.order.length; i++) {
      const v = this.order[i]!;
      if (Math.floor(v / POS) !== h) break;
      const p = v % POS;
      if (bytesEqual(this.bytes, this.offsets[p]!, this.offsets[p + 1]!, kb, 0, kb.length)) return true;
    }
    return false;
  }

  /** bytes this set holds (for the memory figures) */
  get byteSize(): number {
    return this.bytes.byteLength + this.offsets.byteLength + this.order.byteLength;
  }
}

/** Collects member keys (any order, duplicates allowed) and builds a MemberSet. */
export class MemberSetBuilder {
  private bytes = new Uint8Array(1 << 16);
  private offsets = new Uint32Array(1 << 12);
  private n = 0;
  private used = 0;

  get count(): number {
    return this.n;
  }

  add(key: string): void {
    if (this.n + 1 >= MAX_MEMBERS) throw new Error(`a cohort snapshot holds at most ${MAX_MEMBERS - 1} members`);
    // worst case 3 bytes per UTF-16 unit
    const need = this.used + key.length * 3;
    if (need > this.bytes.length) {
      const next = new Uint8Array(Math.max(need, this.bytes.length * 2));
      next.set(this.bytes.subarray(0, this.used));
      this.bytes = next;
    }
    const { written } = encoder.encodeInto(key, this.bytes.subarray(this.used));
    this.addRaw(written);
  }

  /** adds the member whose bytes are `src[from..to)` */
  addBytes(src: Uint8Array, from: number, to: number): void {
    if (this.n + 1 >= MAX_MEMBERS) throw new Error(`a cohort snapshot holds at most ${MAX_MEMBERS - 1} members`);
    const len = to - from;
    if (this.used + len > this.bytes.length) {
      const next = new Uint8Array(Math.max(this.used + len, this.bytes.length * 2));
      next.set(this.bytes.subarray(0, this.used));
      this.bytes = next;
    }
    this.bytes.set(src.subarray(from, to), this.used);
    this.addRaw(len);
  }

  private addRaw(len: number): void {
    if (this.n + 2 > this.offsets.length) {
      const next = new Uint32Array(this.offsets.length * 2);
      next.set(this.offsets);
      this.offsets = next;
    }
    this.offsets[this.n] = this.used;
    this.used += len;
    this.n++;
    this.offsets[this.n] = this.used;
  }

  build(): MemberSet {
    const bytes = this.bytes.slice(0, this.used);
    const offsets = this.offsets.slice(0, this.n + 1);
    this.bytes = new Uint8Array(0);
    this.offsets = new Uint32Array(1);
    this.n = 0;
    this.used = 0;
    return finish(bytes, offsets, offsets.length - 1);
  }
}

const make = (bytes: Uint8Array, offsets: Uint32Array, order: Float64Array): MemberSet => new MemberSet(bytes, offsets, order);

function finish(bytes: Uint8Array, offsets: Uint32Array, n: number): MemberSet {
  const order = new Float64Array(n);
  for (let i = 0; i < n; i++) order[i] = hashBytes(bytes, offsets[i]!, offsets[i + 1]!) * POS + i;
  order.sort();
  // drop duplicates: equal keys have equal hashes, so they sit in one run of equal hashes
  let w = 0;
  for (let i = 0; i < n; i++) {
    const v = order[i]!;
    const h = Math.floor(v / POS);
    const p = v % POS;
    let dup = false;
    for (let k = w - 1; k >= 0; k--) {
      const u = order[k]!;
      if (Math.floor(u / POS) !== h) break;
      const q = u % POS;
      if (bytesEqual(bytes, offsets[p]!, offsets[p + 1]!, bytes, offsets[q]!, offsets[q + 1]!)) {
        dup = true;
        break;
      }
    }
    if (!dup) order[w++] = v;
  }
  return make(bytes, offsets, w === n ? order : order.slice(0, w));
}

export interface MemberDiff {
  /** sorted indexes into `current` of members not in `previous` */
  adds: Uint32Array;
  /** sorted indexes into `previous` of members not in `current` */
  removes: Uint32Array;
  /** members in both */
  unchanged: number;
}

class U32List {
  a = new Uint32Array(1024);
  n = 0;
  push(v: number): void {
    if (this.n === this.a.length) {
      const next = new Uint32Array(this.a.length * 2);
      next.set(this.a);
      this.a = next;
    }
    this.a[this.n++] = v;
  }
  done(): Uint32Array {
    return this.a.slice(0, this.n);
  }
}

/** adds = current − previous, removes = previous − current, in one pass over both sets in hash order. */
export function diffMembers(previous: MemberSet, current: MemberSet): MemberDiff {
  const po = previous.order;
  const co = current.order;
  const pb = previous.bytes;
  const cb = current.bytes;
  const poff = previous.offsets;
  const coff = current.offsets;
  const adds = new U32List();
  const removes = new U32List();
  let unchanged = 0;
  let i = 0;
  let j = 0;
  while (i < po.length && j < co.length) {
    const hp = Math.floor(po[i]! / POS);
    const hc = Math.floor(co[j]! / POS);
    if (hp < hc) {
      removes.push(i++);
      continue;
    }
    if (hc < hp) {
      adds.push(j++);
      continue;
    }
    // one run of equal hashes on each side: almost always one member each
    let i2 = i + 1;
    while (i2 < po.length && Math.floor(po[i2]! / POS) === hp) i2++;
    let j2 = j + 1;
    while (j2 < co.length && Math.floor(co[j2]! / POS) === hc) j2++;
    if (i2 - i === 1 && j2 - j === 1) {
      const p = po[i]! % POS;
      const c = co[j]! % POS;
      if (bytesEqual(pb, poff[p]!, poff[p + 1]!, cb, coff[c]!, coff[c + 1]!)) unchanged++;
      else {
        removes.push(i);
        adds.push(j);
      }
    } else {
      const matched = new Set<number>();
      for (let y = j; y < j2; y++) {
        const c = co[y]! % POS;
        let found = false;
        for (let x = i; x < i2; x++) {
          if (matched.has(x)) continue;
          const p = po[x]! % POS;
          if (bytesEqual(pb, poff[p]!, poff[p + 1]!, cb, coff[c]!, coff[c + 1]!)) {
            matched.add(x);
            found = true;
            break;
          }
        }
        if (found) unchanged++;
        else adds.push(y);
      }
      for (let x = i; x < i2; x++) if (!matched.has(x)) removes.push(x);
    }
    i = i2;
    j = j2;
  }
  while (i < po.length) removes.push(i++);
  while (j < co.length) adds.push(j++);
  return { adds: adds.done(), removes: removes.done(), unchanged };
}

/**
 * (base − removed) ∪ added: the snapshot after a change Braze accepted. `added` and `removed` are
 * keys; a key in both ends up added (the later change wins where the caller orders them so).
 */
export function applyChange(base: MemberSet, added: Iterable<string>, removed: Iterable<string>): MemberSet {
  const rem = MemberSet.of(removed);
  const b = new MemberSetBuilder();
  for (let i = 0; i < base.order.length; i++) {
    const p = base.order[i]! % POS;
    const from = base.offsets[p]!;
    const to = base.offsets[p + 1]!;
    if (rem.size > 0 && rem.has(decoder.decode(base.bytes.subarray(from, to)))) continue;
    b.addBytes(base.bytes, from, to);
  }
  for (const k of added) b.add(k);
  return b.build();
}

/** the members of `set` at the given sorted indexes, as keys */
export function keysAt(set: MemberSet, indexes: Uint32Array): string[] {
  const out = new Array<string>(indexes.length);
  for (let k = 0; k < indexes.length; k++) out[k] = set.keyAt(indexes[k]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Wire form: the keys in sorted order, each as a varint length then its bytes; chunked by the
// store so no record approaches Kafka's message size limits.

/** Encodes members [from, to) of the set, in sorted order. */
export function encodeMembers(set: MemberSet, from: number, to: number): Uint8Array {
  let size = 0;
  for (let i = from; i < to; i++) {
    const p = set.order[i]! % POS;
    const len = set.offsets[p + 1]! - set.offsets[p]!;
    size += len + (len < 128 ? 1 : len < 16384 ? 2 : 3);
  }
  const out = new Uint8Array(size);
  let w = 0;
  for (let i = from; i < to; i++) {
    const p = set.order[i]! % POS;
    const a = set.offsets[p]!;
    const len = set.offsets[p + 1]! - a;
    let v = len;
    while (v >= 128) {
      out[w++] = (v & 127) | 128;
      v >>>= 7;
    }
    out[w++] = v;
    out.set(set.bytes.subarray(a, a + len), w);
    w += len;
  }
  return out;
}

/** Adds every member of an encoded chunk to the builder. */
export function decodeMembersInto(chunk: Uint8Array, into: MemberSetBuilder): number {
  let r = 0;
  let n = 0;
  while (r < chunk.length) {
    let len = 0;
    let shift = 0;
    for (;;) {
      if (r >= chunk.length) throw new Error('truncated member chunk');
      const b = chunk[r++]!;
      len |= (b & 127) << shift;
      if (b < 128) break;
      shift += 7;
      if (shift > 21) throw new Error('bad member length in chunk');
    }
    if (r + len > chunk.length) throw new Error('truncated member chunk');
    into.addBytes(chunk, r, r + len);
    r += len;
    n++;
  }
  return n;
}
