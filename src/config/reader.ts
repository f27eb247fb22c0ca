import { parse as parseYaml } from 'yaml';
import { readFileSync } from 'node:fs';

/**
 * Reads one setting at a time from the environment (which wins) or the YAML file, records a
 * clear error naming the setting when a value is bad, and keeps a description of every setting
 * so the README's reference table is produced from the same code that reads them.
 */
export interface SettingDoc {
  env: string;
  path: string;
  type: string;
  default: string;
  doc: string;
  secret: boolean;
}

interface Common {
  /** dotted path of the same setting in the YAML file */
  path: string;
  doc: string;
  secret?: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

export type Env = Record<string, string | undefined>;

export function loadYamlFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`GATEWAY_CONFIG: cannot read ${file}: ${(err as Error).message}`]);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`GATEWAY_CONFIG: ${file} is not valid YAML: ${(err as Error).message}`]);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError([`GATEWAY_CONFIG: ${file} must hold a mapping at the top level`]);
  }
  return parsed as Record<string, unknown>;
}

/** `KAFKA_SASL_PASSWORD_FILE` names a file holding `KAFKA_SASL_PASSWORD`; every secret setting has one. */
export const SECRET_FILE_SUFFIX = '_FILE';

/** A secret file's content without its trailing line break(s), or why it cannot be used. */
function readSecretFile(file: string): string | { problem: string } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: `cannot read ${file}${code ? ` (${code})` : ''}` };
  }
  const value = text.replace(/[\r\n]+$/, '');
  if (value === '') return { problem: `${file} is empty` };
  return value;
}

export class SettingsReader {
  readonly problems: string[] = [];
  readonly docs: SettingDoc[] = [];

  constructor(
    private readonly env: Env,
    private readonly yaml: Record<string, unknown> = {},
  ) {}

  /**
   * The raw value from the environment or the YAML file, and where it came from. A secret setting
   * also takes `NAME_FILE`, the path of a file holding the value (the Docker and Kubernetes
   * secrets convention): read here, once, with its trailing newline trimmed. Setting both is a
   * mistake worth stopping for. Problems name the file, never its content.
   */
  private raw(env: string, c: Common): { value: unknown; from: string } | undefined {
    const e = this.env[env];
    const given = e !== undefined && e !== '';
    if (c.secret) {
      const fileEnv = `${env}${SECRET_FILE_SUFFIX}`;
      const file = this.env[fileEnv];
      if (file !== undefined && file !== '') {
        if (given) {
          this.fail(env, `is set and so is ${fileEnv}: set one of them`);
          return undefined;
        }
        const value = readSecretFile(file);
        if (typeof value !== 'string') {
          this.fail(fileEnv, value.problem);
          return undefined;
        }
        return { value, from: fileEnv };
      }
    }
    if (given) return { value: e, from: env };
    const y = this.yamlAt(c.path);
    if (y !== undefined && y !== null) return { value: y, from: `${c.path} (GATEWAY_CONFIG)` };
    return undefined;
  }

  yamlAt(path: string): unknown {
    let node: unknown = this.yaml;
    for (const part of path.split('.')) {
      if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
      node = (node as Record<string, unknown>)[part];
    }
    return node;
  }

  private doc(env: string, c: Common, type: string, def: unknown): void {
    this.docs.push({
      env,
      path: c.path,
      type,
      default: def === undefined ? '' : Array.isArray(def) ? def.join(',') : String(def),
      doc: c.doc,
      secret: c.secret ?? false,
    });
  }

  private fail(from: string, message: string): void {
    this.problems.push(`${from}: ${message}`);
  }

  string(env: string, c: Common & { default: string }): string;
  string(env: string, c: Common & { default?: undefined; required?: boolean }): string | undefined;
  string(env: string, c: Common & { default?: string; required?: boolean }): string | undefined {
    this.doc(env, c, 'string', c.default);
    const r = this.raw(env, c);
    if (!r) {
      if (c.required) this.fail(env, 'is required');
      return c.default;
    }
    if (typeof r.value !== 'string' && typeof r.value !== 'number') {
      this.fail(r.from, 'must be a string');
      return c.default;
    }
    return String(r.value);
  }

  int(env: string, c: Common & { default: number; min?: number; max?: number }): number;
  int(env: string, c: Common & { default?: undefined; min?: number; max?: number }): number | undefined;
  int(env: string, c: Common & { default?: number; min?: number; max?: number }): number | undefined {
    this.doc(env, c, 'integer', c.default);
    const r = this.raw(env, c);
    if (!r) return c.default;
    const n = typeof r.value === 'number' ? r.value : Number(String(r.value).trim());
    if (!Number.isInteger(n)) {
      this.fail(r.from, `must be an integer, got ${JSON.stringify(r.value)}`);
      return c.default;
    }
    if (c.min !== undefined && n < c.min) this.fail(r.from, `must be at least ${c.min}, got ${n}`);
    if (c.max !== undefined && n > c.max) this.fail(r.from, `must be at most ${c.max}, got ${n}`);
    return n;
  }

  bool(env: string, c: Common & { default: boolean }): boolean;
  bool(env: string, c: Common & { default?: undefined }): boolean | undefined;
  bool(env: string, c: Common & { default?: boolean }): boolean | undefined {
    this.doc(env, c, 'boolean', c.default);
    const r = this.raw(env, c);
    if (!r) return c.default;
    if (typeof r.value === 'boolean') return r.value;
    const s = String(r.value).trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(s)) return true;
    if (['false', '0', 'no', 'off'].includes(s)) return false;
    this.fail(r.from, `must be true or false, got ${JSON.stringify(r.value)}`);
    return c.default;
  }

  oneOf<T extends string>(env: string, c: Common & { values: readonly T[]; default: T; caseInsensitive?: boolean }): T;
  oneOf<T extends string>(env: string, c: Common & { values: readonly T[]; default?: undefined; caseInsensitive?: boolean }): T | undefined;
  oneOf<T extends string>(env: string, c: Common & { values: readonly T[]; default?: T; caseInsensitive?: boolean }): T | undefined {
    this.doc(env, c, c.values.join(' \\| '), c.default);
    const r = this.raw(env, c);
    if (!r) return c.default;
    const s = String(r.value).trim();
    const found = c.values.find((v) => (c.caseInsensitive ? v.toLowerCase() === s.toLowerCase() : v === s));
    if (found === undefined) {
      this.fail(r.from, `must be one of ${c.values.join(', ')}, got ${JSON.stringify(r.value)}`);
      return c.default;
    }
    return found;
  }

  /** comma-separated in the environment, a list or a comma-separated string in YAML */
  list(env: string, c: Common & { default: string[] }): string[] {
    this.doc(env, c, 'list', c.default);
    const r = this.raw(env, c);
    if (!r) return c.default;
    const items = Array.isArray(r.value) ? r.value.map(String) : String(r.value).split(',');
    return items.map((s) => s.trim()).filter((s) => s.length > 0);
  }

  url(env: string, c: Common & { default?: string; required?: boolean }): string | undefined {
    this.doc(env, c, 'URL', c.default);
    const r = this.raw(env, c);
    const typed = r ? String(r.value).trim() : c.default;
    if (typed === undefined) {
      if (c.required) this.fail(env, 'is required');
      return undefined;
    }
    // A bare host is what an operator naturally types: TLS is the only sane default for a vendor API.
    const value = /^[a-z][a-z0-9+.-]*:\/\//i.test(typed) ? typed : `https://${typed}`;
    try {
      const u = new URL(value);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
    } catch {
      // a secret URL (a webhook with its token in the path) is never echoed back
      this.fail(r?.from ?? env, c.secret ? 'must be an http(s) URL' : `must be an http(s) URL, got ${JSON.stringify(value)}`);
      return undefined;
    }
    return value.replace(/\/+$/, '');
  }

  /** record a problem found by a cross-setting check */
  problem(setting: string, message: string): void {
    this.fail(setting, message);
  }
}
