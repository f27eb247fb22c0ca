/**
 * A cohort's membership as the Braze identifiers it was delivered under, in a compact form that
 * holds 2,000,000 members in about 15 bytes each and diffs two of them in one sequential pass.
 *
 * Each member is its identifier key (see cohort-identifiers.ts: `e:<external_id>`,
 * `a:<label>\u0000<name>`, ...) as UTF-8. A set is one byte array: the members, each as a varint
 * length and its bytes, in the order of a 31-bit hash of the bytes (FNV-1a), plus a sparse index
 * (the offset and hash of every 64th member) for lookups. Building sorts once with a native
 * typed-array sort (hash * 2^22 + position in a Float64Array: no comparator, no objects); two sets
 * are then diffed by walking both in hash order, computing each member's hash as it goes, and
 * members whose hashes are equal are told apart by their bytes, so the result is exact, collisions
 * included. The same bytes are the wire form: the snapshot store writes slices of them.
 *
 * Keying by the delivered identifier rather than by amplitude_id is what makes pull and push share
 * one snapshot (the webhook carries user ids, not amplitude ids) and makes an identification fall
 * out of the diff: a member seen under `a:amplitude_device_id\u0000dev-1` last time and under
 * `e:u-1` now is one add and one remove, exactly what Braze needs.
 */

/** members per set: a position must fit the sort key's low 22 bits */
export const MAX_MEMBERS = 1 << 22;
const POS = 2 ** 22;
/** one index entry per this many members */
const STRIDE = 64;

/** FNV-1a over the bytes, folded to 31 bits. */
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

function varintSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : 3;
}

/** A cursor over packed members: the current member's bytes are data[from..to), its hash `hash`. */
class Cursor {
  from = 0;
  to = 0;
  hash = -1;
  /** index of the current member */
  i = -1;
  private next = 0;

  constructor(private readonly data: Uint8Array) {}

  /** moves to the next member; false at the end */
  advance(): boolean {
    const d = this.data;
    let r = this.next;
    if (r >= d.length) {
      this.hash = -1;
      return false;
    }
    let len = 0;
    let shift = 0;
    for (;;) {
      const b = d[r++]!;
      len |= (b & 127) << shift;
      if (b < 128) break;
      shift += 7;
    }
    this.from = r;
    this.to = r + len;
    this.next = this.to;
    this.hash = hashBytes(d, this.from, this.to);
    this.i++;
    return true;
  }

  /** the offset where the current member's length prefix starts */
  get start(): number {
    return this.from - varintSize(this.to - this.from);
  }

  seek(offset: number, index: number): void {
    this.next = offset;
    this.i = index - 1;
  }
}

export class MemberSet {
  /** use MemberSetBuilder, MemberSet.of or MemberSet.fromPacked */
  constructor(
    /** the members, each a varint length and its UTF-8 bytes, in hash order, no duplicates */
    readonly data: Uint8Array,
    readonly size: number,
    /** byte offset of members 0, 64, 128, ... */
    private readonly index: Uint32Array,
    /** their hashes */
    private readonly indexHash: Uint32Array,
  ) {}

  static empty(): MemberSet {
    return new MemberSet(new Uint8Array(0), 0, new Uint32Array(0), new Uint32Array(0));
  }

  /**
   * From packed members already in hash order (the store's chunks, concatenated). Checks the
   * framing and the order; duplicates are not expected there (a set never writes them).
   */
  static fromPacked(data: Uint8Array): MemberSet {
    const c = new Cursor(data);
    const idx: number[] = [];
    const idxHash: number[] = [];
    let prev = -1;
    let n = 0;
    while (c.advance()) {
      if (c.to > data.length) throw new Error('truncated member data');
      if (c.hash < prev) throw new Error('member data out of order');
      prev = c.hash;
      if (n % STRIDE === 0) {
        idx.push(c.start);
        idxHash.push(c.hash);
      }
      n++;
    }
    return new MemberSet(data, n, Uint32Array.from(idx), Uint32Array.from(idxHash));
  }

  static of(keys: Iterable<string>): MemberSet {
    const b = new MemberSetBuilder();
    for (const k of keys) b.add(k);
    return b.build();
  }

  *keys(): IterableIterator<string> {
    const c = new Cursor(this.data);
    while (c.advance()) yield decoder.decode(this.data.subarray(c.from, c.to));
  }

  has(key: string): boolean {
    const kb = encoder.encode(key);
    const h = hashBytes(kb, 0, kb.length);
    // the last index entry whose hash is below h: equal hashes may start in the block before
    let lo = 0;
    let hi = this.indexHash.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.indexHash[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const block = Math.max(0, lo - 1);
    if (this.index.length === 0) return false;
    const c = new Cursor(this.data);
    c.seek(this.index[block]!, block * STRIDE);
    while (c.advance()) {
      if (c.hash > h) return false;
      if (c.hash === h && bytesEqual(this.data, c.from, c.to, kb, 0, kb.length)) return true;
    }
    return false;
  }

  /** bytes this set holds (for the memory figures) */
  get byteSize(): number {
    return this.data.byteLength + this.index.byteLength + this.indexHash.byteLength;
  }

  /** byte offsets that split the set into pieces of at most `members` members (for chunked storage) */
  splitOffsets(members: number): number[] {
    const out = [0];
    const c = new Cursor(this.data);
    let n = 0;
    while (c.advance()) {
      n++;
      if (n % members === 0 && c.to < this.data.length) out.push(c.to);
    }
    if (this.data.length > 0) out.push(this.data.length);
    return out;
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
    if (need > this.bytes.length) this.grow(need);
    const { written } = encoder.encodeInto(key, this.bytes.subarray(this.used));
    this.addRaw(written);
  }

  /** adds the member whose bytes are `src[from..to)` */
  addBytes(src: Uint8Array, from: number, to: number): void {
    if (this.n + 1 >= MAX_MEMBERS) throw new Error(`a cohort snapshot holds at most ${MAX_MEMBERS - 1} members`);
    const len = to - from;
    if (this.used + len > this.bytes.length) this.grow(this.used + len);
    this.bytes.set(src.subarray(from, to), this.used);
    this.addRaw(len);
  }

  private grow(need: number): void {
    const next = new Uint8Array(Math.max(need, Math.ceil(this.bytes.length * 1.5)));
    next.set(this.bytes.subarray(0, this.used));
    this.bytes = next;
  }

  private addRaw(len: number): void {
    if (len >= 1 << 21) throw new Error('a member key this long is not an identifier');
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
    const bytes = this.bytes;
    const offsets = this.offsets;
    const n = this.n;
    this.bytes = new Uint8Array(0);
    this.offsets = new Uint32Array(1);
    this.n = 0;
    this.used = 0;
    return finish(bytes, offsets, n);
  }
}

function finish(bytes: Uint8Array, offsets: Uint32Array, n: number): MemberSet {
  const order = new Float64Array(n);
  for (let i = 0; i < n; i++) order[i] = hashBytes(bytes, offsets[i]!, offsets[i + 1]!) * POS + i;
  order.sort();
  // drop duplicates (equal keys have equal hashes, so they sit in one run), size the packed form
  let w = 0;
  let size = 0;
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
    if (dup) continue;
    order[w++] = v;
    const len = offsets[p + 1]! - offsets[p]!;
    size += varintSize(len) + len;
  }
  const data = new Uint8Array(size);
  const index = new Uint32Array(Math.ceil(w / STRIDE));
  const indexHash = new Uint32Array(index.length);
  let o = 0;
  for (let k = 0; k < w; k++) {
    const v = order[k]!;
    const p = v % POS;
    const a = offsets[p]!;
    const len = offsets[p + 1]! - a;
    if (k % STRIDE === 0) {
      index[k / STRIDE] = o;
      indexHash[k / STRIDE] = Math.floor(v / POS);
    }
    let x = len;
    while (x >= 128) {
      data[o++] = (x & 127) | 128;
      x >>>= 7;
    }
    data[o++] = x;
    data.set(bytes.subarray(a, a + len), o);
    o += len;
  }
  return new MemberSet(data, w, index, indexHash);
}

export interface MemberDiff {
  /** ascending positions (in hash order) in `current` of members not in `previous` */
  adds: Uint32Array;
  /** ascending positions in `previous` of members not in `current` */
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
    const out = this.a.slice(0, this.n);
    out.sort();
    return out;
  }
}

/** adds = current − previous, removes = previous − current, in one sequential pass over both. */
export function diffMembers(previous: MemberSet, current: MemberSet): MemberDiff {
  const pd = previous.data;
  const cd = current.data;
  const p = new Cursor(pd);
  const c = new Cursor(cd);
  const adds = new U32List();
  const removes = new U32List();
  let unchanged = 0;
  p.advance();
  c.advance();
  // members of one run of equal hashes, when a side has more than one (rare: a 31-bit collision)
  const runP: Array<[number, number, number]> = [];
  const runC: Array<[number, number, number]> = [];
  while (p.hash >= 0 && c.hash >= 0) {
    if (p.hash < c.hash) {
      removes.push(p.i);
      p.advance();
      continue;
    }
    if (c.hash < p.hash) {
      adds.push(c.i);
      c.advance();
      continue;
    }
    const h = p.hash;
    runP.length = 0;
    runC.length = 0;
    do runP.push([p.from, p.to, p.i]);
    while (p.advance() && p.hash === h);
    do runC.push([c.from, c.to, c.i]);
    while (c.advance() && c.hash === h);
    if (runP.length === 1 && runC.length === 1) {
      const [pf, pt, pi] = runP[0]!;
      const [cf, ct, ci] = runC[0]!;
      if (bytesEqual(pd, pf, pt, cd, cf, ct)) unchanged++;
      else {
        removes.push(pi);
        adds.push(ci);
      }
      continue;
    }
    const matched = new Set<number>();
    for (const [cf, ct, ci] of runC) {
      let found = false;
      for (let x = 0; x < runP.length; x++) {
        if (matched.has(x)) continue;
        const [pf, pt] = runP[x]!;
        if (bytesEqual(pd, pf, pt, cd, cf, ct)) {
          matched.add(x);
          found = true;
          break;
        }
      }
      if (found) unchanged++;
      else adds.push(ci);
    }
    for (let x = 0; x < runP.length; x++) if (!matched.has(x)) removes.push(runP[x]![2]);
  }
  while (p.hash >= 0) {
    removes.push(p.i);
    p.advance();
  }
  while (c.hash >= 0) {
    adds.push(c.i);
    c.advance();
  }
  return { adds: adds.done(), removes: removes.done(), unchanged };
}

/** the members of `set` at the given ascending positions, as keys */
export function keysAt(set: MemberSet, positions: Uint32Array): string[] {
  const out = new Array<string>(positions.length);
  if (positions.length === 0) return out;
  const c = new Cursor(set.data);
  let k = 0;
  while (k < positions.length && c.advance()) {
    if (c.i === positions[k]) out[k++] = decoder.decode(set.data.subarray(c.from, c.to));
  }
  return out;
}

/**
 * (base − removed) ∪ added: the snapshot after a change Braze accepted. A key in both ends up in
 * the set. One merge pass over the packed bytes (no re-sort of the base), so applying a webhook
 * batch of a thousand users to a million-member snapshot costs a copy, not a rebuild.
 */
export function applyChange(base: MemberSet, added: Iterable<string>, removed: Iterable<string>): MemberSet {
  const add = MemberSet.of(added);
  const rem = MemberSet.of(removed);
  if (add.size === 0 && rem.size === 0) return base;
  const out = new Uint8Array(base.data.length + add.data.length);
  const index: number[] = [];
  const indexHash: number[] = [];
  let o = 0;
  let n = 0;
  const emit = (src: Uint8Array, from: number, to: number, h: number): void => {
    if (n % STRIDE === 0) {
      index.push(o);
      indexHash.push(h);
    }
    let x = to - from;
    while (x >= 128) {
      out[o++] = (x & 127) | 128;
      x >>>= 7;
    }
    out[o++] = x;
    out.set(src.subarray(from, to), o);
    o += to - from;
    n++;
  };
  const b = new Cursor(base.data);
  const a = new Cursor(add.data);
  const r = new Cursor(rem.data);
  b.advance();
  a.advance();
  r.advance();
  const run = (c: Cursor, h: number): Array<[number, number]> => {
    const got: Array<[number, number]> = [];
    while (c.hash === h) {
      got.push([c.from, c.to]);
      c.advance();
    }
    return got;
  };
  while (b.hash >= 0 || a.hash >= 0) {
    const h = b.hash < 0 ? a.hash : a.hash < 0 ? b.hash : Math.min(a.hash, b.hash);
    while (r.hash >= 0 && r.hash < h) r.advance();
    const bs = run(b, h);
    const as = run(a, h);
    const rs = run(r, h);
    const kept: Array<[Uint8Array, number, number]> = [];
    for (const [f, t] of bs) {
      if (rs.some(([rf, rt]) => bytesEqual(base.data, f, t, rem.data, rf, rt))) continue;
      kept.push([base.data, f, t]);
    }
    for (const [f, t] of as) {
      if (kept.some(([src, kf, kt]) => bytesEqual(src, kf, kt, add.data, f, t))) continue;
      kept.push([add.data, f, t]);
    }
    for (const [src, f, t] of kept) emit(src, f, t, h);
  }
  return new MemberSet(out.subarray(0, o).slice(), n, Uint32Array.from(index), Uint32Array.from(indexHash));
}

// ---------------------------------------------------------------------------------------------
// Wire form: slices of the packed data (members in hash order), chunked by the store.

/** The packed bytes of members [from, to) in hash order. */
export function encodeMembers(set: MemberSet, from: number, to: number): Uint8Array {
  const offs = set.splitOffsets(1);
  return set.data.subarray(offs[from] ?? set.data.length, offs[to] ?? set.data.length);
}

/** Adds every member of an encoded chunk to the builder (for chunks whose order is not trusted). */
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
