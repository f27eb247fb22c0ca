/**
 * Traits and computations kept in Braze as custom attributes of the same name (DESIGN.md):
 * TRAIT_PROPERTIES come with the cohort export (requested as `propKeys`, so they cost no extra
 * quota) and with webhook pushes that carry them, TRAIT_COMPUTATIONS from the User Profile API
 * (one call per member with a user id, paced under its 600 requests a minute). Identified by user
 * id only (Braze `external_id`; these writes do create users, so `_update_existing_only` is not
 * sent), for users active in the last TRAIT_ACTIVE_DAYS days (by the `last_used` property where
 * the export or profile carries it; a user without one counts as active).
 *
 * An attribute is sent only when its own value changed since it was last sent, so one changed
 * property does not resend the others. A value that is missing (an empty export column, a null
 * computation) is never written: Amplitude's CSV cannot tell "unset" from "", and writing "" or
 * null would blank the attribute in Braze, or create a profile with nothing in it.
 *
 * The state is one member-set entry per user: `<user_id>\u0001` followed by one 10-character
 * token per attribute last sent, 4 characters naming the attribute (a hash of its name) and 6 a
 * hash of its value (36 bits), so a user with five attributes costs about 50 bytes more than the
 * user id, not five keys. Entries are diffed like a cohort: a user whose entry is unchanged is not
 * looked at; for the others the previous entry says which attributes changed. It is persisted in
 * the cohort topic under the sync key `traits.attrs` (the earlier per-user-hash state under
 * `traits` is not read: after an upgrade every attribute is sent once).
 */
import { request } from 'undici';
import type { AmplitudeSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import { writeAll, trackTraitTransport, type TrackPort, type TraitWrite, type WriteOptions } from './braze-membership.js';
import type { CohortSettings } from './cohort-config.js';
import type { CohortStore } from './cohort-store.js';
import { MemberSet, applyChange, diffMembers, keysAt } from './member-set.js';

export type TraitValue = string | number | boolean;

export interface TraitRow {
  userId: string;
  /** the user's property values; empty strings and nulls count as missing and are never written */
  values: Readonly<Record<string, TraitValue | null | undefined>>;
  lastUsed?: string | undefined;
}

/** what the trait state needs of the cohort store (tests give it an in-memory one) */
export type TraitStateStore = Pick<CohortStore, 'snapshot' | 'saveSnapshot'>;

export interface TraitSyncDeps {
  settings: CohortSettings['traits'];
  amplitude: AmplitudeSettings;
  braze: TrackPort;
  maxPerRequest: number;
  store: TraitStateStore;
  logger: Logger;
  sleep: (ms: number) => Promise<void>;
  writeOptions: WriteOptions;
  /** the clock the Profile API pacing reads (tests pair it with a sleep that advances it) */
  now?: () => number;
}

export interface TraitSyncOptions {
  /**
   * read TRAIT_COMPUTATIONS from the User Profile API for these users (default true). Pushes pass
   * false: a realtime cohort's enters would queue one profile call each behind the webhook, and the
   * next pull refreshes every member's computations anyway.
   */
  computations?: boolean;
}

const SEP = '\u0001';
export const TRAIT_STATE_KEY = 'traits.attrs';
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const NAME_CHARS = 4;
const VALUE_CHARS = 6;
const TOKEN = NAME_CHARS + VALUE_CHARS;

function hash2(text: string): [number, number] {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  return [h1 >>> 0, h2 >>> 0];
}

/** `chars` base64url characters of the low bits of n (6 bits each) */
function b64(n: number, chars: number): string {
  let s = '';
  for (let i = 0; i < chars; i++) {
    s += B64[n & 63];
    n >>>= 6;
  }
  return s;
}

/** 36 bits: a changed value is missed only if both 18-bit halves collide */
function valueHash(v: TraitValue): string {
  // JSON keeps "3" and 3 apart: Braze stores them as different types
  const [h1, h2] = hash2(JSON.stringify(v));
  return b64(h1 & 0x3ffff, VALUE_CHARS / 2) + b64(h2 & 0x3ffff, VALUE_CHARS / 2);
}

function userOf(entry: string): string {
  return entry.slice(0, entry.lastIndexOf(SEP));
}

/** attribute id -> value hash of one state entry */
function tokensOf(entry: string): Map<string, string> {
  const out = new Map<string, string>();
  const t = entry.slice(entry.lastIndexOf(SEP) + 1);
  for (let i = 0; i + TOKEN <= t.length; i += TOKEN) out.set(t.slice(i, i + NAME_CHARS), t.slice(i + NAME_CHARS, i + TOKEN));
  return out;
}

/** the canonical entry: tokens in attribute-id order, so equal state is an equal key */
function entryOf(userId: string, tokens: ReadonlyMap<string, string>): string {
  return `${userId}${SEP}${[...tokens].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([id, h]) => id + h).join('')}`;
}

/** a value that is there: "" is how the export writes a property the user does not have */
function present(v: TraitValue | null | undefined): v is TraitValue {
  return v !== undefined && v !== null && v !== '' && (typeof v !== 'number' || Number.isFinite(v));
}

export class TraitSync {
  private chain: Promise<unknown> = Promise.resolve();
  private nextProfileAt = 0;
  private closing = false;
  /** configured attribute name -> its 4-character id in the state */
  private readonly ids = new Map<string, string>();
  private readonly properties: ReadonlySet<string>;
  private readonly now: () => number;

  constructor(private readonly d: TraitSyncDeps) {
    this.now = d.now ?? Date.now;
    this.properties = new Set(d.settings.properties);
    // ids from the name's hash; two configured names that collide (24 bits: rare) are told apart
    // by a salt, given in name order so the same configuration always gets the same ids
    const used = new Set<string>();
    for (const name of [...new Set([...d.settings.properties, ...d.settings.computations])].sort()) {
      let id = '';
      for (let salt = 0; id === '' || used.has(id); salt++) id = b64(hash2(salt === 0 ? name : `${name}\u0000${salt}`)[0] & 0xffffff, NAME_CHARS);
      used.add(id);
      this.ids.set(name, id);
    }
  }

  /** Sends the changed attributes of these users; resolves with how many users had attributes sent. */
  sync(rows: TraitRow[], nowMs: number, opts: TraitSyncOptions = {}): Promise<number> {
    const p = this.chain.then(() => this.run(rows, nowMs, opts.computations ?? true));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private active(lastUsed: string | undefined, nowMs: number): boolean {
    if (!lastUsed) return true;
    const t = Date.parse(lastUsed);
    return Number.isNaN(t) || nowMs - t <= this.d.settings.activeDays * 86_400_000;
  }

  private async run(rows: TraitRow[], nowMs: number, computations: boolean): Promise<number> {
    const values = new Map<string, Record<string, TraitValue>>();
    let inactive = 0;
    for (const r of rows) {
      if (!r.userId) continue;
      if (!this.active(r.lastUsed, nowMs)) {
        inactive++;
        continue;
      }
      const v = values.get(r.userId) ?? {};
      for (const [name, x] of Object.entries(r.values)) if (this.properties.has(name) && present(x)) v[name] = x;
      values.set(r.userId, v);
    }
    // every active member with a user id, even one without a property value, gets its computations
    if (computations && this.d.settings.computations.length > 0) inactive += await this.addComputations(values, nowMs);

    const entries: string[] = [];
    for (const [u, v] of values) {
      const tokens = new Map<string, string>();
      for (const [name, x] of Object.entries(v)) tokens.set(this.ids.get(name)!, valueHash(x));
      // no value at all: nothing to write, and no profile to create
      if (tokens.size > 0) entries.push(entryOf(u, tokens));
    }
    const current = MemberSet.of(entries);
    const previous = this.d.store.snapshot(TRAIT_STATE_KEY)?.members ?? MemberSet.empty();
    const diff = diffMembers(previous, current);
    const differing = keysAt(current, diff.adds);
    if (differing.length === 0) {
      if (inactive > 0) this.d.logger.info({ sent: 0, inactive }, 'traits: users skipped');
      return 0;
    }
    // the entries these users had: they say which attributes changed
    const differingUsers = new Set(differing.map(userOf));
    const before = new Map<string, string>();
    for (const k of keysAt(previous, diff.removes)) {
      const u = userOf(k);
      if (differingUsers.has(u)) before.set(u, k);
    }
    const known = new Set(this.ids.values());
    const writes: TraitWrite[] = [];
    const nextEntries: string[] = [];
    const oldEntries: Array<string | undefined> = [];
    let attributes = 0;
    for (const k of differing) {
      const u = userOf(k);
      const old = before.get(u);
      const oldTokens = old ? tokensOf(old) : new Map<string, string>();
      // attributes missing this run keep what was last sent (they were not unset in Braze);
      // attributes no longer configured are forgotten
      const merged = new Map([...oldTokens].filter(([id]) => known.has(id)));
      const changed: Record<string, TraitValue> = {};
      for (const [name, x] of Object.entries(values.get(u)!)) {
        const id = this.ids.get(name)!;
        const h = valueHash(x);
        if (oldTokens.get(id) !== h) changed[name] = x;
        merged.set(id, h);
      }
      const n = Object.keys(changed).length;
      // only a value missing this run differs: nothing to send, the state stays as it is
      if (n === 0) continue;
      attributes += n;
      writes.push({ userId: u, values: changed });
      nextEntries.push(entryOf(u, merged));
      oldEntries.push(old);
    }
    if (writes.length === 0) return 0;
    const res = await writeAll(writes, trackTraitTransport(this.d.braze, this.d.maxPerRequest), this.d.writeOptions);
    const added: string[] = [];
    const removed: string[] = [];
    for (let i = 0; i < writes.length; i++) {
      if (res.accepted[i] !== 1) continue;
      added.push(nextEntries[i]!);
      const old = oldEntries[i];
      if (old !== undefined) removed.push(old);
    }
    if (added.length > 0) await this.d.store.saveSnapshot(TRAIT_STATE_KEY, applyChange(previous, added, removed), { savedAtMs: nowMs, messageIds: [] });
    if (inactive > 0 || res.rejected.size > 0) this.d.logger.info({ sent: added.length, attributes, inactive, rejected: res.rejected.size }, 'traits: users skipped');
    return added.length;
  }

  /**
   * Computations from the User Profile API, one call per user, paced under its per-minute limit;
   * a user whose profile says they were last active before the window is dropped. Returns how many.
   */
  private async addComputations(values: Map<string, Record<string, TraitValue>>, nowMs: number): Promise<number> {
    const secret = this.d.amplitude.secretKey;
    if (!secret) {
      this.d.logger.warn('TRAIT_COMPUTATIONS needs AMPLITUDE_SECRET_KEY (the User Profile API key): computations skipped');
      return 0;
    }
    const spacing = 60_000 / this.d.settings.profileRequestsPerMinute;
    const comps = this.d.settings.computations;
    const base = this.d.settings.profileApiUrl.replace(/\/+$/, '');
    let inactive = 0;
    for (const [userId, v] of values) {
      if (this.closing) break;
      for (let attempt = 0; attempt < 5 && !this.closing; attempt++) {
        // evenly spaced, never a burst: the limit is per org, shared with anything else on the key
        const now = this.now();
        if (this.nextProfileAt > now) await this.d.sleep(this.nextProfileAt - now);
        this.nextProfileAt = Math.max(this.now(), this.nextProfileAt) + spacing;
        let status = 0;
        let text = '';
        try {
          const res = await request(`${base}/v1/userprofile?user_id=${encodeURIComponent(userId)}&comp_id=${comps.map(encodeURIComponent).join(',')}`, {
            headers: { authorization: `Api-Key ${secret}` },
            headersTimeout: 30_000,
            bodyTimeout: 30_000,
          });
          status = res.statusCode;
          text = await res.body.text();
        } catch (err) {
          text = (err as Error).message;
        }
        if (status === 200) {
          try {
            const body = JSON.parse(text) as { userData?: { amp_props?: Record<string, unknown> } };
            const props = body.userData?.amp_props ?? {};
            for (const c of comps) {
              const x = props[c];
              // null is the API's "no value": never written
              if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') {
                if (present(x)) v[c] = x;
              }
            }
            const lastUsed = props.last_used;
            if (typeof lastUsed === 'string' && Date.parse(lastUsed) < nowMs - this.d.settings.activeDays * 86_400_000) {
              values.delete(userId);
              inactive++;
            }
          } catch {
            // an unreadable profile: the user's computations are left out this run
          }
          break;
        }
        if (status === 401 || status === 403) {
          this.d.logger.warn({ status }, 'the User Profile API refused AMPLITUDE_SECRET_KEY: computations skipped this run');
          return inactive;
        }
        if (status === 429 || status === 0 || status >= 500) {
          await this.d.sleep(Math.min(60_000, 1_000 * 2 ** attempt));
          continue;
        }
        break; // user not seen, or another 4xx: no computations for this user
      }
    }
    return inactive;
  }

  /**
   * Stops fetching computations (a large cohort's take members/600 minutes) and waits for the run
   * in progress to write what it has: users not reached keep their last-sent values, and the next
   * run fetches them.
   */
  async close(): Promise<void> {
    this.closing = true;
    await this.chain;
  }
}
