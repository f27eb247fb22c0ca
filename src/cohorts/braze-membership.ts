/**
 * Cohort membership and trait writes to Braze, and what the gateway does with each answer.
 *
 * Two transports:
 * - `track` (default): `/users/track` attributes objects through the one BrazeClient every writer
 *   shares (its connection pool and the workspace's request budget), `{<identifier>,
 *   "<COHORT_ATTRIBUTE>": {"add": ["<cohort_id>"]}, "_update_existing_only": true}` and `{"remove": [...]}`;
 *   cohort import never creates users, so `_update_existing_only` is always true there. Trait writes
 *   use the same client without that flag (they do create users).
 * - `partner`: Braze's partner cohort API (braze-cohort-import.md §4), at most 1,000 ids a call.
 *
 * Every answer is a DeliveryOutcome (src/delivery/outcome.ts), acted on here:
 * - `delivered`: the items are accepted (and move into the snapshot);
 * - `rejected`: the named items are refused for good: counted and skipped; they stay out of the
 *   snapshot (an add) or in it (a remove), so the next run tries them again and counts them again;
 *   the others are accepted (`othersDelivered`) or sent again;
 * - `split`: halve; an item alone is refused like a rejected one;
 * - `backoff` / `hold`: wait (Retry-After or exponential back-off) and send the same request again,
 *   up to COHORT_BRAZE_MAX_RETRIES times, then the run fails;
 * - `stop`: the run fails at once (bad key, wrong endpoint).
 * A failed run moves nothing: its snapshot stays where it was and the next run sends the change again.
 */
import type { Answer, DeliveryOutcome, FailureKind } from '../delivery/outcome.js';
import { HttpSender } from '../delivery/http-sender.js';
import { DestinationBackoff, retryAfterFromHeaders } from '../delivery/backoff.js';
import { systemClock, type Clock } from '../clock.js';
import { scrubSecrets } from '../observability/logger.js';
import { keyToIdentifier, type BrazeIdentifierObject } from './cohort-identifiers.js';

/** What a cohort sync needs of the shared Braze client (src/amplitude-to-braze/braze-client.ts). */
export interface TrackPort {
  track(body: string): Promise<Answer>;
}

export type MembershipOp = 'add' | 'remove';

/** How one kind of write is encoded and posted. */
export interface Transport<T> {
  readonly name: string;
  readonly maxPerRequest: number;
  encode(items: readonly T[]): string;
  post(body: string): Promise<Answer>;
}

export function trackMembershipTransport(track: TrackPort, o: { cohortId: string; attribute: string; op: MembershipOp; maxPerRequest: number }): Transport<string> {
  const op = { [o.op]: [o.cohortId] };
  return {
    name: 'track',
    maxPerRequest: o.maxPerRequest,
    encode: (keys) => JSON.stringify({ attributes: keys.map((k) => ({ ...keyToIdentifier(k), [o.attribute]: op, _update_existing_only: true })) }),
    post: (body) => track.track(body),
  };
}

export interface TraitWrite {
  /** the user's external_id (traits go by user id only) */
  userId: string;
  values: Record<string, string | number | boolean | null>;
}

export function trackTraitTransport(track: TrackPort, maxPerRequest: number): Transport<TraitWrite> {
  return {
    name: 'track',
    maxPerRequest,
    encode: (items) => JSON.stringify({ attributes: items.map((t) => ({ external_id: t.userId, ...t.values })) }),
    post: (body) => track.track(body),
  };
}

// ---------------------------------------------------------------------------------------------
// The partner cohort API

export const PARTNER_MAX_IDS = 1_000;

export interface PartnerSettings {
  restEndpoint: string;
  partnerApiKey: string;
  dataImportKey: string;
  /** the path segment: `/partners/<name>/cohorts` (Amplitude's is assumed to be `amplitude`) */
  partnerName: string;
  requestTimeoutMs: number;
}

/** The partner API's answers (braze-cohort-import.md §4) as outcomes. */
export function classifyPartnerResponse(status: number, headers: Record<string, string | string[] | undefined>, text: string, nowMs: number): DeliveryOutcome {
  let message = text.slice(0, 300);
  try {
    const b: unknown = JSON.parse(text);
    if (b !== null && typeof b === 'object') {
      const o = b as Record<string, unknown>;
      const m = o.message ?? o.error ?? o.errors;
      if (m !== undefined) message = typeof m === 'string' ? m : JSON.stringify(m).slice(0, 300);
    }
  } catch {
    // not JSON: the text itself
  }
  if (status >= 200 && status < 300) return { kind: 'delivered' };
  const wait = retryAfterFromHeaders(headers, nowMs);
  const retry = wait !== undefined ? { retryAfterMs: wait } : {};
  if (status === 401 || status === 403) return { kind: 'stop', failure: 'auth', error: `Braze partner API refused the credentials (${status}): ${message}` };
  if (status === 400 && /only 1,?000/i.test(message)) return { kind: 'split', reason: 'too_large', error: `Braze partner API: ${message}` };
  if (status === 400) return { kind: 'stop', failure: 'configuration', error: `Braze partner API refused the request (400): ${message}` };
  if (status === 423) return { kind: 'backoff', failure: 'unavailable', error: `Braze partner API: cohort locked (423): ${message}`, ...retry };
  if (status === 429) return { kind: 'backoff', failure: 'rate_limited', error: `Braze partner API rate limit: ${message}`, ...retry };
  if (status === 0 || status === 408 || status >= 500) return { kind: 'backoff', failure: 'unavailable', error: status === 0 ? `Braze partner API unreachable: ${message}` : `Braze partner API answered ${status}: ${message}`, ...retry };
  return { kind: 'stop', failure: 'configuration', error: `Braze partner API answered ${status}, which no retry can fix: ${message}` };
}

export class PartnerClient {
  private readonly sender: HttpSender;

  constructor(private readonly s: PartnerSettings) {
    this.sender = new HttpSender(s.restEndpoint, { connections: 4, timeoutMs: s.requestTimeoutMs, userAgent: 'amplitude-braze-gateway/0.1' });
  }

  async post(path: 'cohorts' | 'cohorts/users', payload: Record<string, unknown>): Promise<Answer> {
    const body = JSON.stringify({ partner_api_key: this.s.partnerApiKey, client_secret: this.s.dataImportKey, ...payload });
    const res = await this.sender.post(`/partners/${encodeURIComponent(this.s.partnerName)}/${path}`, body, {});
    const text = scrubSecrets(res.networkError ?? res.text, [this.s.partnerApiKey, this.s.dataImportKey]);
    return { outcome: classifyPartnerResponse(res.status, res.headers, text, Date.now()), status: res.status, durationMs: res.durationMs, body: text };
  }

  /** creates or renames the cohort on Braze's side */
  nameCohort(cohortId: string, name: string, createdAtMs: number): Promise<Answer> {
    return this.post('cohorts', { cohort_id: cohortId, name, created_at: new Date(createdAtMs).toISOString() });
  }

  close(): Promise<void> {
    return this.sender.close();
  }
}

/** `{user_ids, aliases}` of one change set; members whose key has no partner field are left to the caller (resolveMember refuses them). */
export function partnerChange(keys: readonly string[], op: MembershipOp): Record<string, unknown> {
  const userIds: string[] = [];
  const aliases: Array<{ alias_name: string; alias_label: string }> = [];
  for (const k of keys) {
    const id: BrazeIdentifierObject = keyToIdentifier(k);
    if ('external_id' in id) userIds.push(id.external_id);
    else if ('user_alias' in id) aliases.push(id.user_alias);
  }
  return { ...(userIds.length ? { user_ids: userIds } : {}), ...(aliases.length ? { aliases } : {}), ...(op === 'remove' ? { should_remove: true } : {}) };
}

export function partnerMembershipTransport(client: PartnerClient, cohortId: string, op: MembershipOp): Transport<string> {
  return {
    name: 'partner',
    maxPerRequest: PARTNER_MAX_IDS,
    encode: (keys) => JSON.stringify({ cohort_id: cohortId, cohort_changes: [partnerChange(keys, op)] }),
    post: async (body) => client.post('cohorts/users', JSON.parse(body) as Record<string, unknown>),
  };
}

// ---------------------------------------------------------------------------------------------
// Sending and acting on outcomes

/** A run-failing answer: no retry within the run fixes it. */
export class WriteFailure extends Error {
  constructor(
    readonly failure: FailureKind,
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'WriteFailure';
  }
}

export interface WriteOptions {
  /** requests in flight at once (the shared client's window still paces them) */
  concurrency: number;
  /** back-offs within one run before it fails */
  maxRetries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  sleep?: (ms: number) => Promise<void>;
  /** the clock `sleep` moves (the back-off's waits are measured on it) */
  clock?: Clock;
  /** each answer, for metrics and logs */
  onAnswer?: (a: Answer, items: number) => void;
}

export interface WriteResult {
  /** 1 where the item was accepted */
  accepted: Uint8Array;
  acceptedCount: number;
  /** item index -> Braze's reason, for items refused for good */
  rejected: Map<number, string>;
  requests: number;
}

const realSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Sends every item, in requests of at most `maxPerRequest`, and resolves with what was accepted
 * and what was refused; rejects with a WriteFailure when an answer stops the run (a `stop`, or a
 * back-off beyond `maxRetries`). Requests already accepted before that stay accepted (the caller
 * may keep them), which is harmless: adding or removing a cohort id twice is idempotent in Braze.
 */
export async function writeAll<T>(items: readonly T[], t: Transport<T>, o: WriteOptions): Promise<WriteResult> {
  const sleep = o.sleep ?? realSleep;
  const accepted = new Uint8Array(items.length);
  const rejected = new Map<number, string>();
  const queue: number[][] = [];
  for (let i = 0; i < items.length; i += t.maxPerRequest) {
    const batch: number[] = [];
    for (let k = i; k < Math.min(items.length, i + t.maxPerRequest); k++) batch.push(k);
    queue.push(batch);
  }
  let failure: WriteFailure | undefined;
  // The delivery core's back-off policy: requests failing together are one step, Braze's reset or
  // Retry-After is honoured, and while Braze is failing one request at a time probes it.
  const clock = o.clock ?? systemClock;
  const backoff = new DestinationBackoff({ baseMs: o.retryBaseMs, maxMs: o.retryMaxMs, stopRetryMs: o.retryMaxMs }, clock);
  let probing = false;
  let requests = 0;
  let acceptedCount = 0;
  const accept = (idx: number): void => {
    if (accepted[idx] === 0) {
      accepted[idx] = 1;
      acceptedCount++;
    }
  };

  const worker = async (): Promise<void> => {
    while (failure === undefined) {
      const batch = queue.shift();
      if (batch === undefined) return;
      let attempts = 0;
      for (;;) {
        const wait = backoff.waitMs();
        if (wait > 0) await sleep(wait);
        if (failure !== undefined) return;
        if (backoff.waitMs() > 0) continue;
        if (backoff.failing && probing) {
          await sleep(Math.min(50, o.retryBaseMs));
          continue;
        }
        const probe = backoff.failing;
        if (probe) probing = true;
        const ticket = backoff.begin();
        const answer = await t.post(t.encode(batch.map((i) => items[i]!))).finally(() => {
          if (probe) probing = false;
        });
        requests++;
        o.onAnswer?.(answer, batch.length);
        const out = answer.outcome;
        if (out.kind !== 'backoff' && out.kind !== 'hold' && out.kind !== 'stop') backoff.onSuccess();
        if (out.kind === 'delivered') {
          for (const i of batch) accept(i);
          if (out.holdForMs) backoff.holdUntil(clock.now() + out.holdForMs);
          break;
        }
        if (out.kind === 'rejected') {
          const refused = new Set<number>();
          for (const r of out.rejects) {
            const idx = batch[r.index];
            if (idx === undefined) continue;
            refused.add(idx);
            rejected.set(idx, r.error);
          }
          const rest = batch.filter((i) => !refused.has(i));
          if (out.othersDelivered) for (const i of rest) accept(i);
          else if (rest.length > 0) queue.push(rest);
          if (out.holdForMs) backoff.holdUntil(clock.now() + out.holdForMs);
          break;
        }
        if (out.kind === 'split') {
          if (batch.length === 1) rejected.set(batch[0]!, out.error);
          else {
            const half = Math.ceil(batch.length / 2);
            queue.push(batch.slice(0, half), batch.slice(half));
          }
          break;
        }
        if (out.kind === 'stop') {
          failure ??= new WriteFailure(out.failure, out.error, answer.status);
          return;
        }
        // backoff, hold: wait and send the same request again, a bounded number of times
        attempts++;
        const error = out.error;
        const failureKind: FailureKind = out.kind === 'backoff' ? out.failure : 'rate_limited';
        if (attempts > o.maxRetries) {
          failure ??= new WriteFailure(failureKind, `${error} (gave up after ${o.maxRetries} retries within the run)`, answer.status);
          return;
        }
        const asked = out.kind === 'backoff' ? out.retryAfterMs : out.holdMs;
        backoff.onFailure(ticket, asked !== undefined ? { retryAfterMs: Math.min(asked, o.retryMaxMs * 4) } : {});
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency, queue.length)) }, () => worker()));
  if (failure !== undefined) throw failure;
  return { accepted, acceptedCount, rejected, requests };
}
