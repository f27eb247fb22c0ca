import type { Clock } from '../clock.js';
import type { FailureClass } from '../errors.js';

/**
 * One back-off state per destination, not per request: when a destination says "slow down" or
 * fails, every request to it waits, so a storm of 429s or 5xx is met with fewer requests rather
 * than with each request retrying on its own schedule.
 */
export class DestinationBackoff {
  private consecutive = 0;
  private pausedUntil = 0;

  constructor(
    private readonly opts: { baseMs: number; maxMs: number; authRetryMs: number },
    private readonly clock: Clock,
    private readonly random: () => number = Math.random,
  ) {}

  /** ms to wait before the next request may go; 0 when free */
  waitMs(): number {
    return Math.max(0, this.pausedUntil - this.clock.now());
  }

  get failures(): number {
    return this.consecutive;
  }

  onSuccess(): void {
    this.consecutive = 0;
  }

  /** Hold every request until `untilMs`, as a destination's rate-limit reset asks. */
  holdUntil(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
  }

  /** Records a failure and returns the delay chosen. */
  onFailure(cls: FailureClass, retryAfterMs?: number): number {
    this.consecutive++;
    let delay: number;
    if (cls === 'auth' || cls === 'fatal') {
      delay = this.opts.authRetryMs;
    } else if (retryAfterMs !== undefined && retryAfterMs >= 0) {
      // The destination named a time: honour it, with a little jitter so many gateways don't return at once.
      delay = Math.min(this.opts.maxMs, retryAfterMs) + Math.floor(this.random() * Math.min(250, this.opts.baseMs));
    } else {
      const exp = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(this.consecutive - 1, 30));
      // "equal jitter": never less than half the exponential step, so back-off still grows
      delay = Math.floor(exp / 2 + this.random() * (exp / 2));
    }
    this.holdUntil(this.clock.now() + delay);
    return delay;
  }
}

/** Parses `Retry-After` (seconds or an HTTP date) and `X-RateLimit-Reset` (epoch seconds) into a wait in ms. */
export function retryAfterFromHeaders(headers: Record<string, string | string[] | undefined>, nowMs: number): number | undefined {
  const get = (name: string): string | undefined => {
    const v = headers[name] ?? headers[name.toLowerCase()];
    return Array.isArray(v) ? v[0] : v;
  };
  const ra = get('retry-after');
  if (ra !== undefined && ra.trim() !== '') {
    const secs = Number(ra);
    if (Number.isFinite(secs) && secs >= 0) return Math.round(secs * 1000);
    const date = Date.parse(ra);
    if (!Number.isNaN(date)) return Math.max(0, date - nowMs);
  }
  const reset = get('x-ratelimit-reset');
  if (reset !== undefined && reset.trim() !== '') {
    const secs = Number(reset);
    if (Number.isFinite(secs) && secs > 0) {
      // Reset is an epoch time in seconds; a small number would be a relative value some servers send.
      const ms = secs > 1e9 ? secs * 1000 - nowMs : secs * 1000;
      return Math.max(0, Math.round(ms));
    }
  }
  return undefined;
}
