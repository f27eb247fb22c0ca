import type { Clock } from '../clock.js';

export interface BackoffSettings {
  /** first delay after a failure */
  baseMs: number;
  /** longest delay between two probes of an unwell destination */
  maxMs: number;
  /** delay between probes of a destination that refused the credentials or the configuration */
  stopRetryMs: number;
}

/**
 * One back-off state per destination, not per request: when a destination fails, every request
 * to it waits, so a storm of 429s or 5xx is met with fewer requests rather than with each request
 * retrying on its own schedule.
 *
 * - Requests in flight together when the destination fails are one failure, not many: each
 *   request takes a ticket when it starts, and a failure only counts as a new step when no other
 *   failure was counted since its ticket (otherwise a wave of 16 requests would climb 16 steps).
 * - While the destination is failing, the core sends one probe request at a time (`failing`), so
 *   an outage costs one request per interval, and the cap can stay short: recovery comes within
 *   one interval of the outage's end, and the first success resets the steps.
 */
export class DestinationBackoff {
  private steps = 0;
  private ticket = 0;
  private pausedUntil = 0;

  constructor(
    private readonly opts: BackoffSettings,
    private readonly clock: Clock,
    private readonly random: () => number = Math.random,
  ) {}

  /** ms to wait before the next request may go; 0 when free */
  waitMs(): number {
    return Math.max(0, this.pausedUntil - this.clock.now());
  }

  /** true from a failure until the next success: requests go one at a time, as probes */
  get failing(): boolean {
    return this.steps > 0;
  }

  get failures(): number {
    return this.steps;
  }

  /** Taken as a request starts; handed back to onFailure. */
  begin(): number {
    return this.ticket;
  }

  onSuccess(): void {
    this.steps = 0;
  }

  /** Hold every request until `untilMs` (clock time), as a destination's rate-limit reset asks. */
  holdUntil(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
  }

  /**
   * Records a failed request started with `ticket`, and returns how long the destination now waits.
   * `stopped`: credentials or configuration were refused; the probe interval is the slow one.
   */
  onFailure(ticket: number, opts: { stopped?: boolean; retryAfterMs?: number } = {}): number {
    const now = this.clock.now();
    const newStep = ticket === this.ticket;
    if (newStep) {
      this.steps++;
      this.ticket++;
      let delay: number;
      if (opts.stopped) {
        delay = this.opts.stopRetryMs;
      } else {
        const exp = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(this.steps - 1, 30));
        // "equal jitter": never less than half the exponential step, so back-off still grows
        delay = Math.floor(exp / 2 + this.random() * (exp / 2));
      }
      this.holdUntil(now + delay);
    }
    if (opts.retryAfterMs !== undefined && opts.retryAfterMs >= 0) {
      // The destination named a time: honour it, with a little jitter so many gateways don't return at once.
      this.holdUntil(now + opts.retryAfterMs + Math.floor(this.random() * Math.min(250, this.opts.baseMs)));
    }
    return this.waitMs();
  }
}

type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | undefined {
  const direct = headers[name];
  if (direct !== undefined) return Array.isArray(direct) ? direct[0] : direct;
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  return undefined;
}

/**
 * The one parser of a destination's "wait" headers, for every destination and the Kafka writers:
 * `Retry-After` (delta-seconds or an HTTP date), else `X-RateLimit-Reset` (epoch seconds, or a
 * small relative number some servers send). Returns ms from `nowMs`, or undefined when absent.
 */
export function retryAfterFromHeaders(headers: Headers, nowMs: number): number | undefined {
  const ra = header(headers, 'retry-after');
  if (ra !== undefined && ra.trim() !== '') {
    const s = ra.trim();
    if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
    const date = Date.parse(s);
    if (!Number.isNaN(date)) return Math.max(0, date - nowMs);
  }
  const reset = header(headers, 'x-ratelimit-reset');
  if (reset !== undefined && reset.trim() !== '') {
    const secs = Number(reset);
    if (Number.isFinite(secs) && secs > 0) {
      const ms = secs > 1e9 ? secs * 1000 - nowMs : secs * 1000;
      return Math.max(0, Math.round(ms));
    }
  }
  return undefined;
}
