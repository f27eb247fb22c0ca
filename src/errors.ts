/**
 * The class of a failure as connector health records it. The delivery core decides what to do
 * from a DeliveryOutcome (src/delivery/outcome.ts); this is the health record's vocabulary, and
 * Amplitude's response parser's, which the core turns into an outcome.
 */
export type FailureClass =
  /** transient (5xx, timeout, network): back off with jitter and try again */
  | 'retryable'
  /** the destination asked us to slow down (429): back off the whole destination */
  | 'rate_limited'
  /** credentials refused (401/403, Amplitude "Invalid API key"): stop the leg, keep everything, retry slowly */
  | 'auth'
  /** this event can never succeed as it is: dead-letter it and move on */
  | 'invalid_input'
  /** a configuration or programming error the gateway cannot recover from */
  | 'fatal';

export interface Failure {
  readonly class: FailureClass;
  /** short machine-readable reason, used as the dead-letter `reason` header and a metric label */
  readonly reason: string;
  readonly message: string;
  readonly status?: number;
  /** how long the destination asked us to wait, when it said so */
  readonly retryAfterMs?: number;
}

export function failure(cls: FailureClass, reason: string, message: string, extra: Partial<Pick<Failure, 'status' | 'retryAfterMs'>> = {}): Failure {
  return { class: cls, reason, message, ...extra };
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
