import { describe, expect, it } from 'vitest';
import { OffsetTracker } from '../../src/kafka/offset-tracker.js';

describe('OffsetTracker', () => {
  it('commits only up to the first unfinished offset, whatever order work finishes in', () => {
    const t = new OffsetTracker();
    const h = [10, 11, 12, 13].map((o) => t.track('a', 0, String(o)));
    expect(t.commitPoints()).toEqual([{ topic: 'a', partition: 0, offset: '10' }]);
    h[1]!.done();
    h[3]!.done();
    expect(t.commitPoints()[0]!.offset).toBe('10');
    h[0]!.done();
    expect(t.commitPoints()[0]!.offset).toBe('12');
    h[2]!.done();
    expect(t.commitPoints()[0]!.offset).toBe('14');
    expect(t.pending).toBe(0);
  });

  it('reports a partition only when its commit point moved', () => {
    const t = new OffsetTracker();
    t.track('a', 1, '5')!.done();
    const p = t.commitPoints();
    expect(p).toEqual([{ topic: 'a', partition: 1, offset: '6' }]);
    t.markCommitted(p);
    expect(t.commitPoints()).toEqual([]);
  });

  it('keeps partitions apart and tolerates gaps in offsets', () => {
    const t = new OffsetTracker();
    const a = t.track('a', 0, '100')!;
    const b = t.track('a', 1, '7')!;
    t.track('a', 0, '105')!.done();
    b.done();
    expect(t.commitPoints()).toEqual([
      { topic: 'a', partition: 0, offset: '100' },
      { topic: 'a', partition: 1, offset: '8' },
    ]);
    a.done();
    expect(t.commitPoints()[0]!.offset).toBe('106');
  });

  it('survives compaction with handles created before it', () => {
    const t = new OffsetTracker();
    const handles = Array.from({ length: 20_000 }, (_, i) => t.track('a', 0, String(i)));
    // finish all but one straggler in the middle, so compaction runs while it is pending
    for (let i = 0; i < 20_000; i++) if (i !== 15_000) handles[i]!.done();
    expect(t.commitPoints()[0]!.offset).toBe('15000');
    handles[15_000]!.done();
    handles[3]!.done(); // finishing twice is harmless
    expect(t.commitPoints()[0]!.offset).toBe('20000');
    expect(t.pending).toBe(0);
  });

  it('ignores late completions of a revoked partition', () => {
    const t = new OffsetTracker();
    const h = t.track('a', 0, '1')!;
    t.track('a', 0, '2');
    expect(t.pending).toBe(2);
    t.forget('a', 0);
    expect(t.pending).toBe(0);
    h.done();
    expect(t.pending).toBe(0);
    expect(t.commitPoints()).toEqual([]);
  });

  it('does not hand out an offset it already read again: a re-fetch after a rejoin is not re-sent', () => {
    const t = new OffsetTracker();
    const h = [0, 1, 2, 3].map((o) => t.track('a', 0, String(o))!);
    h[0]!.done();
    h[1]!.done();
    // kafkajs rejoined and fetches from the last commit (0): offsets 0-3 come again
    expect([0, 1, 2, 3].map((o) => t.track('a', 0, String(o)))).toEqual([undefined, undefined, undefined, undefined]);
    expect(t.pending).toBe(2);
    expect(t.track('a', 0, '4')).toBeDefined();
    // a partition this member lost and got back starts afresh: what it had is someone else's now
    t.forget('a', 0);
    expect(t.track('a', 0, '2')).toBeDefined();
  });
});
