/**
 * A local stand-in for Amplitude's Behavioral Cohorts REST API (reference: amplitude-cohort-api.md),
 * as strict as the other stand-ins, for the integration tests, the benchmarks and `npm run demo`:
 *
 * - Basic auth `API_KEY:SECRET_KEY` on every `/api/...` call (401 otherwise);
 * - `GET /api/3/cohorts` lists the cohorts with `lastComputed`, `lastMod`, `size`, `archived`;
 * - `GET /api/5/cohorts/request/:id` answers 202 with a `request_id` and spends one unit of the
 *   monthly quota (429 once it is spent); the membership is frozen at that moment;
 * - `GET /api/5/cohorts/request-status/:request_id` answers 202 `JOB INPROGRESS` for the first
 *   `pollsUntilDone` polls, then 200 `JOB COMPLETED`;
 * - `GET /api/5/cohorts/request/:request_id/file` answers 302 to a pre-signed URL on this server
 *   (valid one minute) which, like S3, refuses a request that also carries an Authorization header
 *   (400); or 200 with the body when `redirect` is off. The file is the quoted CSV, gzip-encoded
 *   unless `gzip` is off, generated row by row (a million-member cohort is never one string);
 * - `GET /api/3/cohorts/usage` reports the quota.
 * A download can be made to fail halfway (the connection is cut after some bytes) to test re-fetching.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { systemClock, type Clock } from '../../clock.js';
import { send, serve } from './http-util.js';

export interface StandInCohortMember {
  amplitudeId: string;
  userId: string;
  /** user properties, written as columns when the export asks for them (props=1) */
  props?: Record<string, string>;
}

/** Members as a list, or as a count and a function (for cohorts too big to hold as objects). */
export type StandInMembers = StandInCohortMember[] | { count: number; at: (i: number) => StandInCohortMember };

export interface StandInCohort {
  id: string;
  name: string;
  members: StandInMembers;
  /** epoch seconds */
  lastComputed: number;
  lastMod?: number;
  archived?: boolean;
}

export interface AmplitudeCohortStandInOptions {
  apiKey: string;
  secretKey: string;
  /** polls answered JOB INPROGRESS before JOB COMPLETED (default 1) */
  pollsUntilDone?: number;
  /** answer /file with a 302 to the pre-signed URL (default true) */
  redirect?: boolean;
  /** gzip the file (default true) */
  gzip?: boolean;
  /** exports allowed per month (default 500) */
  quota?: number;
  /** User Profile API calls allowed per minute (default 600) */
  profilePerMinute?: number;
  /**
   * cohorts to hold from the start, their members generated (`user-<i>`, amplitude id 10^9 + i):
   * for benchmarks, whose stand-ins run in a child process configured by JSON
   */
  generated?: Array<{ id: string; name: string; count: number; lastComputed: number }>;
  clock?: Clock;
  port?: number;
  host?: string;
}

export interface AmplitudeCohortStandInStats {
  listCalls: number;
  /** export requests that got a 202 (each spent one unit of the quota) */
  exportRequests: number;
  statusPolls: number;
  fileCalls: number;
  /** fetches of the pre-signed URL that got the file */
  downloads: number;
  /** downloads cut off halfway on purpose */
  downloadsCut: number;
  /** pre-signed URL requests refused because they carried an Authorization header */
  presignedWithAuth: number;
  unauthorized: number;
  quotaRefused: number;
  /** User Profile API calls answered, and refused over the per-minute limit */
  profileCalls: number;
  profileThrottled: number;
}

export interface AmplitudeCohortStandIn {
  readonly url: string;
  readonly stats: Readonly<AmplitudeCohortStandInStats>;
  readonly quotaUsed: number;
  setCohort(c: StandInCohort): void;
  cohort(id: string): StandInCohort | undefined;
  /** The next `count` file downloads send `afterBytes` bytes and then cut the connection. */
  cutDownloads(count: number, afterBytes: number): void;
  /** The next `count` API calls answer `status` (e.g. 503). */
  failCalls(count: number, status: number): void;
  /** a user's properties and computations as the User Profile API returns them (`amp_props`) */
  setProfile(userId: string, ampProps: Record<string, unknown>): void;
  reset(): void;
  close(): Promise<void>;
}

interface ExportJob {
  id: string;
  cohortId: string;
  members: StandInMembers;
  props: string[] | 'all' | undefined;
  polls: number;
}

function memberCount(m: StandInMembers): number {
  return Array.isArray(m) ? m.length : m.count;
}

function memberAt(m: StandInMembers, i: number): StandInCohortMember {
  return Array.isArray(m) ? m[i]! : m.at(i);
}

function q(v: string): string {
  return `"${v.replace(/"/g, '""')}"`;
}

/** The export file as a stream of CSV text, a few thousand rows per chunk. */
export function cohortCsv(members: StandInMembers, props: string[]): Readable {
  const n = memberCount(members);
  let i = -1;
  return new Readable({
    read() {
      if (i === -1) {
        this.push(`${['amplitude_id', 'user_id', ...props].map(q).join(',')}\n`);
        i = 0;
        return;
      }
      if (i >= n) {
        this.push(null);
        return;
      }
      const end = Math.min(n, i + 5_000);
      let s = '';
      for (; i < end; i++) {
        const m = memberAt(members, i);
        s += q(m.amplitudeId) + ',' + q(m.userId);
        for (const p of props) s += ',' + q(m.props?.[p] ?? '');
        s += '\n';
      }
      this.push(s);
    },
  });
}

export async function startAmplitudeCohortStandIn(opts: AmplitudeCohortStandInOptions): Promise<AmplitudeCohortStandIn> {
  const clock = opts.clock ?? systemClock;
  const pollsUntilDone = opts.pollsUntilDone ?? 1;
  const redirect = opts.redirect ?? true;
  const gzip = opts.gzip ?? true;
  const quota = opts.quota ?? 500;
  const expected = `Basic ${Buffer.from(`${opts.apiKey}:${opts.secretKey}`).toString('base64')}`;
  const cohorts = new Map<string, StandInCohort>();
  const jobs = new Map<string, ExportJob>();
  const presigned = new Map<string, { job: string; expiresMs: number }>();
  let quotaUsed = 0;
  let cuts: { count: number; afterBytes: number } = { count: 0, afterBytes: 0 };
  let failures: { count: number; status: number } = { count: 0, status: 503 };
  const stats: AmplitudeCohortStandInStats = { listCalls: 0, exportRequests: 0, statusPolls: 0, fileCalls: 0, downloads: 0, downloadsCut: 0, presignedWithAuth: 0, unauthorized: 0, quotaRefused: 0, profileCalls: 0, profileThrottled: 0 };
  const profiles = new Map<string, Record<string, unknown>>();
  const profilePerMinute = opts.profilePerMinute ?? 600;
  let profileWindow = { start: 0, used: 0 };
  let baseUrl = '';

  const error = (res: ServerResponse, status: number, message: string): void =>
    send(res, status, { error: { http_code: status, type: status === 401 ? 'unauthorized' : 'invalid', message } });

  async function sendFile(res: ServerResponse, job: ExportJob): Promise<void> {
    const props = job.props === 'all' ? propNames(job.members) : (job.props ?? []);
    const csv = cohortCsv(job.members, props);
    const cut = cuts.count > 0 ? cuts.afterBytes : undefined;
    if (cut !== undefined) cuts.count--;
    res.writeHead(200, { 'content-type': 'text/csv', ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    const body: Readable = gzip ? csv.pipe(createGzip({ level: 1 })) : csv;
    if (cut === undefined) {
      stats.downloads++;
      await pipeline(body, res).catch(() => undefined);
      return;
    }
    stats.downloadsCut++;
    let sent = 0;
    for await (const chunk of body) {
      const b = chunk as Buffer;
      const take = Math.min(b.length, cut - sent);
      if (take > 0) res.write(b.subarray(0, take));
      sent += take;
      if (sent >= cut) break;
    }
    // let the written bytes reach the client, then cut the connection mid-body
    await new Promise((r) => setTimeout(r, 20));
    res.socket?.destroy();
    body.destroy();
  }

  function propNames(m: StandInMembers): string[] {
    const names = new Set<string>();
    for (let i = 0; i < Math.min(memberCount(m), 1_000); i++) for (const k of Object.keys(memberAt(m, i).props ?? {})) names.add(k);
    return [...names];
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume();
    const u = new URL(req.url ?? '/', 'http://x');
    const path = u.pathname;

    if (path.startsWith('/s3/')) {
      const key = path.slice(4);
      const p = presigned.get(key);
      if (!p || u.searchParams.get('X-Amz-Signature') !== key) return send(res, 403, '<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>');
      if (req.headers.authorization !== undefined) {
        stats.presignedWithAuth++;
        return send(res, 400, '<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>');
      }
      if (clock.now() > p.expiresMs) return send(res, 403, '<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
      const job = jobs.get(p.job);
      if (!job) return send(res, 404, '<Error><Code>NoSuchKey</Code></Error>');
      return sendFile(res, job);
    }

    if (path === '/v1/userprofile') {
      // The User Profile API: `Api-Key <secret>`, one user per call, 600 calls a minute per org.
      if (req.headers.authorization !== `Api-Key ${opts.secretKey}`) return send(res, 401, { error: req.headers.authorization ? 'Invalid Api-Key' : 'Missing Api-Key in Authorization header' });
      const now = clock.now();
      if (now - profileWindow.start >= 60_000) profileWindow = { start: now, used: 0 };
      if (++profileWindow.used > profilePerMinute) {
        stats.profileThrottled++;
        return send(res, 429, { error: 'Per-minute request limit exceeded' });
      }
      stats.profileCalls++;
      const userId = u.searchParams.get('user_id') ?? '';
      const props = profiles.get(userId);
      if (!props) return send(res, 400, { error: 'User id and device id not seen before' });
      const comps = (u.searchParams.get('comp_id') ?? '').split(',').filter(Boolean);
      const amp: Record<string, unknown> = {};
      for (const c of comps) amp[c] = props[c] ?? null;
      if ('last_used' in props) amp.last_used = props.last_used;
      return send(res, 200, { userData: { recommendations: null, user_id: userId, device_id: null, amp_props: amp, cohort_ids: null } });
    }
    if (!path.startsWith('/api/')) return send(res, 404, '');
    if (req.headers.authorization !== expected) {
      stats.unauthorized++;
      return error(res, 401, 'Invalid API key or secret key');
    }
    if (failures.count > 0) {
      failures.count--;
      return error(res, failures.status, 'stand-in fault');
    }
    if (req.method !== 'GET') return error(res, 405, 'Method Not Allowed');

    if (path === '/api/3/cohorts') {
      stats.listCalls++;
      return send(res, 200, {
        cohorts: [...cohorts.values()].map((c) => ({
          appId: 412345,
          archived: c.archived ?? false,
          id: c.id,
          name: c.name,
          description: null,
          size: memberCount(c.members),
          lastComputed: c.lastComputed,
          lastMod: c.lastMod ?? c.lastComputed,
          createdAt: 1_728_000_000,
          published: true,
          hidden: false,
          type: 'redshift',
          definition: { version: 3, countGroup: { name: 'User', is_computed: false }, cohortType: 'UNIQUES', andClauses: [] },
        })),
      });
    }
    if (path === '/api/3/cohorts/usage') {
      return send(res, 200, { rest_download: { limit: quota, usage: quotaUsed } });
    }
    let m = /^\/api\/5\/cohorts\/request-status\/([^/]+)$/.exec(path);
    if (m) {
      stats.statusPolls++;
      const job = jobs.get(decodeURIComponent(m[1]!));
      if (!job) return error(res, 404, 'Unknown request id');
      job.polls++;
      const done = job.polls > pollsUntilDone;
      return send(res, done ? 200 : 202, { request_id: job.id, cohort_id: job.cohortId, async_status: done ? 'JOB COMPLETED' : 'JOB INPROGRESS' });
    }
    m = /^\/api\/5\/cohorts\/request\/([^/]+)\/file$/.exec(path);
    if (m) {
      stats.fileCalls++;
      const job = jobs.get(decodeURIComponent(m[1]!));
      if (!job) return error(res, 404, 'Unknown request id');
      if (job.polls <= pollsUntilDone) return error(res, 400, 'Export is not complete');
      if (!redirect) return sendFile(res, job);
      const key = randomBytes(12).toString('hex');
      presigned.set(key, { job: job.id, expiresMs: clock.now() + 60_000 });
      res.writeHead(302, { location: `${baseUrl}/s3/${key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=60&X-Amz-Signature=${key}`, 'content-length': '0' });
      res.end();
      return;
    }
    m = /^\/api\/5\/cohorts\/request\/([^/]+)$/.exec(path);
    if (m) {
      const c = cohorts.get(decodeURIComponent(m[1]!));
      if (!c) return error(res, 400, `Unknown cohort id ${m[1]}`);
      if (quotaUsed >= quota) {
        stats.quotaRefused++;
        return error(res, 429, 'Monthly cohort download quota exceeded');
      }
      quotaUsed++;
      stats.exportRequests++;
      const id = randomBytes(6).toString('base64url');
      const keys = u.searchParams.getAll('propKeys');
      const props = u.searchParams.get('props') === '1' ? (keys.length > 0 ? keys : 'all') : undefined;
      // the membership at request time: later changes to the cohort are not in this export
      const members = Array.isArray(c.members) ? [...c.members] : c.members;
      jobs.set(id, { id, cohortId: c.id, members, props, polls: 0 });
      return send(res, 202, { request_id: id, cohort_id: c.id });
    }
    return error(res, 404, 'Not Found');
  }

  for (const g of opts.generated ?? []) {
    cohorts.set(g.id, { id: g.id, name: g.name, lastComputed: g.lastComputed, members: { count: g.count, at: (i) => ({ amplitudeId: String(1_000_000_000 + i), userId: `user-${i}` }) } });
  }
  const server = await serve(handle, (res, err) => send(res, 500, { error: String(err) }), opts.port ?? 0, opts.host ?? '127.0.0.1');
  baseUrl = server.url;

  return {
    url: server.url,
    stats,
    get quotaUsed() {
      return quotaUsed;
    },
    setCohort(c) {
      cohorts.set(c.id, c);
    },
    cohort(id) {
      return cohorts.get(id);
    },
    cutDownloads(count, afterBytes) {
      cuts = { count, afterBytes };
    },
    failCalls(count, status) {
      failures = { count, status };
    },
    setProfile(userId, ampProps) {
      profiles.set(userId, ampProps);
    },
    reset() {
      cohorts.clear();
      jobs.clear();
      presigned.clear();
      quotaUsed = 0;
      profiles.clear();
      profileWindow = { start: 0, used: 0 };
      cuts = { count: 0, afterBytes: 0 };
      failures = { count: 0, status: 503 };
      for (const k of Object.keys(stats) as Array<keyof AmplitudeCohortStandInStats>) stats[k] = 0;
    },
    close: () => server.close(),
  };
}
