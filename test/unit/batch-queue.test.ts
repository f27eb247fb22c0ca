import { describe, expect, it } from 'vitest';
import { KeyedBatchQueue, type Batchable } from '../../src/delivery/batch-queue.js';

interface It extends Batchable {
  id: number;
}
type Extra = { events?: number; attributes?: number; purchases?: number; bytes?: number };
const ev = (id: number, key: string, extra: Extra = {}): It => ({
  id,
  key,
  parts: [extra.events ?? 1, extra.attributes ?? 0, extra.purchases ?? 0],
  bytes: extra.bytes ?? 10,
});

describe('KeyedBatchQueue', () => {
  it('fills a batch up to the per-array cap', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 75, maxTotal: 0, maxBytes: 1e6 });
    for (let i = 0; i < 200; i++) q.push(ev(i, `u${i}`));
    expect(q.take().length).toBe(75);
    expect(q.take().length).toBe(75);
    expect(q.take().length).toBe(50);
    expect(q.take().length).toBe(0);
  });

  it.each([
    { name: 'total cap', limits: { maxPerPart: 75, maxTotal: 50, maxBytes: 1e6 }, items: 120, extra: { attributes: 1 }, want: 25 },
    { name: 'attributes cap', limits: { maxPerPart: 75, maxTotal: 0, maxBytes: 1e6 }, items: 120, extra: { events: 0, attributes: 1 }, want: 75 },
    { name: 'byte cap', limits: { maxPerPart: 75, maxTotal: 0, maxBytes: 1000 }, items: 120, extra: { bytes: 100 }, want: 10 },
    { name: 'purchases cap', limits: { maxPerPart: 75, maxTotal: 0, maxBytes: 1e6 }, items: 120, extra: { purchases: 3 }, want: 25 },
  ])('respects the $name', ({ limits, items, extra, want }) => {
    const q = new KeyedBatchQueue<It>(limits);
    for (let i = 0; i < items; i++) q.push(ev(i, `u${i}`, extra));
    expect(q.take().length).toBe(want);
  });

  it('holds a busy user\'s newer items until its request is released, keeping order', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 2, maxTotal: 0, maxBytes: 1e6 });
    q.push(ev(1, 'a'));
    q.push(ev(2, 'a'));
    q.push(ev(3, 'a'));
    q.push(ev(4, 'b'));
    const first = q.take();
    expect(first.map((i) => i.id)).toEqual([1, 2]);
    // a's third item must wait; b can go meanwhile
    expect(q.take().map((i) => i.id)).toEqual([4]);
    expect(q.take()).toEqual([]);
    q.release(['a']);
    expect(q.take().map((i) => i.id)).toEqual([3]);
  });

  it('does not let items pushed during a request overtake it', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 75, maxTotal: 0, maxBytes: 1e6 });
    q.push(ev(1, 'a'));
    expect(q.take().map((i) => i.id)).toEqual([1]);
    q.push(ev(2, 'a'));
    expect(q.hasReady).toBe(false);
    q.release(['a']);
    expect(q.take().map((i) => i.id)).toEqual([2]);
  });

  it('returns an oversized item on its own rather than never', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 75, maxTotal: 0, maxBytes: 100 });
    q.push(ev(1, 'a', { bytes: 500 }));
    q.push(ev(2, 'b'));
    expect(q.take().map((i) => i.id)).toEqual([1]);
    expect(q.take().map((i) => i.id)).toEqual([2]);
  });
});

describe('KeyedBatchQueue ordering across users', () => {
  it('serves a released user by the age of its oldest item, not behind everyone who arrived later', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 1, maxTotal: 0, maxBytes: 1e6 });
    q.push(ev(1, 'a'));
    q.push(ev(2, 'a'));
    for (let i = 3; i < 10; i++) q.push(ev(i, `u${i}`));
    expect(q.take().map((i) => i.id)).toEqual([1]);
    expect(q.take().map((i) => i.id)).toEqual([3]);
    q.release(['a']);
    // a's second item (2) is older than u4..u9's: it goes next
    expect(q.take().map((i) => i.id)).toEqual([2]);
    expect(q.take().map((i) => i.id)).toEqual([4]);
  });
});

describe('KeyedBatchQueue removal', () => {
  it('removes matching items, keeps the rest in order, and skips emptied keys', () => {
    const q = new KeyedBatchQueue<It>({ maxPerPart: 75, maxTotal: 0, maxBytes: 1e6 });
    q.push(ev(1, 'a'));
    q.push(ev(2, 'b'));
    q.push(ev(3, 'a'));
    q.push(ev(4, 'c'));
    expect(q.removeWhere((i) => i.id === 1 || i.key === 'b').map((i) => i.id)).toEqual([1, 2]);
    expect(q.size).toBe(2);
    expect(q.peekReady()?.id).toBe(3);
    expect(q.take().map((i) => i.id)).toEqual([3, 4]);
    q.push(ev(5, 'd'));
    q.removeWhere(() => true);
    expect(q.take()).toEqual([]); // the emptied key is skipped
    q.push(ev(6, 'e'));
    q.removeWhere(() => true);
    expect(q.peekReady()).toBeUndefined();
    expect(q.hasReady).toBe(false);
  });
});
