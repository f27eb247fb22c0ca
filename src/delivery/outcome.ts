import type { DeadLetter } from '../kafka/dead-letter.js';

/**
 * What a destination's answer means for the batch that was sent, as one value. Each destination
 * classifies its answers into a DeliveryOutcome with a pure function, and the delivery core alone
 * acts on it; no leg switches on a destination's own vocabulary.
 *
 * Items are named by their index in the batch that was sent.
 */

/**
 * Why an event was not delivered: the dead-letter `reason` header and the `reason` metric label.
 * A closed set, so dashboards, alerts and `replay --reason` can rely on it.
 */
export const DEAD_LETTER_REASONS = [
  // input the gateway cannot read or map (either leg)
  'not_json',
  'invalid_json',
  'invalid_utf8',
  'not_object',
  'too_deep',
  'string_too_long',
  'forbidden_key',
  'missing_id',
  'missing_event_type',
  'invalid_time',
  'invalid_user',
  'invalid_properties',
  'no_identity',
  'no_identifier',
  'no_event_type',
  'missing_name',
  'invalid_event',
  'unsupported_event',
  // refused by the destination
  'rejected_by_destination',
  'rejected_unattributed',
  'too_large',
  'too_large_single',
  'invalid_fields',
  'missing_fields',
  'invalid_id',
  'silenced_device',
  // limits and time
  'daily_quota',
  'rate_limit',
  'drop_window_expired',
  'no_retry_topic',
] as const;

export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

/** One item the destination refused for good. */
export interface ItemReject {
  index: number;
  reason: DeadLetterReason;
  error: string;
  /**
   * When only part of the item was refused (one Braze object of several, the others processed),
   * the dead letters of just those parts, written instead of the whole message, so that `replay`
   * re-sends exactly what was refused.
   */
  records?: DeadLetter[];
}

/** Which kind of trouble a failure is: decides the back-off and the connector's health. */
export type FailureKind =
  /** 5xx, timeout, network: the destination is unwell, try again later */
  | 'unavailable'
  /** 429 for the whole destination */
  | 'rate_limited'
  /** the key was refused */
  | 'auth'
  /** the gateway is pointed at the wrong place or sends what the destination never accepts (404, 405, an unexplained 4xx) */
  | 'configuration';

export type DeliveryOutcome =
  /** every item arrived. `holdForMs`: the destination's budget is spent for that long (X-RateLimit-Remaining: 0). */
  | { kind: 'delivered'; holdForMs?: number }
  /**
   * Some items were refused for good: dead-letter them. `othersDelivered`: the destination
   * processed the rest (a 2xx with per-item errors) and they must not be sent again; otherwise the
   * rest were not processed and are sent again (a 400 naming events).
   */
  | { kind: 'rejected'; rejects: ItemReject[]; othersDelivered: boolean; holdForMs?: number }
  /**
   * The request as a whole was refused for something one of its items carries (too large, or a
   * 400 that names no item): halve and send each half; an item alone gets dead-lettered with `reason`.
   */
  | { kind: 'split'; reason: DeadLetterReason; error: string }
  /**
   * Some items' ids are over a destination limit: `hold` are sent again after `holdMs`; `park`
   * (ids over a daily quota, named in `parkIds`) are parked with reason daily_quota where the leg
   * can park, dead-lettered where it cannot; the rest go again now.
   */
  | { kind: 'hold'; hold: number[]; holdMs: number; park: number[]; parkIds: { devices: string[]; users: string[] }; error: string }
  /** The destination as a whole must wait, then the same batch goes again. */
  | { kind: 'backoff'; failure: FailureKind; error: string; retryAfterMs?: number }
  /**
   * No retry soon can fix this (credentials, endpoint, a 4xx nobody explained): the connector turns
   * `failing`, the leg stops consuming with nothing committed or dropped, a probe goes out slowly,
   * and the leg resumes by itself when it succeeds.
   */
  | { kind: 'stop'; failure: 'auth' | 'configuration'; error: string };

/** A destination's answer as the core sees it: the outcome plus what to log and count. */
export interface Answer {
  outcome: DeliveryOutcome;
  /** HTTP status, 0 when none came back */
  status: number;
  durationMs: number;
  /** the answer's body (secrets scrubbed), for the one log line a failure earns */
  body: string;
}
