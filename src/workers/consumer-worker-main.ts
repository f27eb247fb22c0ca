/**
 * A child process of a multi-process gateway (see consumer-workers.ts): it waits for its
 * configuration from the primary, runs the consuming legs as one more member of the consumer
 * groups (no HTTP port), reports its readiness, answers metric scrapes, and drains and stops when
 * asked, or when the primary is gone.
 */
import { Gateway } from '../gateway.js';
import { createLogger } from '../observability/logger.js';
import type { FromChild, ToChild } from './consumer-workers.js';

let gateway: Gateway | undefined;
let stopping = false;

function send(m: FromChild): void {
  if (process.connected) process.send?.(m);
}

function stop(drainTimeoutMs: number): void {
  if (stopping) return;
  stopping = true;
  const done = (code: number) => () => process.exit(code);
  (gateway ? gateway.stop(drainTimeoutMs) : Promise.resolve()).then(done(0), done(1));
}

process.on('message', (raw) => {
  const m = raw as ToChild;
  switch (m.kind) {
    case 'prepare': {
      const logger = createLogger(m.config.logLevel).child({ worker: m.index });
      const g = new Gateway({ config: m.config, logger, listen: false });
      gateway = g;
      const fail = (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'worker could not start');
        send({ kind: 'fatal', error: (err as Error).message });
        process.exit(1);
      };
      g.prepare().then(() => send({ kind: 'prepared' }), fail);
      break;
    }
    case 'consume': {
      const g = gateway;
      if (!g) break;
      g.consume().then(() => {
        send({ kind: 'started' });
        let last = false;
        const report = () => {
          if (g.ready !== last) {
            last = g.ready;
            send({ kind: 'ready', ready: last });
          }
        };
        report();
        setInterval(report, 250).unref();
      }, (err: unknown) => {
        send({ kind: 'fatal', error: (err as Error).message });
        process.exit(1);
      });
      break;
    }
    case 'metrics':
      void gateway?.metrics.registry.getMetricsAsJSON().then((metrics) => send({ kind: 'metrics', id: m.id, metrics }));
      break;
    case 'stop':
      stop(m.drainTimeoutMs);
      break;
  }
});

// The primary is gone (killed, or crashed): drain what is in flight, commit it, and leave.
process.on('disconnect', () => stop(30_000));
// Ctrl-C reaches the whole process group: the child drains and stops as the primary does.
process.on('SIGTERM', () => stop(30_000));
process.on('SIGINT', () => stop(30_000));
