/**
 * A local stand-in for Braze's partner cohort import API (reference: braze-cohort-import.md §4):
 * `POST /partners/<partner>/cohorts` (name a cohort) and `POST /partners/<partner>/cohorts/users`
 * (`cohort_changes` adding or removing `user_ids`, `device_ids`, `aliases`), with the documented
 * checks: the partner key and the client secret (401 with Braze's messages), at most 1,000 ids a
 * request, the field shapes (400 with Braze's messages), and injectable faults (423, 5xx, ...).
 * It keeps each cohort's membership, so tests read what Braze would hold.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FaultQueue, readBody, send, serve, type StandInFault } from './http-util.js';

export interface BrazePartnerStandInOptions {
  partnerName: string;
  partnerApiKey: string;
  clientSecret: string;
  port?: number;
  host?: string;
}

export interface BrazePartnerStandIn {
  readonly url: string;
  /** cohort id -> members, as `user:<id>`, `device:<id>`, `alias:<label>:<name>` */
  readonly members: ReadonlyMap<string, ReadonlySet<string>>;
  /** cohort id -> name given */
  readonly names: ReadonlyMap<string, string>;
  readonly stats: { requests: number; maxIdsInRequest: number; byStatus: Record<number, number> };
  injectFaults(f: StandInFault): void;
  setClientSecret(s: string): void;
  close(): Promise<void>;
}

const CHANGES_MESSAGE = 'cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object';

function strings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

export async function startBrazePartnerStandIn(o: BrazePartnerStandInOptions): Promise<BrazePartnerStandIn> {
  const members = new Map<string, Set<string>>();
  const names = new Map<string, string>();
  const faults = new FaultQueue();
  const stats = { requests: 0, maxIdsInRequest: 0, byStatus: {} as Record<number, number> };
  let clientSecret = o.clientSecret;
  const answer = (res: ServerResponse, status: number, body: unknown): void => {
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    send(res, status, body);
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const base = `/partners/${o.partnerName}/cohorts`;
    if (req.method !== 'POST' || (path !== base && path !== `${base}/users`)) {
      req.resume();
      return answer(res, 404, { message: 'Not Found' });
    }
    stats.requests++;
    const fault = faults.take();
    if (fault) {
      req.resume();
      faults.schedule(fault, () => answer(res, fault.status, fault.body ?? { message: fault.status === 423 ? 'Resource locked' : 'Error' }));
      return;
    }
    const read = await readBody(req, 4 * 1024 * 1024);
    let body: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(read.body.toString('utf8'));
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      body = v as Record<string, unknown>;
    } catch {
      return answer(res, 400, { message: 'Invalid JSON' });
    }
    if (body.partner_api_key !== o.partnerApiKey) return answer(res, 401, { message: 'Invalid Partner API key' });
    if (body.client_secret !== clientSecret) return answer(res, 401, { message: 'Invalid client secret' });
    const cohortId = body.cohort_id;
    if (typeof cohortId !== 'string' || cohortId === '') return answer(res, 400, { message: 'cohort_id must be a valid string' });
    if (path === base) {
      if (typeof body.name !== 'string' || body.name === '') return answer(res, 400, { message: 'name must be a non-empty string' });
      if (typeof body.created_at !== 'string' || Number.isNaN(Date.parse(body.created_at))) return answer(res, 400, { message: 'created_at must be a valid time as an ISO-8601 string' });
      names.set(cohortId, body.name);
      return answer(res, 201, {});
    }
    const changes = body.cohort_changes;
    if (!Array.isArray(changes)) return answer(res, 400, { message: CHANGES_MESSAGE });
    let ids = 0;
    for (const c of changes) {
      if (c === null || typeof c !== 'object') return answer(res, 400, { message: CHANGES_MESSAGE });
      const ch = c as Record<string, unknown>;
      for (const k of ['user_ids', 'device_ids'] as const) if (ch[k] !== undefined && !strings(ch[k])) return answer(res, 400, { message: CHANGES_MESSAGE });
      if (ch.aliases !== undefined && !(Array.isArray(ch.aliases) && ch.aliases.every((a: unknown) => a !== null && typeof a === 'object' && typeof (a as Record<string, unknown>).alias_name === 'string' && typeof (a as Record<string, unknown>).alias_label === 'string'))) {
        return answer(res, 400, { message: CHANGES_MESSAGE });
      }
      ids += ((ch.user_ids as string[] | undefined)?.length ?? 0) + ((ch.device_ids as string[] | undefined)?.length ?? 0) + ((ch.aliases as unknown[] | undefined)?.length ?? 0);
    }
    stats.maxIdsInRequest = Math.max(stats.maxIdsInRequest, ids);
    if (ids > 1_000) return answer(res, 400, { message: 'Only 1,000 user_ids, device_ids, and aliases are allowed per request' });
    let set = members.get(cohortId);
    if (!set) members.set(cohortId, (set = new Set()));
    for (const c of changes as Array<Record<string, unknown>>) {
      const keys = [
        ...((c.user_ids as string[] | undefined) ?? []).map((u) => `user:${u}`),
        ...((c.device_ids as string[] | undefined) ?? []).map((d) => `device:${d}`),
        ...((c.aliases as Array<{ alias_name: string; alias_label: string }> | undefined) ?? []).map((a) => `alias:${a.alias_label}:${a.alias_name}`),
      ];
      for (const k of keys) {
        if (c.should_remove === true) set.delete(k);
        else set.add(k);
      }
    }
    return answer(res, 201, {});
  }

  const server = await serve(handle, (res, err) => answer(res, 500, { message: String(err) }), o.port ?? 0, o.host ?? '127.0.0.1');
  return {
    url: server.url,
    members,
    names,
    stats,
    injectFaults: (f) => faults.add(f),
    setClientSecret: (s) => {
      clientSecret = s;
    },
    close: async () => {
      faults.close();
      await server.close();
    },
  };
}
