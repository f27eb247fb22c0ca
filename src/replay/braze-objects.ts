/**
 * The replay of single Braze objects (dead letters with `payload: braze-object`): they go straight
 * to Braze `/users/track`, each exactly as it was sent, batched under Braze's caps in the order they
 * were read, instead of back to the Amplitude events topic (which would send again the objects of
 * the same event Braze had accepted).
 */
import type { Answer } from '../delivery/outcome.js';
import { buildObjectsBody, type BrazeArrayName } from '../amplitude-to-braze/braze-dead-letter.js';
import { DestinationBackoff } from '../delivery/backoff.js';
import { systemClock, type Clock } from '../clock.js';

export interface ReplayObject<R> {
  array: BrazeArrayName;
  json: string;
  /** the dead letter it came from, handed back when Braze refuses it again */
  record: R;
}

export interface ObjectReplayLimits {
  maxPerArray: number;
  /** 0: per-array cap only */
  maxTotal: number;
  maxBytes: number;
}

export interface ObjectReplayResult<R> {
  sent: number;
  /** refused again by Braze: the caller writes them back to the dead-letter topic */
  rejected: Array<{ record: R; reason: string; error: string }>;
}

export interface ObjectReplayerDeps {
  send: (body: string) => Promise<Answer>;
  limits: ObjectReplayLimits;
  sleep?: (ms: number) => Promise<void>;
  /** attempts of one request through 5xx, 429 and network errors before the replay gives up; default 8 */
  maxAttempts?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** the clock `sleep` moves */
  clock?: Clock;
}

export class ObjectReplayFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ObjectReplayFailed';
  }
}

const defaultSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class BrazeObjectReplayer<R> {
  private pending: Array<ReplayObject<R>> = [];
  private readonly sleep: (ms: number) => Promise<void>;

  // the delivery core's policy: exponential with equal jitter, Braze's reset or Retry-After honoured
  private readonly backoff: DestinationBackoff;

  constructor(private readonly d: ObjectReplayerDeps) {
    this.sleep = d.sleep ?? defaultSleep;
    const maxMs = d.retryMaxMs ?? 8_000;
    this.backoff = new DestinationBackoff({ baseMs: d.retryBaseMs ?? 500, maxMs, stopRetryMs: maxMs }, d.clock ?? systemClock);
  }

  get size(): number {
    return this.pending.length;
  }

  /** True once a full request's worth is waiting. */
  get full(): boolean {
    const cap = this.d.limits.maxTotal > 0 ? this.d.limits.maxTotal : this.d.limits.maxPerArray;
    return this.pending.length >= cap;
  }

  add(o: ReplayObject<R>): void {
    this.pending.push(o);
  }

  /** Sends everything added so far. Throws ObjectReplayFailed when Braze cannot be reached or refuses the key. */
  async flush(): Promise<ObjectReplayResult<R>> {
    const result: ObjectReplayResult<R> = { sent: 0, rejected: [] };
    const all = this.pending;
    this.pending = [];
    let at = 0;
    while (at < all.length) {
      const batch = this.take(all, at);
      at += batch.length;
      await this.sendBatch(batch, result);
    }
    return result;
  }

  /** The longest run from `at` that fits the caps, in order (at least one object). */
  private take(all: Array<ReplayObject<R>>, at: number): Array<ReplayObject<R>> {
    const { maxPerArray, maxTotal, maxBytes } = this.d.limits;
    const per: Record<BrazeArrayName, number> = { attributes: 0, events: 0, purchases: 0 };
    let bytes = 40;
    const out: Array<ReplayObject<R>> = [];
    for (let i = at; i < all.length; i++) {
      const o = all[i]!;
      if (out.length > 0) {
        if (per[o.array] + 1 > maxPerArray) break;
        if (maxTotal > 0 && out.length + 1 > maxTotal) break;
        if (bytes + o.json.length + 1 > maxBytes) break;
      }
      per[o.array]++;
      bytes += o.json.length + 1;
      out.push(o);
    }
    return out;
  }

  private async sendBatch(batch: Array<ReplayObject<R>>, result: ObjectReplayResult<R>): Promise<void> {
    const maxAttempts = this.d.maxAttempts ?? 8;
    let objects = batch;
    for (let attempt = 1; objects.length > 0; attempt++) {
      const { body, owners } = buildObjectsBody(objects);
      const ticket = this.backoff.begin();
      const answer = await this.d.send(body);
      const o = answer.outcome;
      if (o.kind !== 'backoff' && o.kind !== 'hold') this.backoff.onSuccess();
      switch (o.kind) {
        case 'delivered':
          result.sent += objects.length;
          return;
        case 'rejected': {
          const bad = new Map<number, { reason: string; error: string }>();
          for (const r of o.rejects) {
            const owner = owners[r.index];
            if (owner !== undefined && !bad.has(owner)) bad.set(owner, { reason: r.reason, error: r.error });
          }
          if (bad.size === 0) {
            await this.halve(objects, result, 'rejected_by_destination', 'refused objects the request does not hold');
            return;
          }
          for (const [i, r] of bad) result.rejected.push({ record: objects[i]!.record, ...r });
          const rest = objects.filter((_, i) => !bad.has(i));
          if (o.othersDelivered) {
            result.sent += rest.length;
            return;
          }
          objects = rest;
          attempt = 0;
          continue;
        }
        case 'split':
          await this.halve(objects, result, o.reason, o.error);
          return;
        case 'stop':
          throw new ObjectReplayFailed(`Braze refused the replay (${o.failure}): ${o.error}`);
        case 'backoff':
        case 'hold': {
          if (attempt >= maxAttempts) throw new ObjectReplayFailed(`Braze still unavailable after ${attempt} attempts: ${o.error}`);
          const asked = o.kind === 'backoff' ? o.retryAfterMs : o.holdMs;
          const wait = this.backoff.onFailure(ticket, asked !== undefined ? { retryAfterMs: asked } : {});
          await this.sleep(Math.min(wait, 60_000));
          continue;
        }
      }
    }
  }

  private async halve(objects: Array<ReplayObject<R>>, result: ObjectReplayResult<R>, reason: string, error: string): Promise<void> {
    if (objects.length === 1) {
      result.rejected.push({ record: objects[0]!.record, reason, error });
      return;
    }
    const mid = Math.ceil(objects.length / 2);
    await this.sendBatch(objects.slice(0, mid), result);
    await this.sendBatch(objects.slice(mid), result);
  }
}
