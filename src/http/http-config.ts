import { accessSync, constants } from 'node:fs';
import type { SettingsReader } from '../config/reader.js';

/**
 * The HTTP settings: the public port vendors post to, the optional admin port the operator's
 * routes move to, and the public port's TLS. Read from src/config/config.ts; defaults live here.
 */
export interface HttpSettings {
  /** the public port: vendor POSTs (and, without an admin port, everything else) */
  port: number;
  host: string;
  /** when set, GET /metrics, /healthz, /readyz, /connectors and /cohorts are served here instead */
  adminPort?: number;
  adminHost: string;
  /** when set, the public port speaks HTTPS with this certificate chain and key (PEM files) */
  tls?: { certFile: string; keyFile: string };
}

export function readHttpSettings(r: SettingsReader): HttpSettings {
  const port = r.int('HTTP_PORT', { path: 'http.port', default: 8080, min: 0, max: 65535, doc: 'the public port: what vendors post to (POST /currents, POST /cohorts); also /metrics, /healthz, /readyz, /connectors and GET /cohorts unless ADMIN_HTTP_PORT is set' });
  const host = r.string('HTTP_HOST', { path: 'http.host', default: '0.0.0.0', doc: 'address the public port binds to' });
  const adminPort = r.int('ADMIN_HTTP_PORT', { path: 'http.adminPort', min: 0, max: 65535, doc: 'when set, GET /metrics, /healthz, /readyz, /connectors and /cohorts move to this port and the public port serves only the vendor POSTs (0: any free port)' });
  const adminHost = r.string('ADMIN_HTTP_HOST', { path: 'http.adminHost', default: '127.0.0.1', doc: 'address the admin port binds to (loopback by default; `0.0.0.0` inside a container whose port is published on the host\'s loopback)' });
  const certFile = r.string('HTTPS_CERT_FILE', { path: 'http.tls.certFile', doc: 'PEM certificate chain: with HTTPS_KEY_FILE, the public port speaks HTTPS (Braze Currents posts only to HTTPS endpoints)' });
  const keyFile = r.string('HTTPS_KEY_FILE', { path: 'http.tls.keyFile', doc: 'PEM private key of HTTPS_CERT_FILE' });
  if (adminPort !== undefined && adminPort !== 0 && adminPort === port) r.problem('ADMIN_HTTP_PORT', `must differ from HTTP_PORT (${port})`);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    r.problem(certFile === undefined ? 'HTTPS_CERT_FILE' : 'HTTPS_KEY_FILE', 'is required when the other of HTTPS_CERT_FILE and HTTPS_KEY_FILE is set (set both, or neither)');
  }
  for (const [setting, file] of [['HTTPS_CERT_FILE', certFile], ['HTTPS_KEY_FILE', keyFile]] as const) {
    if (file === undefined) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (err) {
      r.problem(setting, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return {
    port,
    host,
    ...(adminPort !== undefined ? { adminPort } : {}),
    adminHost,
    ...(certFile !== undefined && keyFile !== undefined ? { tls: { certFile, keyFile } } : {}),
  };
}
