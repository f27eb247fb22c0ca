import { createServer } from 'node:net';

export interface PortChoice {
  /** the port to listen on */
  port: number;
  /** the preferred port was taken, so `port` is another, free one */
  moved: boolean;
}

/**
 * The preferred port if it is free on `host`, else a free port the system picks. Used by the demo,
 * which should run next to whatever already holds 8080 and say where it went. (The check and the
 * real listen are two steps, so a port taken in between still fails: that is rare, and it says so.)
 */
export async function choosePort(preferred: number, host: string): Promise<PortChoice> {
  if (preferred === 0) return { port: 0, moved: false };
  const free = await tryListen(preferred, host);
  if (free !== undefined) return { port: free, moved: false };
  const other = await tryListen(0, host);
  if (other === undefined) throw new Error(`no free port on ${host}`);
  return { port: other, moved: true };
}

/** the port bound (and released again), or undefined when it is in use */
function tryListen(port: number, host: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES') resolve(undefined);
      else reject(err);
    });
    srv.listen({ port, host, exclusive: true }, () => {
      const a = srv.address();
      const bound = a && typeof a === 'object' ? a.port : port;
      srv.close(() => resolve(bound));
    });
  });
}
