import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, settingsReference } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/logger.js';

const base = { KAFKA_BROKERS: 'localhost:9092' };

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('loadConfig', () => {
  it('runs on defaults with only the brokers set, both legs off', () => {
    const c = loadConfig(base);
    expect(c.kafka.brokers).toEqual(['localhost:9092']);
    expect(c.braze).toBeUndefined();
    expect(c.topics).toEqual({ amplitudeEvents: 'amplitude.events', brazeCurrents: 'braze.currents', deadLetter: 'gateway.dead-letter', retry: 'gateway.retry', retryQuota: 'gateway.retry.quota', limits: 'gateway.limits', state: 'gateway.state', cohorts: 'gateway.cohorts', attributeState: 'gateway.attribute-state' });
    expect(c.outbound.identifiers).toEqual([
      { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
      { source: { kind: 'device_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_device_id' } },
    ]);
    expect(c.http.port).toBe(8080);
    expect(c.amplitude.httpApiUrl).toBe('https://api2.amplitude.com/2/httpapi');
  });

  it.each([
    [{}, 'KAFKA_BROKERS: is required'],
    [{ KAFKA_BROKERS: 'nohost' }, 'KAFKA_BROKERS: "nohost" is not host:port'],
    [{ ...base, HTTP_PORT: 'eighty' }, 'HTTP_PORT: must be an integer'],
    [{ ...base, HTTP_PORT: '70000' }, 'HTTP_PORT: must be at most 65535'],
    [{ ...base, BRAZE_API_KEY: 'k' }, 'BRAZE_REST_ENDPOINT: is required when BRAZE_API_KEY is set'],
    [{ ...base, BRAZE_REST_ENDPOINT: 'ftp://x' }, 'BRAZE_REST_ENDPOINT: must be an http(s) URL'],
    [{ ...base, BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY: '"k"' }, 'BRAZE_API_KEY: is quoted'],
    [{ ...base, BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY: 'k', BRAZE_MAX_PER_ARRAY: '100' }, 'BRAZE_MAX_PER_ARRAY: must be at most 75'],
    [{ ...base, KAFKA_SASL_MECHANISM: 'scram-sha-512' }, 'KAFKA_SASL_MECHANISM: needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD'],
    [{ ...base, KAFKA_SASL_MECHANISM: 'gssapi' }, 'KAFKA_SASL_MECHANISM: must be one of plain, scram-sha-256, scram-sha-512'],
    [{ ...base, KAFKA_SSL: 'maybe' }, 'KAFKA_SSL: must be true or false'],
    [{ ...base, AMPLITUDE_REGION: 'APAC' }, 'AMPLITUDE_REGION: must be one of US, EU'],
    [{ ...base, LOG_LEVEL: 'loud' }, 'LOG_LEVEL: must be one of'],
    [{ ...base, OUTBOUND_IDENTIFIERS: 'user_id=phone' }, 'target must be one of external_id, user_alias, braze_id, email'],
    [{ ...base, OUTBOUND_IDENTIFIERS: 'device_id=user_alias' }, 'user_alias needs an alias label'],
    [{ ...base, OUTBOUND_IDENTIFIERS: 'a=external_id,b=external_id,c=external_id,d=external_id' }, 'needs one to three entries'],
  ])('names the bad setting: %j', (env, want) => {
    expect(problems(env as Record<string, string>).join('\n')).toContain(want);
  });

  it('reads identifier mappings, SASL and regions', () => {
    const c = loadConfig({
      ...base,
      OUTBOUND_IDENTIFIERS: 'property:crm_id=braze_id,user_id=external_id,device_id=user_alias:anon',
      KAFKA_SASL_MECHANISM: 'SCRAM-SHA-256',
      KAFKA_SASL_USERNAME: 'u',
      KAFKA_SASL_PASSWORD: 'p',
      KAFKA_SSL: 'true',
      AMPLITUDE_REGION: 'eu',
    });
    expect(c.outbound.identifiers[0]).toEqual({ source: { kind: 'user_property', name: 'crm_id' }, target: { kind: 'braze_id' } });
    expect(c.outbound.identifiers[2]).toEqual({ source: { kind: 'device_id' }, target: { kind: 'user_alias', aliasLabel: 'anon' } });
    expect(c.kafka.sasl).toEqual({ mechanism: 'scram-sha-256', username: 'u', password: 'p' });
    expect(c.kafka.ssl).toBe(true);
    expect(c.amplitude.httpApiUrl).toBe('https://api.eu.amplitude.com/2/httpapi');
  });

  it('takes settings from GATEWAY_CONFIG, with the environment winning', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `kafka:\n  brokers: [a:1, b:2]\nbraze:\n  restEndpoint: https://rest.fra-01.braze.eu\n  apiKey: yaml-key\n  maxObjectsPerRequest: 50\noutbound:\n  filter:\n    allow: ["Purchase*", signup]\n  identifiers:\n    - from: user_id\n      to: external_id\n    - from: property:email\n      to: email\nhttp:\n  port: 9000\n`,
    );
    const c = loadConfig({ GATEWAY_CONFIG: file, HTTP_PORT: '9100' });
    expect(c.kafka.brokers).toEqual(['a:1', 'b:2']);
    expect(c.braze?.maxTotal).toBe(50);
    expect(c.outbound.filter.allow).toEqual(['Purchase*', 'signup']);
    expect(c.outbound.identifiers[1]).toEqual({ source: { kind: 'user_property', name: 'email' }, target: { kind: 'email' } });
    expect(c.http.port).toBe(9100);
    writeFileSync(file, 'http:\n  port: [1\n');
    expect(problems({ GATEWAY_CONFIG: file }).join()).toContain('GATEWAY_CONFIG');
    writeFileSync(file, 'http:\n  port: nope\n');
    expect(problems({ GATEWAY_CONFIG: file, ...base }).join()).toContain('http.port (GATEWAY_CONFIG): must be an integer');
  });

  it('documents every setting, and marks the secrets', () => {
    const ref = settingsReference();
    const secrets = ref.filter((r) => r.secret).map((r) => r.env).sort();
    expect(secrets).toEqual(['AMPLITUDE_API_KEY', 'AMPLITUDE_SECRET_KEY', 'BRAZE_API_KEY', 'BRAZE_DATA_IMPORT_KEY', 'BRAZE_PARTNER_API_KEY', 'COHORT_WEBHOOK_TOKEN', 'CURRENTS_TOKEN', 'KAFKA_SASL_PASSWORD', 'NOTIFY_SMTP_URL', 'NOTIFY_WEBHOOK_URL']);
    for (const name of ['KAFKA_BROKERS', 'KAFKA_CLIENT_ID', 'KAFKA_SSL', 'BRAZE_REST_ENDPOINT', 'BRAZE_APP_ID', 'AMPLITUDE_REGION', 'AMPLITUDE_HTTP_API_URL', 'AMPLITUDE_API_URL', 'HTTP_PORT', 'LOG_LEVEL', 'TOPIC_DEAD_LETTER']) {
      expect(ref.map((r) => r.env)).toContain(name);
    }
  });
});

describe('endpoints as an operator types them', () => {
  it.each([
    ['a host', 'https://api2.amplitude.com', 'https://api2.amplitude.com/2/httpapi', 'httpapi', 30, 1_000_000],
    ['a host with a trailing slash', 'https://api2.amplitude.com/', 'https://api2.amplitude.com/2/httpapi', 'httpapi', 30, 1_000_000],
    ['a bare host', 'api.eu.amplitude.com', 'https://api.eu.amplitude.com/2/httpapi', 'httpapi', 30, 1_000_000],
    ['the HTTP V2 endpoint as documented', 'https://api2.amplitude.com/2/httpapi', 'https://api2.amplitude.com/2/httpapi', 'httpapi', 30, 1_000_000],
    ['a local stand-in', 'http://127.0.0.1:9999/2/httpapi/', 'http://127.0.0.1:9999/2/httpapi', 'httpapi', 30, 1_000_000],
    ['the Batch API', 'https://api2.amplitude.com/batch', 'https://api2.amplitude.com/batch', 'batch', 1_000, 19_000_000],
  ])('AMPLITUDE_HTTP_API_URL as %s', (_name, typed, url, endpoint, perId, bytes) => {
    const c = loadConfig({ ...base, AMPLITUDE_HTTP_API_URL: typed });
    expect(c.amplitude.httpApiUrl).toBe(url);
    expect(c.amplitude.endpoint).toBe(endpoint);
    expect(c.limits.eventsPerSecond).toBe(perId);
    expect(c.inbound.maxRequestBytes).toBe(bytes);
  });

  it('keeps the per-id rate settable with the Batch API', () => {
    const c = loadConfig({ ...base, AMPLITUDE_HTTP_API_URL: 'https://api2.amplitude.com/batch', AMPLITUDE_ID_EVENTS_PER_SECOND: '100' });
    expect(c.limits.eventsPerSecond).toBe(100);
  });

  it('refuses an ingest URL that is neither a host nor an ingest endpoint', () => {
    expect(problems({ ...base, AMPLITUDE_HTTP_API_URL: 'https://api2.amplitude.com/api/3/cohorts' }).join('\n')).toMatch(/AMPLITUDE_HTTP_API_URL.*\/2\/httpapi or \/batch/);
  });

  it.each([
    ['the instance URL', 'https://rest.iad-01.braze.com', 'https://rest.iad-01.braze.com'],
    ['a bare host', 'rest.fra-01.braze.eu', 'https://rest.fra-01.braze.eu'],
    ['the endpoint\'s full URL', 'https://rest.iad-01.braze.com/users/track', 'https://rest.iad-01.braze.com'],
  ])('BRAZE_REST_ENDPOINT as %s', (_name, typed, want) => {
    const c = loadConfig({ ...base, BRAZE_REST_ENDPOINT: typed, BRAZE_API_KEY: 'k-123456' });
    expect(c.braze?.restEndpoint).toBe(want);
  });
});

describe('README', () => {
  it('documents every setting the code reads', () => {
    const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
    const missing = settingsReference().filter((r) => !readme.includes(`\`${r.env}\``)).map((r) => r.env);
    expect(missing).toEqual([]);
  });
});

describe('logger redaction', () => {
  it('never writes keys, tokens or passwords', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const log = createLogger('info', sink);
    // every setting the reader marks secret, set to a recognisable value
    const secrets = Object.fromEntries(settingsReference().filter((d) => d.secret).map((d) => [d.env, d.env === 'NOTIFY_SMTP_URL' ? 'smtp://u:sekret-smtp@mail.example:25' : d.type === 'URL' || d.env.endsWith('_URL') ? `https://sekret-${d.env.toLowerCase()}.example` : `sekret-${d.env.toLowerCase()}`]));
    const config = loadConfig({ ...base, BRAZE_REST_ENDPOINT: 'https://x.braze.com', KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', COHORT_SYNCS: '123:daily', NOTIFY_EMAIL_TO: 'ops@example.com', ...secrets });
    expect(Object.keys(secrets).length).toBeGreaterThanOrEqual(8);
    log.info({ config }, 'config');
    log.info({ headers: { authorization: 'Bearer sekret-braze' } }, 'request');
    log.info({ req: { headers: { authorization: 'Bearer sekret-tok' } } }, 'request');
    const out = lines.join('');
    expect(out).not.toMatch(/sekret/);
    expect(out).toContain('[redacted]');
  });
});
