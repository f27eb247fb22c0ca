/**
 * The two HTTP surfaces on real servers (127.0.0.1, port 0): without ADMIN_HTTP_PORT one port
 * serves everything; with it, the public port serves only the vendor POSTs and the admin port
 * the operator's routes. HTTPS on the public port with a certificate made here by openssl. The
 * Dockerfile's HEALTHCHECK probe against each layout. Then the whole gateway, split, on the mock
 * broker: POST /currents is public, /metrics is not.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config/config.js';
import { Gateway } from '../../src/gateway.js';
import { HealthRegistry } from '../../src/health/connector-health.js';
import { Metrics } from '../../src/observability/metrics.js';
import { adminRoutes, HttpServers, publicRoutes } from '../../src/server.js';
import { sampleCurrentsEvent } from '../../src/demo/sample-currents.js';
import { memoryLogger, useMockCluster } from '../support/harness.js';
import { CURRENTS_TOKEN, inboundHarness } from '../support/inbound-harness.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ADMIN_ROUTES: Array<[string, string]> = [['GET', '/metrics'], ['GET', '/healthz'], ['GET', '/readyz'], ['GET', '/connectors'], ['GET', '/cohorts']];
const PUBLIC_ROUTES: Array<[string, string]> = [['POST', '/currents'], ['POST', '/cohorts']];

/** env for loadConfig: ports 0 on loopback, plus what the test adds */
function httpConfig(env: Record<string, string> = {}) {
  return loadConfig({ KAFKA_BROKERS: 'localhost:9092', HTTP_PORT: '0', HTTP_HOST: '127.0.0.1', ...env }).http;
}

const open: HttpServers[] = [];
afterEach(async () => {
  while (open.length) await open.pop()?.close();
});

/** servers with the operator's routes plus stand-ins for the flows' routes: POST /currents, POST /cohorts (public), GET /cohorts (admin) */
async function start(env: Record<string, string> = {}): Promise<HttpServers> {
  const { logger } = memoryLogger('warn');
  const servers = await HttpServers.build({
    logger,
    metrics: new Metrics(),
    health: new HealthRegistry(systemClock),
    readiness: [{ name: 'test', ready: () => true }],
    http: httpConfig(env),
    routes: [
      publicRoutes((app) => {
        app.post('/currents', async () => ({ stored: 0 }));
      }),
      publicRoutes((app) => {
        app.post('/cohorts', async () => ({ stored: 0 }));
      }),
      adminRoutes((app) => {
        app.get('/cohorts', async () => ({ syncs: [] }));
      }),
    ],
  });
  open.push(servers);
  await servers.listen();
  return servers;
}

async function status(base: string | undefined, method: string, path: string, dispatcher?: Agent): Promise<number> {
  if (!base) throw new Error('server not listening');
  const r = await request(`${base}${path}`, { method: method as 'GET' | 'POST', ...(method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/json' } } : {}), ...(dispatcher ? { dispatcher } : {}) });
  await r.body.dump();
  return r.statusCode;
}

describe('without ADMIN_HTTP_PORT', () => {
  it('serves every route on HTTP_PORT, as before', async () => {
    const s = await start();
    expect(s.adminServer).toBeUndefined();
    expect(s.adminUrl).toBe(s.publicUrl);
    for (const [m, p] of [...ADMIN_ROUTES, ...PUBLIC_ROUTES]) expect(await status(s.publicUrl, m, p), `${m} ${p}`).toBe(200);
  });
});

describe('with ADMIN_HTTP_PORT', () => {
  it('serves only the vendor POSTs on the public port and the operator routes on the admin port', async () => {
    const s = await start({ ADMIN_HTTP_PORT: '0' });
    expect(s.adminServer).toBeDefined();
    expect(s.adminUrl).not.toBe(s.publicUrl);
    for (const [m, p] of PUBLIC_ROUTES) {
      expect(await status(s.publicUrl, m, p), `public ${m} ${p}`).toBe(200);
      expect(await status(s.adminUrl, m, p), `admin ${m} ${p}`).toBe(404);
    }
    for (const [m, p] of ADMIN_ROUTES) {
      expect(await status(s.adminUrl, m, p), `admin ${m} ${p}`).toBe(200);
      expect(await status(s.publicUrl, m, p), `public ${m} ${p}`).toBe(404);
    }
  });

  it('binds the admin port to ADMIN_HTTP_HOST, 127.0.0.1 unless told otherwise', async () => {
    const s = await start({ ADMIN_HTTP_PORT: '0', HTTP_HOST: '0.0.0.0' });
    const admin = s.adminServer?.server.address();
    const pub = s.publicServer.server.address();
    expect(admin && typeof admin === 'object' ? admin.address : undefined).toBe('127.0.0.1');
    expect(pub && typeof pub === 'object' ? pub.address : undefined).toBe('0.0.0.0');
    // and where ADMIN_HTTP_HOST says, when it says (0.0.0.0 as in docker-compose, so Prometheus reaches it)
    const told = await start({ ADMIN_HTTP_PORT: '0', ADMIN_HTTP_HOST: '0.0.0.0' });
    const bound = told.adminServer?.server.address();
    expect(bound && typeof bound === 'object' ? bound.address : undefined).toBe('0.0.0.0');
    expect(await status(told.adminUrl ?? '', 'GET', '/healthz')).toBe(200);
  });

  it('fails to start, leaving nothing listening, when the admin port is taken', async () => {
    const first = await start({ ADMIN_HTTP_PORT: '0' });
    const taken = new URL(first.adminUrl ?? '').port;
    const { logger } = memoryLogger('silent');
    const second = await HttpServers.build({ logger, metrics: new Metrics(), health: new HealthRegistry(systemClock), readiness: [], http: httpConfig({ ADMIN_HTTP_PORT: taken }) });
    await expect(second.listen()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(second.publicServer.server.listening).toBe(false);
  });
});

describe('HTTPS on the public port', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  let trusting: Agent;

  beforeAll(() => {
    // a self-signed certificate for 127.0.0.1, made for this test
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
    // the client trusts exactly that certificate: verification stays on
    trusting = new Agent({ connect: { ca: readFileSync(cert) } });
  });

  it('answers over TLS with the configured certificate, and not in plain HTTP', async () => {
    const s = await start({ HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key });
    expect(s.publicUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await status(s.publicUrl, 'POST', '/currents', trusting)).toBe(200);
    expect(await status(s.publicUrl, 'GET', '/healthz', trusting)).toBe(200);
    // an unknown certificate is refused by a verifying client
    await expect(status(s.publicUrl, 'GET', '/healthz')).rejects.toThrow(/self[- ]signed|certificate/i);
    // plain HTTP to the TLS port gets no HTTP answer
    await expect(status(s.publicUrl?.replace('https:', 'http:'), 'GET', '/healthz')).rejects.toThrow();
  });

  it('keeps the admin port plain HTTP on loopback when both are set', async () => {
    const s = await start({ HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key, ADMIN_HTTP_PORT: '0' });
    expect(s.publicUrl).toMatch(/^https:/);
    expect(s.adminUrl).toMatch(/^http:\/\/127\.0\.0\.1:/);
    expect(await status(s.publicUrl, 'POST', '/currents', trusting)).toBe(200);
    expect(await status(s.publicUrl, 'GET', '/metrics', trusting)).toBe(404);
    expect(await status(s.adminUrl, 'GET', '/metrics')).toBe(200);
  });
});

describe('the Dockerfile HEALTHCHECK', () => {
  const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
  const m = /^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$/m.exec(dockerfile);
  const cmd = JSON.parse(m?.[1] ?? '[]') as string[];
  /** runs the probe as Docker would, asynchronously: the servers answer from this very process */
  const probe = (env: Record<string, string>): Promise<number | null> => {
    const [bin, ...args] = cmd;
    expect(bin).toBe('node');
    const clean: NodeJS.ProcessEnv = { PATH: process.env.PATH, ...env };
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, args, { env: clean, stdio: 'ignore', timeout: 10_000 });
      child.once('error', reject);
      child.once('exit', (code) => resolve(code));
    });
  };
  const portOf = (url: string | undefined) => new URL(url ?? '').port;

  it('probes /healthz on HTTP_PORT, on ADMIN_HTTP_PORT when set, and over HTTPS when HTTPS_CERT_FILE is set', async () => {
    expect(cmd.length).toBeGreaterThan(0);
    const one = await start();
    expect(await probe({ HTTP_PORT: portOf(one.publicUrl) })).toBe(0);
    const split = await start({ ADMIN_HTTP_PORT: '0' });
    expect(await probe({ HTTP_PORT: portOf(split.publicUrl), ADMIN_HTTP_PORT: portOf(split.adminUrl) })).toBe(0);
    // the public port of a split gateway has no /healthz: the probe must not look there
    expect(await probe({ HTTP_PORT: portOf(split.publicUrl) })).toBe(1);
    const dir = mkdtempSync(join(tmpdir(), 'gw-tls-hc-'));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'pipe' });
    const tls = await start({ HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key });
    expect(await probe({ HTTP_PORT: portOf(tls.publicUrl), HTTPS_CERT_FILE: cert })).toBe(0);
  }, 30_000);
});

describe('the gateway, split', () => {
  const broker = useMockCluster();

  it('takes POST /currents on the public port only, and serves /metrics, /readyz, /connectors on the admin port only', async () => {
    const { config } = await inboundHarness(broker, { AMPLITUDE_API_KEY: '', ADMIN_HTTP_PORT: '0' });
    const { logger } = memoryLogger('warn');
    const gw = new Gateway({ config, logger });
    broker.cleanups.push(() => gw.stop(5_000));
    await gw.start();
    expect(gw.address).not.toBe(gw.adminAddress);
    const post = (base: string | undefined) =>
      request(`${base ?? ''}/currents`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${CURRENTS_TOKEN}`, 'braze-currents-version': '1' },
        body: JSON.stringify({ events: [sampleCurrentsEvent(0, { users: 5 })] }),
      }).then(async (r) => {
        await r.body.dump();
        return r.statusCode;
      });
    expect(await post(gw.address)).toBe(200);
    expect(await post(gw.adminAddress)).toBe(404);
    for (const path of ['/metrics', '/healthz', '/readyz', '/connectors']) {
      expect(await status(gw.address, 'GET', path), `public ${path}`).toBe(404);
      expect([200, 503], `admin ${path}`).toContain(await status(gw.adminAddress, 'GET', path));
    }
    expect(await status(gw.adminAddress, 'GET', '/metrics')).toBe(200);
  }, 60_000);
});
