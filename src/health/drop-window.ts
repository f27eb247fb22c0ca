import type { ConnectorSnapshot } from './connector-health.js';

export interface DropWindowDecision {
  expire: boolean;
  /** events first seen before this time (epoch ms) are older than the window and must be moved out */
  cutoffMs?: number;
  reason?: string;
}

/** How far a stuck connector is into its drop window, for escalating log lines (50 %, 75 %, ~92 %). */
export type WarningLevel = 'none' | '50%' | '75%' | '92%';

// For the 48 h window these are the 24 h / 36 h / 44 h steps of the alert ladder; as fractions so a
// shorter window (tests, the demo) escalates at the same points.
const LEVELS: ReadonlyArray<{ level: Exclude<WarningLevel, 'none'>; fraction: number }> = [
  { level: '92%', fraction: 44 / 48 },
  { level: '75%', fraction: 36 / 48 },
  { level: '50%', fraction: 24 / 48 },
];

/**
 * How long the connector has had events pending without a success, or undefined when the clock is
 * not running (nothing pending, or nothing to measure from).
 *
 * The reference is the last success; a connector that never succeeded is measured from its oldest
 * pending event. When both are known the smaller span wins: a connector idle for days after its
 * last success has only been *stuck* since its backlog began, and no event younger than the window
 * could be moved anyway (the leg moves only events first seen before the cutoff), so firing would
 * expire nothing and only cost the leg a pass.
 *
 * `oldestPendingAgeMs` is taken as of `nowMs`: callers take the snapshot and the time together.
 */
function stuckForMs(s: ConnectorSnapshot, nowMs: number): number | undefined {
  if (s.pending <= 0) return undefined;
  const sinceSuccess = s.lastSuccessMs !== undefined ? nowMs - s.lastSuccessMs : undefined;
  const oldest = s.oldestPendingAgeMs;
  if (sinceSuccess === undefined) return oldest;
  if (oldest === undefined) return sinceSuccess;
  return Math.min(sinceSuccess, oldest);
}

function hours(ms: number): string {
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/**
 * A connector that has gone `windowMs` without a successful delivery while events are pending:
 * events first seen before `cutoffMs` must be moved out. The reference time is the last success,
 * or (if the connector never succeeded) the oldest pending event's first-seen time. Exactly at
 * `windowMs` it fires; 1 ms before, it does not. Nothing pending never fires: an idle connector
 * loses nothing.
 */
export function dropWindowDecision(snapshot: ConnectorSnapshot, nowMs: number, windowMs: number): DropWindowDecision {
  const stuck = stuckForMs(snapshot, nowMs);
  if (stuck === undefined || stuck < windowMs) return { expire: false };
  const why =
    snapshot.lastSuccessMs !== undefined
      ? `no successful delivery for ${hours(nowMs - snapshot.lastSuccessMs)}`
      : `never delivered; oldest pending event first seen ${hours(stuck)} ago`;
  return {
    expire: true,
    cutoffMs: nowMs - windowMs,
    reason: `${why} with ${snapshot.pending} events pending (drop window ${hours(windowMs)})`,
  };
}

/** The highest warning step the connector has reached; 'none' below half the window or with nothing pending. */
export function warningLevel(snapshot: ConnectorSnapshot, nowMs: number, windowMs: number): WarningLevel {
  const stuck = stuckForMs(snapshot, nowMs);
  if (stuck === undefined) return 'none';
  for (const { level, fraction } of LEVELS) if (stuck >= windowMs * fraction) return level;
  return 'none';
}
