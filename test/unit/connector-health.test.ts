import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { FailureClass } from '../../src/errors.js';
import { DEAD_LETTER_REASONS, type DeadLetterReason } from '../../src/delivery/outcome.js';
import {
  ConnectorHealth,
  DEAD_LETTER_CLASS,
  HealthRegistry,
  LEGACY_INSTANCE,
  type ConnectorRecord,
  type HealthOptions,
  type InstanceRecord,
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
    deadLettered: 0,
    rejected: 0,
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
    c.health.restore({ name: 'amplitude', kind: 'amplitude', lastSuccessMs: T0 - H, delivered: 3, deadLettered: 0, rejected: 0 });
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
  return { name: 'amplitude', kind: 'amplitude', delivered: 0, deadLettered: 0, rejected: 0, recent: { windowMs: 300_000, delivered: 0, rejected: 0, rejectionRatio: 0 }, state: over.pending > 0 ? 'healthy' : 'idle', ...over };
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
    h.recordDeadLettered(2, 'rejected_by_destination');
    const saved = { name: 'amplitude', kind: 'amplitude' as const, delivered: 100, deadLettered: 10, rejected: 4, lastSuccessMs: 500 };
    h.restore(saved);
    h.restore(saved);
    expect(h.record()).toMatchObject({ delivered: 105, deadLettered: 12, rejected: 6 });
  });
});

const OPTIONS: HealthOptions = {
  instanceId: 'gw-a',
  instanceStaleMs: 120_000,
  rejectionWindowMs: 300_000,
  rejectionPercent: 50,
  rejectionMinEvents: 20,
  dropWindowMs: WINDOW,
};

function judged(probe: PendingProbe = { count: 0 }): { clock: ManualClock; health: ConnectorHealth } {
  const clock = new ManualClock(T0);
  const health = new ConnectorHealth('braze', 'braze', clock, OPTIONS);
  health.setPendingProbe(() => probe);
  return { clock, health };
}

describe('ConnectorHealth counts dead-lettering', () => {
  it('every reason of the closed set is classified', () => {
    expect(Object.keys(DEAD_LETTER_CLASS).sort()).toEqual([...DEAD_LETTER_REASONS].sort());
  });

  it('a destination rejecting every event turns the connector degraded, saying why, and counts it', () => {
    const { health } = judged();
    health.recordDeadLettered(25, 'rejected_by_destination');
    const s = health.snapshot();
    expect(s).toMatchObject({ state: 'degraded', deadLettered: 25, rejected: 25, recent: { windowMs: 300_000, delivered: 0, rejected: 25, rejectionRatio: 1 } });
    expect(s.stateReason).toMatch(/rejected 25 of the 25 events finished in the last 300 s \(100%/);
  });

  it('a 2xx that carried nothing (recordSuccess(0)) does not hide the rejections', () => {
    const { health } = judged();
    health.recordDeadLettered(30, 'invalid_fields');
    health.recordSuccess(0);
    expect(health.snapshot().state).toBe('degraded');
  });

  const cases: Array<{ name: string; delivered: number; rejected: Array<[number, DeadLetterReason]>; pending: number; state: ConnectorState }> = [
    { name: 'a few rejections among many deliveries: healthy', delivered: 100, rejected: [[19, 'rejected_by_destination']], pending: 3, state: 'healthy' },
    { name: 'exactly the threshold (10 of 20): degraded', delivered: 10, rejected: [[10, 'invalid_id']], pending: 0, state: 'degraded' },
    { name: 'just under the threshold (9 of 20): idle', delivered: 11, rejected: [[9, 'too_large_single']], pending: 0, state: 'idle' },
    { name: 'too few events to judge (19 of 19 rejected): idle', delivered: 0, rejected: [[19, 'rejected_unattributed']], pending: 0, state: 'idle' },
    { name: 'rejections of several destination reasons add up', delivered: 5, rejected: [[10, 'missing_fields'], [10, 'silenced_device']], pending: 0, state: 'degraded' },
    { name: 'Amplitude refusing events without naming them (halved down to one: invalid_event) counts against it', delivered: 0, rejected: [[25, 'invalid_event']], pending: 0, state: 'degraded' },
    { name: 'bad input the gateway refused before sending does not count against the destination', delivered: 1, rejected: [[500, 'no_identifier'], [500, 'not_json']], pending: 2, state: 'healthy' },
    { name: 'limits and the drop window do not count either', delivered: 0, rejected: [[100, 'daily_quota'], [100, 'drop_window_expired']], pending: 0, state: 'idle' },
  ];
  it.each(cases)('$name', ({ delivered, rejected, pending, state }) => {
    const { health } = judged({ count: pending, ...(pending > 0 ? { oldestMs: T0 } : {}) });
    if (delivered > 0) health.recordSuccess(delivered);
    for (const [n, reason] of rejected) health.recordDeadLettered(n, reason);
    expect(health.snapshot().state).toBe(state);
    expect(health.record().deadLettered).toBe(rejected.reduce((t, [n]) => t + n, 0));
  });

  it('the rejections age out of the window: degraded, then idle once the window has passed', () => {
    const { clock, health } = judged();
    health.recordDeadLettered(40, 'rejected_by_destination');
    expect(health.snapshot().state).toBe('degraded');
    clock.advance(200_000);
    expect(health.snapshot().state).toBe('degraded');
    clock.advance(100_001);
    const s = health.snapshot();
    expect(s.state).toBe('idle');
    expect(s.recent).toEqual({ windowMs: 300_000, delivered: 0, rejected: 0, rejectionRatio: 0 });
    expect(s.rejected).toBe(40); // the lifetime count stays
  });

  it('deliveries that follow bring the ratio under the threshold: healthy again', () => {
    const { clock, health } = judged({ count: 1, oldestMs: T0 });
    health.recordDeadLettered(30, 'rejected_by_destination');
    expect(health.snapshot().state).toBe('degraded');
    clock.advance(10_000);
    health.recordSuccess(31);
    expect(health.snapshot()).toMatchObject({ state: 'healthy', recent: { delivered: 31, rejected: 30 } });
  });

  it('refused credentials and the drop window still win over rejections', () => {
    const { health } = judged();
    health.recordDeadLettered(30, 'rejected_by_destination');
    health.recordFailure('auth', 'Invalid API key');
    expect(health.snapshot().state).toBe('failing');
    health.markExpired();
    expect(health.snapshot().state).toBe('expired');
  });

  it('ignores counts of zero or less', () => {
    const { health } = judged();
    health.recordDeadLettered(0, 'rejected_by_destination');
    health.recordDeadLettered(-3, 'rejected_by_destination');
    expect(health.record()).toMatchObject({ deadLettered: 0, rejected: 0 });
  });
});

describe('HealthRegistry merged view over instances', () => {
  function peer(over: Partial<InstanceRecord> & { instance: string; savedAt: number }): InstanceRecord {
    return { name: 'amplitude', kind: 'amplitude', delivered: 0, deadLettered: 0, rejected: 0, state: 'idle', pending: 0, ...over };
  }

  function registry() {
    const clock = new ManualClock(T0);
    const reg = new HealthRegistry(clock, OPTIONS);
    const own = reg.connector('amplitude', 'amplitude');
    let probe: PendingProbe = { count: 0 };
    own.setPendingProbe(() => probe);
    return { clock, reg, own, setPending: (p: PendingProbe) => (probe = p) };
  }

  it('merges: last success the latest, failing if a live instance is, pending summed, oldest pending the oldest, counts summed', () => {
    const { reg, own, setPending, clock } = registry();
    own.recordSuccess(100);
    clock.advance(60_000);
    setPending({ count: 5, oldestMs: T0 + 50_000 });
    reg.observe(
      peer({
        instance: 'gw-b',
        savedAt: T0 + 55_000,
        state: 'failing',
        lastErrorClass: 'auth',
        lastError: 'Invalid API key',
        failingSinceMs: T0 + 20_000,
        lastSuccessMs: T0 - H,
        lastAttemptMs: T0 + 54_000,
        pending: 7,
        oldestPendingMs: T0 + 10_000,
        delivered: 40,
        deadLettered: 3,
        rejected: 1,
      }),
    );
    const [m] = reg.merged();
    expect(m).toMatchObject({
      name: 'amplitude',
      state: 'failing',
      lastErrorClass: 'auth',
      lastError: 'Invalid API key',
      failingSinceMs: T0 + 20_000,
      lastSuccessMs: T0,
      lastAttemptMs: T0 + 54_000,
      secondsSinceLastSuccess: 60,
      pending: 12,
      oldestPendingAgeMs: 50_000,
      delivered: 140,
      deadLettered: 3,
      rejected: 1,
    });
    expect(m!.stateReason).toMatch(/failing on gw-b: Invalid API key/);
    expect(m!.instances.map((i) => [i.instance, i.self, i.stale, i.state, i.pending])).toEqual([
      ['gw-a', true, false, 'healthy', 5],
      ['gw-b', false, false, 'failing', 7],
    ]);
    // this instance's own snapshot (metrics, drop window) is untouched by the other's failure
    expect(reg.snapshots()[0]!.state).toBe('healthy');
  });

  it('an instance that stopped writing goes stale: it no longer keeps the view failing, nor its pending; its last success still counts', () => {
    const { reg, clock } = registry();
    reg.observe(peer({ instance: 'gw-b', savedAt: T0, state: 'failing', lastErrorClass: 'auth', failingSinceMs: T0 - H, pending: 9, oldestPendingMs: T0 - H, lastSuccessMs: T0 - 2 * H, delivered: 10 }));
    expect(reg.merged()[0]).toMatchObject({ state: 'failing', pending: 9 });
    clock.advance(120_000);
    expect(reg.merged()[0]!.state).toBe('failing'); // exactly at the limit: still live
    clock.advance(1);
    const m = reg.merged()[0]!;
    expect(m).toMatchObject({ state: 'idle', pending: 0, lastSuccessMs: T0 - 2 * H, delivered: 10 });
    expect(m.failingSinceMs).toBeUndefined();
    expect(m.lastErrorClass).toBeUndefined();
    expect(m.instances.find((i) => i.instance === 'gw-b')).toMatchObject({ stale: true, state: 'failing' });
  });

  it('keeps the newest record per instance, ignores its own instance, forgets on a tombstone', () => {
    const { reg } = registry();
    reg.observe(peer({ instance: 'gw-b', savedAt: T0, pending: 2 }));
    reg.observe(peer({ instance: 'gw-b', savedAt: T0 - 1, pending: 99 }));
    reg.observe(peer({ instance: 'gw-a', savedAt: T0, pending: 1_000 }));
    expect(reg.merged()[0]!.pending).toBe(2);
    expect(reg.peers()).toHaveLength(1);
    reg.forget('amplitude', 'gw-b');
    expect(reg.peers()).toHaveLength(0);
    expect(reg.merged()[0]!.instances).toHaveLength(1);
  });

  it('shows a connector only other instances report, and a record keyed by connector only as an unknown instance', () => {
    const { reg } = registry();
    reg.observe(peer({ name: 'braze', kind: 'braze', instance: 'gw-c', savedAt: T0, state: 'healthy', pending: 4 }));
    reg.observe({ name: 'braze', kind: 'braze', instance: LEGACY_INSTANCE, savedAt: T0 - 1_000, delivered: 7, deadLettered: 0, rejected: 0, lastSuccessMs: T0 - 1_000 });
    const braze = reg.merged().find((m) => m.name === 'braze')!;
    expect(braze).toMatchObject({ kind: 'braze', state: 'healthy', pending: 4, delivered: 7, lastSuccessMs: T0 - 1_000 });
    expect(braze.instances.map((i) => [i.instance, i.state])).toEqual([
      [LEGACY_INSTANCE, 'unknown'],
      ['gw-c', 'healthy'],
    ]);
  });

  it('weighs the live instances\' recent rejections together', () => {
    const { reg, own } = registry();
    own.recordDeadLettered(12, 'rejected_by_destination');
    expect(reg.snapshots()[0]!.state).toBe('idle'); // too few here alone
    reg.observe(peer({ instance: 'gw-b', savedAt: T0, recentDelivered: 2, recentRejected: 10 }));
    const m = reg.merged()[0]!;
    expect(m).toMatchObject({ state: 'degraded', recent: { delivered: 2, rejected: 22 } });
    expect(m.stateReason).toMatch(/rejected 22 of the 24 events/);
  });

  it('report(): ISO times next to the epoch ones, the answering instance, and the instances', () => {
    const { reg, own } = registry();
    own.recordSuccess(1);
    reg.observe(peer({ instance: 'gw-b', savedAt: T0 - 5_000, lastSuccessMs: T0 - 10_000 }));
    const r = reg.report();
    expect(r.now).toBe(new Date(T0).toISOString());
    expect(r.instance).toBe('gw-a');
    const c = r.connectors[0]!;
    expect(c.lastSuccess).toBe(new Date(T0).toISOString());
    expect(c.failingSince).toBeNull();
    expect(c.instances[1]).toMatchObject({ instance: 'gw-b', savedAt: new Date(T0 - 5_000).toISOString(), lastSuccess: new Date(T0 - 10_000).toISOString() });
    expect(JSON.parse(JSON.stringify(r))).toMatchObject({ connectors: [{ name: 'amplitude' }] });
  });

  it('the own record for the state topic carries the derived state, pending and recent outcomes', () => {
    const { own, setPending } = registry();
    setPending({ count: 3, oldestMs: T0 - 1_000 });
    own.recordSuccess(4);
    own.recordDeadLettered(2, 'invalid_fields');
    expect(own.instanceRecord('gw-a', T0)).toEqual({
      name: 'amplitude',
      kind: 'amplitude',
      instance: 'gw-a',
      savedAt: T0,
      state: 'healthy',
      pending: 3,
      oldestPendingMs: T0 - 1_000,
      lastSuccessMs: T0,
      lastAttemptMs: T0,
      delivered: 4,
      deadLettered: 2,
      rejected: 2,
      recentDelivered: 4,
      recentRejected: 2,
    });
  });

  it('uses the configuration module\'s defaults when built without settings', () => {
    const reg = new HealthRegistry(new ManualClock(T0));
    expect(reg.options).toMatchObject({ instanceStaleMs: 120_000, rejectionWindowMs: 300_000, rejectionPercent: 50, rejectionMinEvents: 20, dropWindowMs: WINDOW });
    expect(reg.instanceId.length).toBeGreaterThan(0);
  });
});
