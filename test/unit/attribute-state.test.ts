import { describe, expect, it } from 'vitest';
import { AttributeState, cyrb53, hashValue } from '../../src/amplitude-to-braze/attribute-state.js';
import type { BrazeAttributes } from '../../src/amplitude-to-braze/braze-types.js';

const attrs = (id: string, o: Record<string, unknown>): BrazeAttributes => ({ external_id: id, ...o }) as BrazeAttributes;

/** runs one attributes object through the state and returns what is left to send */
function send(s: AttributeState, id: string, t: number, o: Record<string, unknown>, confirm = true): Record<string, unknown> {
  const a = attrs(id, o);
  const r = s.filter(`ext:${id}`, a, t);
  if (confirm) s.confirm(r.write);
  const { external_id: _id, ...rest } = r.attributes;
  return rest;
}

describe('AttributeState', () => {
  it('hashes by type and value', () => {
    expect(hashValue('1')).not.toBe(hashValue(1));
    expect(hashValue(true)).not.toBe(hashValue('true'));
    expect(hashValue(null)).not.toBe(hashValue('null'));
    expect(hashValue({ a: 1 })).toBe(hashValue({ a: 1 }));
    expect(hashValue({ a: 1 })).not.toBe(hashValue({ a: 2 }));
    expect(Number.isSafeInteger(cyrb53('x'.repeat(1000), 0))).toBe(true);
  });

  it('identifier and flag keys are never filtered', () => {
    const s = new AttributeState();
    const a: BrazeAttributes = { user_alias: { alias_name: 'd', alias_label: 'l' }, _update_existing_only: false, plan: 'pro' };
    s.filter('alias:l:d', a, 1);
    const b: BrazeAttributes = { user_alias: { alias_name: 'd', alias_label: 'l' }, _update_existing_only: false, plan: 'pro' };
    const r = s.filter('alias:l:d', b, 2);
    expect(r.kept).toBe(0);
    expect(r.attributes).toEqual({ user_alias: { alias_name: 'd', alias_label: 'l' }, _update_existing_only: false });
    // the given object is left as it was
    expect(b.plan).toBe('pro');
  });

  it('an email identifier is not an attribute; email next to another identifier is', () => {
    const s = new AttributeState();
    const byEmail: BrazeAttributes = { email: 'a@x.io', plan: 'pro' };
    expect(s.filter('email:a@x.io', byEmail, 1).kept).toBe(1);
    expect(send(s, 'u', 1, { email: 'a@x.io' })).toEqual({ email: 'a@x.io' });
    expect(send(s, 'u', 2, { email: 'a@x.io' })).toEqual({});
  });

  it('evicts the least recently used user beyond maxUsers, which then re-sends once', () => {
    const s = new AttributeState({ maxUsers: 2 });
    send(s, 'a', 1, { plan: 'pro' });
    send(s, 'b', 1, { plan: 'pro' });
    expect(send(s, 'a', 2, { plan: 'pro' })).toEqual({}); // a is now the most recent
    send(s, 'c', 1, { plan: 'pro' }); // evicts b
    expect(s.size).toBe(2);
    expect(s.stats.evicted).toBe(1);
    expect(send(s, 'a', 3, { plan: 'pro' })).toEqual({});
    expect(send(s, 'b', 3, { plan: 'pro' })).toEqual({ plan: 'pro' });
  });

  it('persists only what Braze confirmed; a restored state filters like the original', () => {
    const s = new AttributeState();
    send(s, 'a', 10, { plan: 'pro', country: 'DE' });
    send(s, 'b', 10, { plan: 'free' }, false); // in flight, never confirmed
    const created = s.filter('alias:l:d', { user_alias: { alias_name: 'd', alias_label: 'l' } }, 5, undefined, true);
    s.confirm(created.write);
    const snap = s.snapshot();

    const t = new AttributeState();
    expect(t.restore(snap)).toBe(2);
    expect(send(t, 'a', 11, { plan: 'pro', country: 'DE' })).toEqual({});
    expect(send(t, 'a', 9, { plan: 'team' })).toEqual({}); // older than what was sent
    expect(send(t, 'b', 11, { plan: 'free' })).toEqual({ plan: 'free' }); // not confirmed: sent again
    expect(t.needsCreation('alias:l:d')).toBe(false);
    expect(t.needsCreation('alias:l:other')).toBe(true);
  });

  it('per-user records for a compacted topic: takeDirty, encodeUser, restoreUser', () => {
    const s = new AttributeState();
    send(s, 'a', 10, { plan: 'pro' });
    send(s, 'b', 10, { plan: 'free' });
    const dirty = s.takeDirty();
    expect(dirty.map((d) => d.key).sort()).toEqual(['ext:a', 'ext:b']);
    expect(s.takeDirty()).toEqual([]);
    send(s, 'a', 11, { plan: 'team' });
    expect(s.takeDirty().map((d) => d.key)).toEqual(['ext:a']);

    const t = new AttributeState();
    // the mock broker does not compact: a reader applies every record in order, the latest wins
    for (const d of dirty) t.restoreUser(d.key, d.value);
    t.restoreUser('ext:a', s.encodeUser('ext:a') ?? null);
    expect(send(t, 'a', 12, { plan: 'team' })).toEqual({});
    expect(send(t, 'b', 12, { plan: 'free' })).toEqual({});
    expect(t.restoreUser('ext:b', null)).toBe(true);
    expect(send(t, 'b', 13, { plan: 'free' })).toEqual({ plan: 'free' });
    expect(t.restoreUser('ext:c', Buffer.from([9, 9, 9]))).toBe(false);
    expect(() => t.restore(Buffer.from([0, 5, 1]))).toThrow(/truncated/);
  });

  it('a confirm for an evicted user still records the write', () => {
    const s = new AttributeState({ maxUsers: 1 });
    const a = attrs('a', { plan: 'pro' });
    const r = s.filter('ext:a', a, 1);
    send(s, 'b', 1, { plan: 'x' }); // evicts a
    s.confirm(r.write);
    expect(send(s, 'a', 2, { plan: 'pro' })).toEqual({});
  });

  it('settle confirms or releases', () => {
    const s = new AttributeState();
    const a = s.filter('ext:a', attrs('a', { plan: 'pro' }), 1);
    s.settle(a.write, false);
    expect(send(s, 'a', 2, { plan: 'pro' })).toEqual({ plan: 'pro' });
    const b = s.filter('ext:b', attrs('b', { plan: 'pro' }), 1);
    s.settle(b.write, true);
    expect(s.encodeUser('ext:b')).toBeDefined();
  });

  it('release keeps a newer value recorded since', () => {
    const s = new AttributeState();
    const first = s.filter('ext:a', attrs('a', { plan: 'pro' }), 1);
    send(s, 'a', 2, { plan: 'team' }, false);
    s.release(first.write);
    expect(send(s, 'a', 3, { plan: 'team' })).toEqual({});
  });

  describe('after an operation (inc, add, remove): value unknown, time kept', () => {
    const T = Date.UTC(2025, 0, 1, 0, 0);
    const min = (m: number): number => T + m * 60_000;
    const OLD = Date.UTC(2020, 5, 1);

    it('an older event cannot overwrite the attribute; a newer one, even with the last known value, is sent', () => {
      const s = new AttributeState();
      expect(send(s, 'a', min(10), { seats: 5 })).toEqual({ seats: 5 });
      expect(send(s, 'a', min(11), { seats: { inc: 1 } })).toEqual({ seats: { inc: 1 } });
      expect(send(s, 'a', OLD, { seats: 1 })).toEqual({});
      expect(s.stats.stale).toBe(1);
      expect(send(s, 'a', min(12), { seats: 5 })).toEqual({ seats: 5 });
      expect(send(s, 'a', min(13), { seats: 5 })).toEqual({});
    });

    it('holds before Braze confirmed the operation, and for array operations too', () => {
      const s = new AttributeState();
      send(s, 'a', min(10), { tags: ['x'] });
      expect(send(s, 'a', min(11), { tags: { add: ['y'] } }, false)).toEqual({ tags: { add: ['y'] } });
      expect(send(s, 'a', OLD, { tags: ['old'] }, false)).toEqual({});
    });

    it('an operation from an older event keeps the newer time', () => {
      const s = new AttributeState();
      send(s, 'a', min(20), { seats: 5 });
      expect(send(s, 'a', min(10), { seats: { inc: 1 } })).toEqual({ seats: { inc: 1 } });
      expect(send(s, 'a', min(15), { seats: 2 })).toEqual({});
      expect(send(s, 'a', min(21), { seats: 6 })).toEqual({ seats: 6 });
    });

    it('survives persistence (snapshot and per-user records)', () => {
      const s = new AttributeState();
      send(s, 'a', min(10), { seats: 5 });
      send(s, 'a', min(11), { seats: { inc: 1 } });
      const t = new AttributeState();
      t.restore(s.snapshot());
      expect(send(t, 'a', OLD, { seats: 1 })).toEqual({});
      expect(send(t, 'a', min(12), { seats: 5 })).toEqual({ seats: 5 });
      const u = new AttributeState();
      u.restoreUser('ext:a', s.encodeUser('ext:a') ?? null);
      expect(send(u, 'a', OLD, { seats: 1 })).toEqual({});
    });

    it('a refused operation is released: the confirmed value and its time are back', () => {
      const s = new AttributeState();
      send(s, 'a', min(10), { seats: 5 });
      const op = s.filter('ext:a', attrs('a', { seats: { inc: 1 } }), min(11));
      s.release(op.write);
      expect(send(s, 'a', min(12), { seats: 5 })).toEqual({}); // Braze still has 5
      expect(send(s, 'a', min(9), { seats: 4 })).toEqual({}); // older than the confirmed 5
    });

    it('$setOnce after an operation is not applied (the attribute has a value)', () => {
      const s = new AttributeState();
      send(s, 'a', min(10), { visits: { inc: 1 } });
      const r = s.filter('ext:a', attrs('a', { visits: 0 }), min(11), new Set(['visits']));
      expect(r.kept).toBe(0);
      expect(r.setOnce).toBe(1);
    });

    it('still reads records in the format written before (version 1, no entry for an operated attribute)', () => {
      const rec = Buffer.alloc(4 + 25);
      rec.writeUInt8(1, 0);
      rec.writeUInt8(0, 1);
      rec.writeUInt16BE(1, 2);
      rec.writeDoubleBE(cyrb53('plan', 0), 4);
      rec.writeDoubleBE(hashValue('pro'), 12);
      rec.writeDoubleBE(min(10), 20);
      rec.writeUInt8(0, 28);
      const s = new AttributeState();
      expect(s.restoreUser('ext:a', rec)).toBe(true);
      expect(send(s, 'a', min(11), { plan: 'pro' })).toEqual({});
      expect(send(s, 'a', min(9), { plan: 'free' })).toEqual({});
      // and what this version writes is still version 1
      expect(s.encodeUser('ext:a')?.readUInt8(0)).toBe(1);
    });
  });

  it('memory stays within the stated budget (about 250 bytes per user plus 48 per attribute)', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc === undefined) return; // run with --expose-gc to measure
    gc();
    const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const before = used();
    const s = new AttributeState({ maxUsers: 20_000 });
    for (let u = 0; u < 20_000; u++) {
      const o: Record<string, unknown> = {};
      for (let k = 0; k < 10; k++) o[`attr_${k}`] = `v${u}-${k}`;
      send(s, `user-${u}`, 1, o);
    }
    gc();
    const perUser = (used() - before) / 20_000;
    expect(s.size).toBe(20_000);
    expect(perUser).toBeLessThan(250 + 10 * 48 + 200);
  });
});
