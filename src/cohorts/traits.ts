/**
 * Traits and computations kept in Braze as custom attributes of the same name (DESIGN.md):
 * TRAIT_PROPERTIES come with the cohort export (requested as `propKeys`, so they cost no extra
 * quota), TRAIT_COMPUTATIONS from the User Profile API (one call per user, paced under its 600
 * requests a minute). Identified by user id only (Braze `external_id`; these writes do create
 * users, so `_update_existing_only` is not sent), for users active in the last TRAIT_ACTIVE_DAYS
 * days (by the `last_used` property where the export or profile carries it; a user without one
 * counts as active). A user's attributes are sent only when one of their values changed since they
 * were last sent: the state is a member set of `<user_id>\u0001<hash of the values>`, diffed like
 * a cohort and persisted in the cohort topic under the sync key `traits`.
 */
import { request } from 'undici';
import type { AmplitudeSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import { writeAll, trackTraitTransport, type TrackPort, type TraitWrite, type WriteOptions } from './braze-membership.js';
import type { CohortSettings } from './cohort-config.js';
import type { CohortStore } from './cohort-store.js';
import { MemberSet, applyChange, diffMembers, keysAt } from './member-set.js';

export interface TraitRow {
  userId: string;
  values: Record<string, string>;
  lastUsed?: string | undefined;
}

export interface TraitSyncDeps {
  settings: CohortSettings['traits'];
  amplitude: AmplitudeSettings;
  braze: TrackPort;
  maxPerRequest: number;
  store: CohortStore;
  logger: Logger;
  sleep: (ms: number) => Promise<void>;
  writeOptions: WriteOptions;
  /** injectable for tests */
  now?: () => number;
}

const SEP = '\u0001';
const STATE_KEY = 'traits';

function hashValues(values: Record<string, unknown>): string {
  const text = JSON.stringify(Object.keys(values).sort().map((k) => [k, values[k]]));
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  return (h1 >>> 0).toString(36) + (h2 >>> 0).toString(36);
}

export class TraitSync {
  private chain: Promise<unknown> = Promise.resolve();
  private nextProfileAt = 0;

  constructor(private readonly d: TraitSyncDeps) {}

  /** Sends the changed attributes of these users; resolves with how many users' attributes went. */
  sync(rows: TraitRow[], nowMs: number): Promise<number> {
    const p = this.chain.then(() => this.run(rows, nowMs));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private active(lastUsed: string | undefined, nowMs: number): boolean {
    if (!lastUsed) return true;
    const t = Date.parse(lastUsed);
    return Number.isNaN(t) || nowMs - t <= this.d.settings.activeDays * 86_400_000;
  }

  private async run(rows: TraitRow[], nowMs: number): Promise<number> {
    const byUser = new Map<string, TraitRow>();
    let inactive = 0;
    for (const r of rows) {
      if (!this.active(r.lastUsed, nowMs)) {
        inactive++;
        continue;
      }
      byUser.set(r.userId, r);
    }
    const values = new Map<string, Record<string, string | number | boolean | null>>();
    for (const [u, r] of byUser) values.set(u, { ...r.values });
    if (this.d.settings.computations.length > 0) await this.addComputations(values, nowMs);
    const current = MemberSet.of([...values].filter(([, v]) => Object.keys(v).length > 0).map(([u, v]) => `${u}${SEP}${hashValues(v)}`));
    const previous = this.d.store.snapshot(STATE_KEY)?.members ?? MemberSet.empty();
    const diff = diffMembers(previous, current);
    const changed = keysAt(current, diff.adds);
    if (changed.length === 0) return 0;
    const writes: TraitWrite[] = changed.map((k) => {
      const userId = k.slice(0, k.lastIndexOf(SEP));
      return { userId, values: values.get(userId) ?? {} };
    });
    const res = await writeAll(writes, trackTraitTransport(this.d.braze, this.d.maxPerRequest), this.d.writeOptions);
    const accepted: string[] = [];
    const acceptedUsers = new Set<string>();
    for (let i = 0; i < changed.length; i++) {
      if (res.accepted[i] === 1) {
        accepted.push(changed[i]!);
        acceptedUsers.add(writes[i]!.userId);
      }
    }
    // the old hash of every user whose new values were accepted goes
    const stale = keysAt(previous, diff.removes).filter((k) => acceptedUsers.has(k.slice(0, k.lastIndexOf(SEP))));
    const next = applyChange(previous, accepted, stale);
    await this.d.store.saveSnapshot(STATE_KEY, next, { savedAtMs: nowMs, messageIds: [] });
    if (inactive > 0 || res.rejected.size > 0) this.d.logger.info({ sent: accepted.length, inactive, rejected: res.rejected.size }, 'traits: users skipped');
    return accepted.length;
  }

  /** computations from the User Profile API, paced under its per-minute limit */
  private async addComputations(values: Map<string, Record<string, string | number | boolean | null>>, nowMs: number): Promise<void> {
    const secret = this.d.amplitude.secretKey;
    if (!secret) {
      this.d.logger.warn('TRAIT_COMPUTATIONS needs AMPLITUDE_SECRET_KEY (the User Profile API key): computations skipped');
      return;
    }
    const spacing = 60_000 / this.d.settings.profileRequestsPerMinute;
    const comps = this.d.settings.computations;
    const base = this.d.settings.profileApiUrl.replace(/\/+$/, '');
    for (const [userId, v] of values) {
      for (let attempt = 0; attempt < 5; attempt++) {
        const now = Date.now();
        if (this.nextProfileAt > now) await this.d.sleep(this.nextProfileAt - now);
        this.nextProfileAt = Math.max(Date.now(), this.nextProfileAt) + spacing;
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
              if (x === null || typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') v[c] = x;
            }
            const lastUsed = props.last_used;
            if (typeof lastUsed === 'string' && Date.parse(lastUsed) < nowMs - this.d.settings.activeDays * 86_400_000) values.delete(userId);
          } catch {
            // an unreadable profile: the user's computations are left out this run
          }
          break;
        }
        if (status === 401 || status === 403) {
          this.d.logger.warn({ status }, 'the User Profile API refused AMPLITUDE_SECRET_KEY: computations skipped this run');
          return;
        }
        if (status === 429 || status === 0 || status >= 500) {
          await this.d.sleep(Math.min(60_000, 1_000 * 2 ** attempt));
          continue;
        }
        break; // user not seen, or another 4xx: no computations for this user
      }
    }
  }

  async close(): Promise<void> {
    await this.chain;
  }
}
