import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';

export type ConnectorState = 'healthy' | 'idle' | 'degraded' | 'failing' | 'expired';
export type ConnectorKind = 'braze' | 'amplitude' | 'cohorts';

export interface PendingProbe {
  count: number;
  /** when the oldest undelivered event was first seen by the gateway (ms), if any is pending */
  oldestMs?: number;
}

/** What is persisted and shown on /connectors. Times are epoch ms, absent when never happened. */
export interface ConnectorRecord {
  name: string;
  kind: ConnectorKind;
  lastSuccessMs?: number;
  lastAttemptMs?: number;
  lastErrorClass?: FailureClass;
  lastError?: string;
  failingSinceMs?: number;
  /** set when the drop window moved events away; cleared by the next success */
  expiredAtMs?: number;
  delivered: number;
}

export interface ConnectorSnapshot extends ConnectorRecord {
  state: ConnectorState;
  pending: number;
  oldestPendingAgeMs?: number;
  secondsSinceLastSuccess?: number;
}

/**
 * The health of one connector (one destination account). Pure bookkeeping over an injected
 * clock; the legs report attempts and outcomes, and the state is derived, never set by hand,
 * so it cannot disagree with the facts it is made from.
 */
export class ConnectorHealth {
  private rec: ConnectorRecord;
  private probe: () => PendingProbe = () => ({ count: 0 });
  private deliveredSinceStart = 0;

  constructor(
    name: string,
    kind: ConnectorKind,
    private readonly clock: Clock,
  ) {
    this.rec = { name, kind, delivered: 0 };
  }

  get name(): string {
    return this.rec.name;
  }

  setPendingProbe(probe: () => PendingProbe): void {
    this.probe = probe;
  }

  recordAttempt(): void {
    this.rec.lastAttemptMs = this.clock.now();
  }

  recordSuccess(delivered: number): void {
    const now = this.clock.now();
    this.rec.lastAttemptMs = now;
    this.rec.lastSuccessMs = now;
    this.rec.delivered += delivered;
    this.deliveredSinceStart += delivered;
    delete this.rec.failingSinceMs;
    delete this.rec.lastErrorClass;
    delete this.rec.lastError;
    delete this.rec.expiredAtMs;
  }

  recordFailure(cls: FailureClass, message: string): void {
    const now = this.clock.now();
    this.rec.lastAttemptMs = now;
    this.rec.lastErrorClass = cls;
    this.rec.lastError = message.slice(0, 500);
    this.rec.failingSinceMs ??= now;
  }

  markExpired(): void {
    this.rec.expiredAtMs = this.clock.now();
  }

  /** Restores persisted facts (after a restart) without losing what happened since start-up. */
  restore(saved: ConnectorRecord): void {
    const cur = this.rec;
    const newer = (a?: number, b?: number) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));
    this.rec = {
      ...(cur.lastSuccessMs === undefined ? saved : {}), // a success since start-up ends the saved failure/expiry
      ...cur,
      lastSuccessMs: newer(saved.lastSuccessMs, cur.lastSuccessMs),
      lastAttemptMs: newer(saved.lastAttemptMs, cur.lastAttemptMs),
      // saved + this process's own count, so restoring the same record twice does not double it
      delivered: saved.delivered + this.deliveredSinceStart,
    };
    if (cur.lastSuccessMs === undefined && saved.failingSinceMs !== undefined) {
      this.rec.failingSinceMs = saved.failingSinceMs;
      if (saved.lastErrorClass !== undefined && cur.lastErrorClass === undefined) this.rec.lastErrorClass = saved.lastErrorClass;
    }
    if (cur.lastSuccessMs === undefined && saved.expiredAtMs !== undefined) this.rec.expiredAtMs = saved.expiredAtMs;
  }

  record(): ConnectorRecord {
    return { ...this.rec };
  }

  snapshot(): ConnectorSnapshot {
    const now = this.clock.now();
    const p = this.probe();
    const r = this.rec;
    let state: ConnectorState;
    if (r.expiredAtMs !== undefined) state = 'expired';
    else if (r.lastErrorClass === 'auth' || r.lastErrorClass === 'fatal') state = 'failing';
    else if (r.lastErrorClass !== undefined) state = 'degraded';
    else if (p.count === 0) state = 'idle';
    else state = 'healthy';
    return {
      ...r,
      state,
      pending: p.count,
      ...(p.oldestMs !== undefined ? { oldestPendingAgeMs: Math.max(0, now - p.oldestMs) } : {}),
      ...(r.lastSuccessMs !== undefined ? { secondsSinceLastSuccess: (now - r.lastSuccessMs) / 1000 } : {}),
    };
  }
}

export class HealthRegistry {
  private readonly connectors = new Map<string, ConnectorHealth>();

  constructor(readonly clock: Clock) {}

  connector(name: string, kind: ConnectorKind): ConnectorHealth {
    let c = this.connectors.get(name);
    if (!c) {
      c = new ConnectorHealth(name, kind, this.clock);
      this.connectors.set(name, c);
    }
    return c;
  }

  all(): ConnectorHealth[] {
    return [...this.connectors.values()];
  }

  snapshots(): ConnectorSnapshot[] {
    return this.all().map((c) => c.snapshot());
  }
}
