/**
 * The exposure settings: secrets from `NAME_FILE` (every secret setting, read once, trailing
 * newline trimmed, never echoed), the admin port and its host, and HTTPS on the public port.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, settingsReference, type GatewayConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/logger.js';

const base = { KAFKA_BROKERS: 'localhost:9092' };
const dir = mkdtempSync(join(tmpdir(), 'gw-secrets-'));
let n = 0;
function file(content: string): string {
  const f = join(dir, `secret-${n++}`);
  writeFileSync(f, content);
  return f;
}

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

/** the core secrets, with the settings that turn them on and where the value lands */
const CORE: Array<{ name: string; companions: Record<string, string>; read: (c: GatewayConfig) => string | undefined }> = [
  { name: 'KAFKA_SASL_PASSWORD', companions: { KAFKA_SASL_MECHANISM: 'scram-sha-512', KAFKA_SASL_USERNAME: 'gateway' }, read: (c) => c.kafka.sasl?.password },
  { name: 'BRAZE_API_KEY', companions: { BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com' }, read: (c) => c.braze?.apiKey },
  { name: 'AMPLITUDE_API_KEY', companions: {}, read: (c) => c.amplitude.apiKey },
  { name: 'AMPLITUDE_SECRET_KEY', companions: {}, read: (c) => c.amplitude.secretKey },
  { name: 'CURRENTS_TOKEN', companions: {}, read: (c) => c.currents?.token },
];

const secretSettings = settingsReference().filter((s) => s.secret).map((s) => s.env);

describe('secrets from NAME_FILE', () => {
  it('covers every setting marked secret, the core ones among them', () => {
    for (const c of CORE) expect(secretSettings).toContain(c.name);
  });

  it.each(CORE)('$name_FILE: the value is read from the file, its trailing newline trimmed', ({ name, companions, read }) => {
    const value = `s3cr3t-${name.toLowerCase()}`;
    expect(read(loadConfig({ ...base, ...companions, [`${name}_FILE`]: file(`${value}\n`) }))).toBe(value);
    expect(read(loadConfig({ ...base, ...companions, [`${name}_FILE`]: file(`${value}\r\n\n`) }))).toBe(value);
    // inner whitespace and a value without a newline are kept as they are
    expect(read(loadConfig({ ...base, ...companions, [`${name}_FILE`]: file('two words') }))).toBe('two words');
  });

  it.each(secretSettings)('%s and %s_FILE both set: a configuration error naming both', (name) => {
    const p = problems({ ...base, [name]: 'https://in-the-environment.example/x', [`${name}_FILE`]: file('from-the-file\n') });
    expect(p.join('\n')).toContain(`${name}: is set and so is ${name}_FILE: set one of them`);
  });

  it.each(secretSettings)('%s_FILE naming a missing file: a configuration error naming the setting', (name) => {
    const missing = join(dir, `no-such-file-${name}`);
    const p = problems({ ...base, [`${name}_FILE`]: missing });
    expect(p).toContain(`${name}_FILE: cannot read ${missing} (ENOENT)`);
  });

  it('refuses an empty secret file', () => {
    const f = file('\n');
    expect(problems({ ...base, CURRENTS_TOKEN_FILE: f })).toContain(`CURRENTS_TOKEN_FILE: ${f} is empty`);
  });

  it('takes NAME_FILE only for secrets (an ordinary setting is set directly)', () => {
    const c = loadConfig({ ...base, KAFKA_CLIENT_ID_FILE: file('from-a-file\n') });
    expect(c.kafka.clientId).toBe('amplitude-braze-gateway');
  });

  it('never shows a secret from a file: not in a logged config, not in a configuration error', () => {
    const values = new Map(CORE.map((c) => [c.name, `never-logged-${c.name.toLowerCase()}`]));
    const env: Record<string, string> = { ...base };
    for (const c of CORE) Object.assign(env, c.companions, { [`${c.name}_FILE`]: file(`${values.get(c.name) ?? ''}\n`) });
    const config = loadConfig(env);
    for (const c of CORE) expect(c.read(config), c.name).toBe(values.get(c.name));

    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    createLogger('info', sink).info({ config }, 'config');
    const out = lines.join('');
    expect(out).toContain('[redacted]');
    for (const v of values.values()) expect(out).not.toContain(v);

    // a bad value read from a file is named by its setting, never quoted back
    const quoted = '"quoted-secret-value"';
    const p = problems({ ...base, BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY_FILE: file(`${quoted}\n`) });
    expect(p.join('\n')).toContain('BRAZE_API_KEY: is quoted');
    expect(p.join('\n')).not.toContain('quoted-secret-value');
    const hook = problems({ ...base, NOTIFY_WEBHOOK_URL_FILE: file('not a url with token-123456\n') });
    expect(hook.join('\n')).toContain('NOTIFY_WEBHOOK_URL_FILE: must be an http(s) URL');
    expect(hook.join('\n')).not.toContain('token-123456');
  });
});

describe('HTTP surfaces', () => {
  it('keeps everything on HTTP_PORT by default, with the admin host on loopback', () => {
    const c = loadConfig(base);
    expect(c.http).toEqual({ port: 8080, host: '0.0.0.0', adminHost: '127.0.0.1' });
  });

  it('reads ADMIN_HTTP_PORT, ADMIN_HTTP_HOST and the HTTPS files', () => {
    const cert = file('cert');
    const key = file('key');
    const c = loadConfig({ ...base, ADMIN_HTTP_PORT: '8081', ADMIN_HTTP_HOST: '0.0.0.0', HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key });
    expect(c.http).toEqual({ port: 8080, host: '0.0.0.0', adminPort: 8081, adminHost: '0.0.0.0', tls: { certFile: cert, keyFile: key } });
  });

  it.each([
    [{ ADMIN_HTTP_PORT: '8080' }, 'ADMIN_HTTP_PORT: must differ from HTTP_PORT (8080)'],
    [{ ADMIN_HTTP_PORT: 'admin' }, 'ADMIN_HTTP_PORT: must be an integer'],
    [{ HTTPS_CERT_FILE: '/etc/hosts' }, 'HTTPS_KEY_FILE: is required when the other of HTTPS_CERT_FILE and HTTPS_KEY_FILE is set'],
    [{ HTTPS_KEY_FILE: '/etc/hosts' }, 'HTTPS_CERT_FILE: is required when the other of HTTPS_CERT_FILE and HTTPS_KEY_FILE is set'],
    [{ HTTPS_CERT_FILE: '/nonexistent/cert.pem', HTTPS_KEY_FILE: '/etc/hosts' }, 'HTTPS_CERT_FILE: cannot read /nonexistent/cert.pem (ENOENT)'],
  ])('names the bad setting: %j', (env, want) => {
    expect(problems({ ...base, ...env }).join('\n')).toContain(want);
  });

  it('documents the four settings', () => {
    const names = settingsReference().map((s) => s.env);
    for (const name of ['ADMIN_HTTP_PORT', 'ADMIN_HTTP_HOST', 'HTTPS_CERT_FILE', 'HTTPS_KEY_FILE']) expect(names).toContain(name);
  });
});
