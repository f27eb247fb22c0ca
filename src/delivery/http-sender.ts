import { Pool } from 'undici';

export interface HttpResult {
  /** 0 when no HTTP answer came back (network error or timeout) */
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  durationMs: number;
  /** set when status is 0 */
  networkError?: string;
}

/**
 * One keep-alive connection pool per destination origin. Network errors and timeouts come back
 * as status 0 rather than thrown, so callers classify every outcome in one place.
 */
export class HttpSender {
  private readonly pool: Pool;
  private readonly basePath: string;

  constructor(
    baseUrl: string,
    private readonly opts: { connections: number; timeoutMs: number; userAgent: string },
  ) {
    const u = new URL(baseUrl);
    this.basePath = u.pathname.replace(/\/+$/, '');
    this.pool = new Pool(u.origin, {
      connections: opts.connections,
      keepAliveTimeout: 30_000,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connectTimeout: Math.min(10_000, opts.timeoutMs),
    });
  }

  async post(path: string, body: string | Buffer, headers: Record<string, string>): Promise<HttpResult> {
    const started = performance.now();
    try {
      const res = await this.pool.request({
        path: this.basePath + path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': this.opts.userAgent, ...headers },
        body,
      });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, text, durationMs: performance.now() - started };
    } catch (err) {
      return { status: 0, headers: {}, text: '', durationMs: performance.now() - started, networkError: (err as Error).message };
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
