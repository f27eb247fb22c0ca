/**
 * The client of Amplitude's Behavioral Cohorts REST API (amplitude-cohort-api.md §2-§4): list,
 * request an export, poll it, download the file. The download follows a 302 by hand, to a
 * pre-signed URL fetched WITHOUT the Authorization header (S3 refuses a request carrying both),
 * accepts gzip or plain text (by the magic bytes, whatever the headers say), and hands the CSV to a
 * streaming parser chunk by chunk, so the file is never held whole.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { createGunzip } from 'node:zlib';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export type CohortApiErrorKind = 'auth' | 'quota' | 'not_found' | 'unavailable' | 'bad_request';

export class CohortApiError extends Error {
  constructor(
    readonly kind: CohortApiErrorKind,
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'CohortApiError';
  }
}

export interface CohortMeta {
  id: string;
  name: string;
  size: number;
  /** epoch ms (the API's seconds, or ms above 10^12, normalised) */
  lastComputedMs: number;
  lastModMs: number;
  archived: boolean;
}

export interface CohortApiSettings {
  apiUrl: string;
  apiKey: string;
  secretKey: string;
  timeoutMs: number;
}

function toMs(v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n)) return 0;
  return n > 1e12 ? n : n * 1000;
}

function kindOf(status: number): CohortApiErrorKind {
  if (status === 401 || status === 403) return 'auth';
  if (status === 429) return 'quota';
  if (status === 404) return 'not_found';
  if (status === 0 || status === 408 || status >= 500) return 'unavailable';
  return 'bad_request';
}

async function errorText(body: Dispatcher.ResponseData['body']): Promise<string> {
  const t = await body.text().catch(() => '');
  try {
    const o = JSON.parse(t) as { error?: { message?: unknown; metadata?: { details?: unknown } } | string };
    if (typeof o.error === 'string') return o.error;
    if (o.error && typeof o.error.message === 'string') return `${o.error.message}${typeof o.error.metadata?.details === 'string' ? `: ${o.error.metadata.details}` : ''}`;
  } catch {
    // not JSON
  }
  return t.slice(0, 300);
}

export class AmplitudeCohortApi {
  private readonly agent: Agent;
  private readonly auth: string;
  private readonly base: string;

  constructor(private readonly s: CohortApiSettings) {
    this.agent = new Agent({ connections: 4, headersTimeout: s.timeoutMs, bodyTimeout: s.timeoutMs, connectTimeout: Math.min(10_000, s.timeoutMs) });
    this.auth = `Basic ${Buffer.from(`${s.apiKey}:${s.secretKey}`).toString('base64')}`;
    this.base = s.apiUrl.replace(/\/+$/, '');
  }

  private async get(path: string, what: string): Promise<Dispatcher.ResponseData> {
    try {
      return await request(`${this.base}${path}`, { method: 'GET', headers: { authorization: this.auth, accept: 'application/json' }, dispatcher: this.agent });
    } catch (err) {
      throw new CohortApiError('unavailable', 0, `Amplitude cohort API unreachable (${what}): ${(err as Error).message}`);
    }
  }

  private async fail(res: Dispatcher.ResponseData, what: string): Promise<never> {
    const text = await errorText(res.body);
    throw new CohortApiError(kindOf(res.statusCode), res.statusCode, `Amplitude answered ${res.statusCode} to ${what}: ${text}`);
  }

  async listCohorts(): Promise<CohortMeta[]> {
    const res = await this.get('/api/3/cohorts', 'the cohort list');
    if (res.statusCode !== 200) return this.fail(res, 'the cohort list');
    const body = (await res.body.json()) as { cohorts?: unknown };
    if (!Array.isArray(body.cohorts)) throw new CohortApiError('bad_request', 200, 'the cohort list has no "cohorts" array');
    return body.cohorts.flatMap((c: unknown) => {
      if (c === null || typeof c !== 'object') return [];
      const o = c as Record<string, unknown>;
      if (typeof o.id !== 'string') return [];
      return [{ id: o.id, name: typeof o.name === 'string' ? o.name : o.id, size: typeof o.size === 'number' ? o.size : 0, lastComputedMs: toMs(o.lastComputed), lastModMs: toMs(o.lastMod), archived: o.archived === true }];
    });
  }

  /** Starts an export: spends one unit of the monthly download quota. */
  async requestExport(cohortId: string, propKeys: readonly string[]): Promise<string> {
    const qs = propKeys.length > 0 ? `?props=1&${propKeys.map((k) => `propKeys=${encodeURIComponent(k)}`).join('&')}` : '';
    const res = await this.get(`/api/5/cohorts/request/${encodeURIComponent(cohortId)}${qs}`, 'the export request');
    if (res.statusCode < 200 || res.statusCode >= 300) return this.fail(res, 'the export request');
    const body = (await res.body.json()) as { request_id?: unknown };
    if (typeof body.request_id !== 'string' || body.request_id === '') throw new CohortApiError('bad_request', res.statusCode, 'the export request answered without a request_id');
    return body.request_id;
  }

  /** true once the job is complete; false while it runs (202, or any status value not yet known) */
  async exportDone(requestId: string): Promise<boolean> {
    const res = await this.get(`/api/5/cohorts/request-status/${encodeURIComponent(requestId)}`, 'the export status');
    if (res.statusCode === 202) {
      await res.body.dump();
      return false;
    }
    if (res.statusCode !== 200) return this.fail(res, 'the export status');
    const body = (await res.body.json().catch(() => ({}))) as { async_status?: unknown };
    return body.async_status === 'JOB COMPLETED';
  }

  /**
   * Downloads the export and feeds its text to `onText` chunk by chunk; resolves when the whole
   * file went through. A failure midway rejects (the caller fetches again: it costs no quota).
   */
  async download(requestId: string, onText: (chunk: string) => void): Promise<{ bytes: number }> {
    const res = await this.get(`/api/5/cohorts/request/${encodeURIComponent(requestId)}/file`, 'the export file');
    let body: Readable;
    if (res.statusCode === 302 || res.statusCode === 301 || res.statusCode === 307 || res.statusCode === 303) {
      await res.body.dump();
      const loc = res.headers.location;
      const location = Array.isArray(loc) ? loc[0] : loc;
      if (!location) throw new CohortApiError('unavailable', res.statusCode, 'the export file redirect has no Location');
      const url = new URL(location, this.base).toString();
      let s3: Dispatcher.ResponseData;
      try {
        // The pre-signed URL carries its own signature: no Authorization header goes with it.
        s3 = await request(url, { method: 'GET', dispatcher: this.agent });
      } catch (err) {
        throw new CohortApiError('unavailable', 0, `the export file's pre-signed URL is unreachable: ${(err as Error).message}`);
      }
      if (s3.statusCode !== 200) {
        const t = (await s3.body.text().catch(() => '')).slice(0, 300);
        // the one-minute link may have lapsed: the /file call gives a fresh one
        throw new CohortApiError('unavailable', s3.statusCode, `the export file's pre-signed URL answered ${s3.statusCode}: ${t}`);
      }
      body = s3.body;
    } else if (res.statusCode === 200) {
      body = res.body;
    } else {
      return this.fail(res, 'the export file');
    }
    let bytes = 0;
    const decoder = new TextDecoder('utf-8');
    const it = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const first = await it.next();
    // gzip magic bytes 1f 8b: decode whatever the headers said
    const gz = !first.done && first.value.length >= 2 && first.value[0] === 0x1f && first.value[1] === 0x8b;
    const source = Readable.from(
      (async function* () {
        if (first.done) return;
        bytes += first.value.length;
        yield first.value;
        for (;;) {
          const n = await it.next();
          if (n.done) return;
          bytes += n.value.length;
          yield n.value;
        }
      })(),
    );
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        try {
          onText(decoder.decode(chunk, { stream: true }));
          cb();
        } catch (err) {
          cb(err as Error);
        }
      },
      final(cb) {
        try {
          onText(decoder.decode());
          cb();
        } catch (err) {
          cb(err as Error);
        }
      },
    });
    try {
      if (gz) await pipeline(source, createGunzip(), sink);
      else await pipeline(source, sink);
    } catch (err) {
      if (err instanceof CohortApiError) throw err;
      throw new CohortApiError('unavailable', 200, `the export file download failed after ${bytes} bytes: ${(err as Error).message}`);
    }
    return { bytes };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
