import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { FailureClass } from '../../src/errors.js';
import {
  ConnectorHealth,
  HealthRegistry,
  type ConnectorRecord,
  type ConnectorSnapshot,
  type ConnectorState,
  type PendingProbe,
} from '../../src/health/connector-health.js';
import { dropWindowDecision, warningLevel, type WarningLevel } from '../../src/health/drop-window.js';

const T0 = Date.UTC(2024, 0, 1);
const H = 3_600_000;
const WINDOW = 48 * H;

function connector(probe: PendingProbe = { count: 0 }): { clock: ManualClock; health: ConnectorHealth; pending: (p: PendingProbe) => void } {
  const clock = new ManualClock(T0);
  const health = new ConnectorHealth('amplitude', 'amplitude', clock);
  let current = probe;
  health.setPendingProbe(() => current);
  return { clock, health, pending: (p) => (current = p) };
}

type Step =
  | { do: 'attempt' }
  | { do: 'success'; delivered?: number }
  | { do: 'failure'; cls: FailureClass }
  | { do: 'expire' }
  | { do: 'pending'; count: number }
  | { do: 'advance'; ms: number };

function apply(c: ReturnType<typeof connector>, steps: Step[]): void {
  for (const s of steps) {
    switch (s.do) {
      case 'attempt':
        c.health.recordAttempt();
        break;
      case 'success':
        c.health.recordSuccess(s.delivered ?? 1);
        break;
      case 'failure':
        c.health.recordFailure(s.cls, `failed: ${s.cls}`);
        break;
      case 'expire':
        c.health.markExpired();
        break;
      case 'pending':
        c.pending(s.count > 0 ? { count: s.count, oldestMs: c.clock.now() } : { count: 0 });
        break;
      case 'advance':
        c.clock.advance(s.ms);
        break;
    }
  }
}

describe('ConnectorHealth state transitions', () => {
  const cases: Array<{ name: string; steps: Step[]; state: ConnectorState }> = [
    { name: 'new, nothing pending: idle', steps: [], state: 'idle' },
    { name: 'an attempt alone changes nothing', steps: [{ do: 'attempt' }], state: 'idle' },
    { name: 'pending, no errors: healthy', steps: [{ do: 'pending', count: 5 }], state: 'healthy' },
    { name: 'retryable failure: degraded', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'retryable' }], state: 'degraded' },
    { name: 'rate limited: degraded', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'rate_limited' }], state: 'degraded' },
    { name: 'degraded even once the backlog drained elsewhere', steps: [{ do: 'failure', cls: 'retryable' }], state: 'degraded' },
    { name: 'auth failure: failing', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'auth' }], state: 'failing' },
    { name: 'fatal: failing', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'fatal' }], state: 'failing' },
    { name: 'retryable after auth: degraded (the last error decides)', steps: [{ do: 'failure', cls: 'auth' }, { do: 'failure', cls: 'retryable' }], state: 'degraded' },
    {
      name: 'degraded, then success with events still pending: healthy',
      steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'retryable' }, { do: 'success' }],
      state: 'healthy',
    },
    {
      name: 'failing, then success with nothing left: idle',
      steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'auth' }, { do: 'success' }, { do: 'pending', count: 0 }],
      state: 'idle',
    },
    { name: 'markExpired: expired', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'auth' }, { do: 'expire' }], state: 'expired' },
    { name: 'expired wins over nothing pending', steps: [{ do: 'failure', cls: 'auth' }, { do: 'expire' }, { do: 'pending', count: 0 }], state: 'expired' },
    { name: 'expired survives another failure', steps: [{ do: 'failure', cls: 'auth' }, { do: 'expire' }, { do: 'failure', cls: 'auth' }], state: 'expired' },
    { name: 'expired is cleared by a success', steps: [{ do: 'pending', count: 5 }, { do: 'failure', cls: 'auth' }, { do: 'expire' }, { do: 'success' }], state: 'healthy' },
  ];
  it.each(cases)('$name', ({ steps, state }) => {
    const c = connector();
    apply(c, steps);
    expect(c.health.snapshot().state).toBe(state);
  });

  it('records times, the error, failingSince from the first failure, and clears them on success', () => {
    const c = connector({ count: 3, oldestMs: T0 });
    c.clock.advance(1_000);
    c.health.recordAttempt();
    expect(c.health.record()).toMatchObject({ lastAttemptMs: T0 + 1_000, delivered: 0 });
    expect(c.health.record().lastSuccessMs).toBeUndefined();

    c.clock.advance(1_000);
    c.health.recordFailure('auth', 'Invalid API key');
    c.clock.advance(1_000);
    c.health.recordFailure('auth', 'x'.repeat(2_000));
    let r = c.health.record();
    expect(r.failingSinceMs).toBe(T0 + 2_000);
    expect(r.lastAttemptMs).toBe(T0 + 3_000);
    expect(r.lastErrorClass).toBe('auth');
    expect(r.lastError?.length).toBe(500);

    c.clock.advance(1_000);
    c.health.recordSuccess(7);
    c.health.recordSuccess(3);
    r = c.health.record();
    expect(r).toMatchObject({ lastSuccessMs: T0 + 4_000, lastAttemptMs: T0 + 4_000, delivered: 10 });
    expect(r.failingSinceMs).toBeUndefined();
    expect(r.lastErrorClass).toBeUndefined();
    expect(r.lastError).toBeUndefined();
    expect(r.expiredAtMs).toBeUndefined();
  });

  it('record() is a copy: changing it does not change the connector', () => {
    const c = connector();
    const r = c.health.record();
    r.delivered = 99;
    expect(c.health.record().delivered).toBe(0);
  });
});

describe('ConnectorHealth.snapshot ages', () => {
  it('gives the oldest pending age and seconds since the last success, relative to the clock', () => {
    const c = connector();
    c.health.recordSuccess(1);
    c.pending({ count: 4, oldestMs: T0 + 10_000 });
    c.clock.advance(70_000);
    const s = c.health.snapshot();
    expect(s.pending).toBe(4);
    expect(s.oldestPendingAgeMs).toBe(60_000);
    expect(s.secondsSinceLastSuccess).toBe(70);
  });

  it('leaves the ages out when there is nothing to measure, and never gives a negative age', () => {
    const c = connector({ count: 2 });
    let s = c.health.snapshot();
    expect(s.oldestPendingAgeMs).toBeUndefined();
    expect(s.secondsSinceLastSuccess).toBeUndefined();
    expect('oldestPendingAgeMs' in s).toBe(false);
    // a probe whose clock runs slightly ahead of ours
    c.pending({ count: 1, oldestMs: T0 + 5 });
    s = c.health.snapshot();
    expect(s.oldestPendingAgeMs).toBe(0);
  });
});

describe('ConnectorHealth.restore', () => {
  const saved: ConnectorRecord = {
    name: 'amplitude',
    kind: 'amplitude',
    lastSuccessMs: T0 - 10 * H,
    lastAttemptMs: T0 - H,
    lastErrorClass: 'auth',
    lastError: 'Invalid API key',
    failingSinceMs: T0 - 9 * H,
    delivered: 1_000,
  };

  it('a restart keeps lastSuccess, failingSince and the error, so the drop window clock keeps running', () => {
    const c = connector({ count: 1, oldestMs: T0 });
    c.health.restore(saved);
    const r = c.health.record();
    expect(r).toMatchObject({ lastSuccessMs: T0 - 10 * H, lastAttemptMs: T0 - H, failingSinceMs: T0 - 9 * H, lastErrorClass: 'auth', delivered: 1_000 });
    expect(c.health.snapshot().state).toBe('failing');
  });

  it('local failures since start-up keep the saved (earlier) failingSince and the newer local error', () => {
    const c = connector();
    c.health.recordFailure('retryable', 'timeout');
    c.health.restore(saved);
    const r = c.health.record();
    expect(r.failingSinceMs).toBe(T0 - 9 * H);
    expect(r.lastErrorClass).toBe('retryable');
    expect(r.lastError).toBe('timeout');
    expect(r.lastAttemptMs).toBe(T0);
    expect(r.lastSuccessMs).toBe(T0 - 10 * H);
  });

  it('a success since start-up wins: newer lastSuccess and attempt, delivered counts add up, the saved failure is over', () => {
    const c = connector();
    c.clock.advance(1_000);
    c.health.recordSuccess(5);
    c.health.restore(saved);
    const r = c.health.record();
    expect(r.lastSuccessMs).toBe(T0 + 1_000);
    expect(r.lastAttemptMs).toBe(T0 + 1_000);
    expect(r.delivered).toBe(1_005);
    expect(r.failingSinceMs).toBeUndefined();
    expect(r.lastErrorClass).toBeUndefined();
    expect(r.lastError).toBeUndefined();
    expect(c.health.snapshot().state).toBe('idle');
  });

  it('keeps a saved expiry until the next success', () => {
    const expired: ConnectorRecord = { ...saved, expiredAtMs: T0 - H };
    const c = connector();
    c.health.restore(expired);
    expect(c.health.snapshot().state).toBe('expired');
    c.health.recordSuccess(1);
    expect(c.health.snapshot().state).toBe('idle');

    const d = connector();
    d.health.recordSuccess(1);
    d.health.restore(expired);
    expect(d.health.snapshot().state).toBe('idle');
  });

  it('a saved record of a connector that never failed merges cleanly', () => {
    const c = connector();
    c.health.restore({ name: 'amplitude', kind: 'amplitude', lastSuccessMs: T0 - H, delivered: 3 });
    expect(c.health.snapshot()).toMatchObject({ state: 'idle', lastSuccessMs: T0 - H, delivered: 3, secondsSinceLastSuccess: 3_600 });
  });
});

describe('HealthRegistry', () => {
  it('returns one connector per name, in registration order', () => {
    const reg = new HealthRegistry(new ManualClock(T0));
    const a = reg.connector('braze', 'braze');
    expect(reg.connector('braze', 'braze')).toBe(a);
    reg.connector('amplitude', 'amplitude');
    expect(reg.all().map((c) => c.name)).toEqual(['braze', 'amplitude']);
    expect(reg.snapshots().map((s) => s.state)).toEqual(['idle', 'idle']);
  });
});

/** a snapshot as ConnectorHealth makes it, at `now` */
function snap(over: Partial<ConnectorSnapshot> & { pending: number }): ConnectorSnapshot {
  return { name: 'amplitude', kind: 'amplitude', delivered: 0, state: over.pending > 0 ? 'healthy' : 'idle', ...over };
}

describe('dropWindowDecision', () => {
  const now = T0 + 100 * H;

  it('with a last success: fires exactly at the window, not 1 ms before, with cutoff = now - window', () => {
    const base = { pending: 10, oldestPendingAgeMs: 60 * H };
    expect(dropWindowDecision(snap({ ...base, lastSuccessMs: now - WINDOW + 1 }), now, WINDOW)).toEqual({ expire: false });
    const d = dropWindowDecision(snap({ ...base, lastSuccessMs: now - WINDOW }), now, WINDOW);
    expect(d.expire).toBe(true);
    expect(d.cutoffMs).toBe(now - WINDOW);
    expect(d.reason).toMatch(/48\.0 h/);
    expect(d.reason).toMatch(/10 events pending/);
  });

  it('with a last success, an old stuck event alone does not fire (the reference is the last success)', () => {
    const s = snap({ pending: 10, oldestPendingAgeMs: 60 * H, lastSuccessMs: now - H });
    expect(dropWindowDecision(s, now, WINDOW).expire).toBe(false);
  });

  it('never succeeded: measures from the oldest pending event, exactly at the window and not 1 ms before', () => {
    expect(dropWindowDecision(snap({ pending: 3, oldestPendingAgeMs: WINDOW - 1 }), now, WINDOW).expire).toBe(false);
    const d = dropWindowDecision(snap({ pending: 3, oldestPendingAgeMs: WINDOW, failingSinceMs: now - WINDOW, lastErrorClass: 'auth', state: 'failing' }), now, WINDOW);
    expect(d).toMatchObject({ expire: true, cutoffMs: now - WINDOW });
    expect(d.reason).toMatch(/never delivered/);
  });

  it('never succeeded and no age known: nothing to measure from, does not fire', () => {
    expect(dropWindowDecision(snap({ pending: 3 }), now, WINDOW).expire).toBe(false);
  });

  it('with a last success and no pending age: the last success alone decides', () => {
    expect(dropWindowDecision(snap({ pending: 3, lastSuccessMs: now - WINDOW }), now, WINDOW).expire).toBe(true);
    expect(dropWindowDecision(snap({ pending: 3, lastSuccessMs: now - WINDOW + 1 }), now, WINDOW).expire).toBe(false);
  });

  it('never fires with nothing pending, however long ago the last success was', () => {
    expect(dropWindowDecision(snap({ pending: 0, lastSuccessMs: now - 10 * WINDOW }), now, WINDOW)).toEqual({ expire: false });
    expect(dropWindowDecision(snap({ pending: 0 }), now, WINDOW)).toEqual({ expire: false });
    expect(dropWindowDecision(snap({ pending: 0, failingSinceMs: now - 10 * WINDOW, lastErrorClass: 'auth', state: 'failing' }), now, WINDOW).expire).toBe(false);
  });

  it('idle for days, then a backlog younger than the window: nothing is old enough to move, so it does not fire', () => {
    const s = snap({ pending: 5, lastSuccessMs: now - 3 * WINDOW, oldestPendingAgeMs: H });
    expect(dropWindowDecision(s, now, WINDOW).expire).toBe(false);
    expect(dropWindowDecision({ ...s, oldestPendingAgeMs: WINDOW }, now, WINDOW).expire).toBe(true);
  });

  it('works from a live ConnectorHealth on a ManualClock', () => {
    const c = connector();
    c.health.recordSuccess(1);
    c.clock.advance(H);
    c.pending({ count: 2, oldestMs: c.clock.now() });
    c.health.recordFailure('auth', 'Invalid API key');
    c.clock.advance(WINDOW - H - 1);
    expect(dropWindowDecision(c.health.snapshot(), c.clock.now(), WINDOW).expire).toBe(false);
    c.clock.advance(H + 1); // 48 h since the last success and since the backlog began
    expect(dropWindowDecision(c.health.snapshot(), c.clock.now(), WINDOW)).toMatchObject({ expire: true, cutoffMs: c.clock.now() - WINDOW });
  });

  it('scales with the window', () => {
    const w = 10_000;
    expect(dropWindowDecision(snap({ pending: 1, lastSuccessMs: now - w }), now, w).expire).toBe(true);
    expect(dropWindowDecision(snap({ pending: 1, lastSuccessMs: now - w + 1 }), now, w).expire).toBe(false);
  });
});

describe('warningLevel', () => {
  const now = T0 + 100 * H;
  const cases: Array<{ sinceSuccessMs: number; level: WarningLevel }> = [
    { sinceSuccessMs: 0, level: 'none' },
    { sinceSuccessMs: 24 * H - 1, level: 'none' },
    { sinceSuccessMs: 24 * H, level: '50%' },
    { sinceSuccessMs: 36 * H - 1, level: '50%' },
    { sinceSuccessMs: 36 * H, level: '75%' },
    { sinceSuccessMs: 44 * H - 1, level: '75%' },
    { sinceSuccessMs: 44 * H, level: '92%' },
    { sinceSuccessMs: 48 * H, level: '92%' },
    { sinceSuccessMs: 90 * H, level: '92%' },
  ];
  it.each(cases)('$sinceSuccessMs ms since the last success with events pending: $level', ({ sinceSuccessMs, level }) => {
    expect(warningLevel(snap({ pending: 1, lastSuccessMs: now - sinceSuccessMs }), now, WINDOW)).toBe(level);
  });

  it('is none with nothing pending', () => {
    expect(warningLevel(snap({ pending: 0, lastSuccessMs: now - 47 * H }), now, WINDOW)).toBe('none');
  });

  it('never succeeded: follows the oldest pending event', () => {
    expect(warningLevel(snap({ pending: 1, oldestPendingAgeMs: 37 * H }), now, WINDOW)).toBe('75%');
  });

  it('scales with the window (12 h window: 6 h, 9 h, 11 h)', () => {
    const w = 12 * H;
    expect(warningLevel(snap({ pending: 1, lastSuccessMs: now - 6 * H + 1 }), now, w)).toBe('none');
    expect(warningLevel(snap({ pending: 1, lastSuccessMs: now - 6 * H }), now, w)).toBe('50%');
    expect(warningLevel(snap({ pending: 1, lastSuccessMs: now - 9 * H }), now, w)).toBe('75%');
    expect(warningLevel(snap({ pending: 1, lastSuccessMs: now - 11 * H }), now, w)).toBe('92%');
  });
});

describe('restore is idempotent', () => {
  it('restoring the same saved record twice does not double the delivered count', async () => {
    const { ConnectorHealth } = await import('../../src/health/connector-health.js');
    const { ManualClock } = await import('../../src/clock.js');
    const h = new ConnectorHealth('amplitude', 'amplitude', new ManualClock(1_000));
    h.recordSuccess(5);
    const saved = { name: 'amplitude', kind: 'amplitude' as const, delivered: 100, lastSuccessMs: 500 };
    h.restore(saved);
    h.restore(saved);
    expect(h.record().delivered).toBe(105);
  });
});
