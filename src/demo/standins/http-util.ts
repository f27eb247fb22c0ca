import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the stand-ins share: plain node:http plumbing, kept cheap so benchmarks measure the gateway. */

export function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.writableEnded || res.destroyed) return;
  const text = typeof body === 'string';
  const payload = text ? body : JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': text ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': String(Buffer.byteLength(payload)),
  });
  res.end(payload);
}

export interface BodyRead {
  body: Buffer;
  bytes: number;
  tooLarge: boolean;
}

/** Reads the whole body but keeps at most `limit` bytes, so an oversized upload still drains and the connection stays usable. */
export function readBody(req: IncomingMessage, limit: number): Promise<BodyRead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limit) {
        tooLarge = true;
        chunks.length = 0;
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve({ body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), bytes, tooLarge }));
    req.on('error', reject);
  });
}

/** Promises that resolve once a count (events accepted so far) reaches their target. */
export class CountWaiters {
  private readonly waiters = new Set<{ n: number; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    private readonly count: () => number,
    private readonly name: string,
  ) {}

  wait(n: number, timeoutMs: number): Promise<void> {
    if (this.count() >= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w = {
        n,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(new Error(`${this.name}: ${this.count()} of ${n} events after ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  notify(): void {
    const c = this.count();
    for (const w of this.waiters) {
      if (c >= w.n) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  rejectAll(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new Error(`${this.name} closed`));
    }
    this.waiters.clear();
  }
}

/**
 * Serves `handle` on host:port (0: any free port). A handler that throws answers 500 rather than
 * crashing the test process; keep-alive outlasts undici's so benchmark connections are reused.
 */
export async function serve(
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  onError: (res: ServerResponse, err: unknown) => void,
  port: number,
  host: string,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => onError(res, err));
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/** An answer a stand-in gives the next `count` requests instead of processing them. */
export interface StandInFault {
  /** HTTP status to answer; 0 destroys the connection without an answer (a reset). */
  status: number;
  /** How many consecutive requests get this answer. */
  count: number;
  /** Sent over the rate-limit headers, so a test can set e.g. `X-RateLimit-Reset` or `Retry-After`. */
  headers?: Record<string, string>;
  /** JSON body (a string is sent as text); each stand-in has its vendor's default */
  body?: unknown;
  /** Real milliseconds to wait before answering, to provoke client timeouts. */
  delayMs?: number;
  /**
   * Process (and store) the request normally, then send the fault instead of the real answer:
   * the "accepted but the answer was lost" case that makes blind retries duplicate events.
   */
  afterProcessing?: boolean;
}

/** The faults a test queued for a stand-in, served in order, each for its count of requests. */
export class FaultQueue {
  private readonly queue: StandInFault[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  add(fault: StandInFault): void {
    if (fault.count > 0) this.queue.push({ ...fault });
  }

  /** The fault for the next request, if any. */
  take(): StandInFault | undefined {
    const f = this.queue[0];
    if (!f) return undefined;
    f.count--;
    if (f.count <= 0) this.queue.shift();
    return f;
  }

  /** Runs `fire` now, or after the fault's delay (to provoke client timeouts). */
  schedule(fault: StandInFault, fire: () => void): void {
    if (!fault.delayMs || fault.delayMs <= 0) {
      fire();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      fire();
    }, fault.delayMs);
    this.timers.add(t);
  }

  clear(): void {
    this.queue.length = 0;
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.clear();
  }
}
