/**
 * docker-compose.yml stays valid and safe by default: dclint (the Docker Compose linter, a dev
 * dependency) with the rules in .dclintrc.yml finds nothing, and on top of it: every published
 * port except the gateway's public one is bound to 127.0.0.1, no password has a default, and
 * anonymous Grafana is off unless asked for. No Docker needed.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DCLinter } from 'dclint';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMPOSE = join(root, 'docker-compose.yml');
const LINT_CONFIG = join(root, '.dclintrc.yml');
/** the gateway's public port (HTTP_PORT's default): the one port meant for the internet */
const PUBLIC_PORT = '8080';

interface LintMessage {
  rule: string;
  type: string;
  message: string;
  line: number;
}

/** .dclintrc.yml: rule name → level (0 off, 1 warning, 2 error), or [level, options] */
interface LintConfig {
  rules: Record<string, 0 | 1 | 2 | [0 | 1 | 2, Record<string, unknown>]>;
  quiet: boolean;
  debug: boolean;
  exclude: string[];
}

/**
 * dclint's own linter (the library the `dclint` command runs) with the rules of .dclintrc.yml.
 * In-process rather than through its command line, whose argument parser needs Node 20.19 or later.
 */
function lint(file: string): LintMessage[] {
  const cfg = parseYaml(readFileSync(LINT_CONFIG, 'utf8')) as Partial<LintConfig>;
  const linter = new DCLinter({ quiet: false, debug: false, exclude: [], ...cfg, rules: cfg.rules ?? {} });
  // dclint's type declarations use extension-less imports that NodeNext resolution does not follow: its result shape, as documented
  const results = linter.lintFiles([file], false) as unknown as Array<{ filePath: string; messages: LintMessage[] }>;
  return results.flatMap((r) => r.messages.map((m) => ({ rule: m.rule, type: m.type, message: m.message, line: m.line })));
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function services(): Array<[string, Obj]> {
  const doc = parseYaml(readFileSync(COMPOSE, 'utf8')) as unknown;
  if (!isObj(doc) || !isObj(doc.services)) throw new Error('docker-compose.yml has no services');
  return Object.entries(doc.services).map(([name, s]) => {
    if (!isObj(s)) throw new Error(`service ${name} is not a mapping`);
    return [name, s];
  });
}

interface Published {
  service: string;
  hostIp: string;
  published: string;
  target: string;
  spec: string;
}

/** every published port, short syntax (`[ip:]host:container[/proto]`) or long syntax */
function publishedPorts(): Published[] {
  const out: Published[] = [];
  for (const [service, s] of services()) {
    for (const p of (s.ports ?? []) as unknown[]) {
      if (isObj(p)) {
        out.push({ service, hostIp: String(p.host_ip ?? ''), published: String(p.published ?? ''), target: String(p.target ?? ''), spec: JSON.stringify(p) });
        continue;
      }
      const spec = String(p);
      const parts = spec.replace(/\/(tcp|udp)$/, '').split(':');
      const target = parts.pop() ?? '';
      const published = parts.pop() ?? '';
      out.push({ service, hostIp: parts.join(':'), published, target, spec });
    }
  }
  return out;
}

function environment(s: Obj): Obj {
  const env = s.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e) => {
      const t = String(e);
      const i = t.indexOf('=');
      return i < 0 ? [t, undefined] : [t.slice(0, i), t.slice(i + 1)];
    }));
  }
  return isObj(env) ? env : {};
}

/** compose's interpolation, for the forms the file uses: `${VAR}`, `${VAR:-default}`, `${VAR:?error}` */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}/g, (_m, name: string, op: string | undefined, arg: string | undefined) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (op === ':?') throw new Error(`required variable ${name} is missing a value: ${arg ?? ''}`);
    return op === ':-' ? (arg ?? '') : '';
  });
}

describe('docker-compose.yml under dclint', () => {
  it('turns on the rules that matter', () => {
    const cfg = parseYaml(readFileSync(LINT_CONFIG, 'utf8')) as { rules: Record<string, unknown> };
    const level = (rule: string): unknown => {
      const v = cfg.rules[rule];
      return Array.isArray(v) ? v[0] : v;
    };
    for (const rule of ['no-unbound-port-interfaces', 'no-duplicate-exported-ports', 'service-image-require-explicit-tag', 'require-quotes-in-ports', 'no-version-field', 'no-duplicate-container-names']) {
      expect(level(rule), rule).toBe(2);
    }
  });

  it('passes: schema-valid, no errors, no warnings', () => {
    expect(lint(COMPOSE).map((m) => `${m.line}: ${m.message} [${m.rule}]`)).toEqual([]);
  }, 60_000);

  it('would catch an unbound port, a moving image tag and an invalid file (the lint is not a no-op)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dclint-'));
    const bad = join(dir, 'docker-compose.yml');
    writeFileSync(bad, 'name: bad\nservices:\n  grafana:\n    image: grafana/grafana:latest\n    ports:\n      - "3000:3000"\n');
    const found = lint(bad);
    expect(found.map((m) => m.rule)).toEqual(expect.arrayContaining(['no-unbound-port-interfaces', 'service-image-require-explicit-tag']));
    expect(found.filter((m) => m.rule === 'no-unbound-port-interfaces').map((m) => m.type)).toEqual(['error']);
    writeFileSync(bad, 'name: bad\nservices:\n  grafana:\n    image: grafana/grafana:11.2.0\n    portz:\n      - "127.0.0.1:3000:3000"\n');
    expect(lint(bad).map((m) => m.rule)).toContain('invalid-schema');
  }, 60_000);
});

describe('docker-compose.yml is safe by default', () => {
  it('publishes only the gateway\'s public port beyond 127.0.0.1', () => {
    const ports = publishedPorts();
    expect(ports.length).toBeGreaterThan(0);
    const open = ports.filter((p) => p.hostIp !== '127.0.0.1');
    expect(open.map((p) => `${p.service} ${p.spec}`)).toEqual([`gateway 0.0.0.0:${PUBLIC_PORT}:${PUBLIC_PORT}`]);
    for (const name of ['kafka', 'prometheus', 'grafana']) {
      const mine = ports.filter((p) => p.service === name);
      expect(mine.length, `${name} publishes a port`).toBeGreaterThan(0);
      for (const p of mine) expect(p.hostIp, `${name} ${p.spec}`).toBe('127.0.0.1');
    }
  });

  it('keeps the gateway\'s operator routes off the public port (ADMIN_HTTP_PORT, published on loopback only)', () => {
    const gateway = services().find(([n]) => n === 'gateway')?.[1] ?? {};
    const admin = String(environment(gateway).ADMIN_HTTP_PORT ?? '');
    expect(admin).toMatch(/^\d+$/);
    const adminPorts = publishedPorts().filter((p) => p.service === 'gateway' && p.target === admin);
    for (const p of adminPorts) expect(p.hostIp, p.spec).toBe('127.0.0.1');
  });

  it('gives no password a default: Grafana\'s admin password is required, so compose refuses to start without it', () => {
    const text = readFileSync(COMPOSE, 'utf8');
    expect(text).not.toMatch(/PASSWORD:-/);
    expect(text).not.toMatch(/:-admin\b/);
    for (const [name, s] of services()) {
      for (const [key, raw] of Object.entries(environment(s))) {
        if (!/(PASSWORD|SECRET|TOKEN|API_KEY)/.test(key)) continue;
        const value = String(raw ?? '');
        // a secret is either taken from the environment as required, or not set here at all
        expect(value, `${name}.${key}`).toMatch(/^\$\{[A-Z0-9_]+:\?[^}]+\}$/);
        expect(() => interpolate(value, {}), `${name}.${key} without .env`).toThrow(/required variable/);
        expect(interpolate(value, { GRAFANA_ADMIN_PASSWORD: 'chosen-by-operator' })).toBe('chosen-by-operator');
      }
    }
    const grafana = environment(services().find(([n]) => n === 'grafana')?.[1] ?? {});
    expect(String(grafana.GF_SECURITY_ADMIN_PASSWORD)).toContain('GRAFANA_ADMIN_PASSWORD:?');
  });

  it('turns anonymous Grafana on only when GRAFANA_ANONYMOUS_ENABLED asks for it', () => {
    const grafana = environment(services().find(([n]) => n === 'grafana')?.[1] ?? {});
    const anon = String(grafana.GF_AUTH_ANONYMOUS_ENABLED);
    expect(interpolate(anon, {})).toBe('false');
    expect(interpolate(anon, { GRAFANA_ANONYMOUS_ENABLED: 'true' })).toBe('true');
  });

  it('documents the variables compose needs in .env.example, without values', () => {
    const example = readFileSync(join(root, '.env.example'), 'utf8');
    expect(example).toMatch(/^GRAFANA_ADMIN_PASSWORD=$/m);
    expect(example).toMatch(/^GRAFANA_ANONYMOUS_ENABLED=$/m);
  });
});
