/**
 * Which Braze identifier a cohort member is delivered under (COHORT_IDENTIFIERS: primary,
 * secondary, tertiary; the first rule the member has a value for wins), and the member key that
 * names it in the snapshot. Same syntax and targets as OUTBOUND_IDENTIFIERS, plus the source
 * `amplitude_id`, which every export row has.
 */
import type { IdentifierTarget } from '../amplitude-to-braze/mapping-config.js';

export type CohortIdSource = { kind: 'user_id' } | { kind: 'device_id' } | { kind: 'amplitude_id' } | { kind: 'user_property'; name: string };

export interface CohortIdRule {
  source: CohortIdSource;
  target: IdentifierTarget;
}

export const COHORT_ID_SOURCES = ['user_id', 'device_id', 'amplitude_id'] as const;

/** user_id → external_id, then device_id → the alias the outbound leg gives anonymous devices */
export const DEFAULT_COHORT_IDENTIFIERS: CohortIdRule[] = [
  { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
  { source: { kind: 'device_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_device_id' } },
];

/** One member as an export row or a webhook user carries it. */
export interface MemberInput {
  amplitudeId?: string | undefined;
  userId?: string | undefined;
  deviceId?: string | undefined;
  properties?: ReadonlyMap<string, string> | Readonly<Record<string, unknown>> | undefined;
}

export type Resolved = { ok: true; key: string; rule: number } | { ok: false; reason: string };

function prop(m: MemberInput, name: string): string | undefined {
  const p = m.properties;
  if (p === undefined) return undefined;
  const v: unknown = p instanceof Map ? p.get(name) : (p as Record<string, unknown>)[name];
  if (typeof v === 'string') return v.length > 0 ? v : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

function sourceValue(m: MemberInput, s: CohortIdSource): string | undefined {
  let v: string | undefined;
  switch (s.kind) {
    case 'user_id':
      v = m.userId;
      break;
    case 'device_id':
      v = m.deviceId;
      break;
    case 'amplitude_id':
      v = m.amplitudeId;
      break;
    case 'user_property':
      return prop(m, s.name);
  }
  return v !== undefined && v.length > 0 ? v : undefined;
}

function sourceName(s: CohortIdSource): string {
  return s.kind === 'user_property' ? 'property' : s.kind;
}

/** Targets the partner cohort API has a field for (user_ids, aliases): braze_id and email have none. */
export function partnerSupports(t: IdentifierTarget): boolean {
  return t.kind === 'external_id' || t.kind === 'user_alias';
}

/**
 * The member key of the first rule the member has a value for; else why none applied, e.g.
 * `no_user_id+no_device_id` (an anonymous member of an export, which carries no device id).
 */
export function resolveMember(m: MemberInput, rules: readonly CohortIdRule[], opts: { partner?: boolean } = {}): Resolved {
  const why: string[] = [];
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const v = sourceValue(m, rule.source);
    if (v === undefined) {
      why.push(`no_${sourceName(rule.source)}`);
      continue;
    }
    if (opts.partner && !partnerSupports(rule.target)) {
      why.push(`${rule.target.kind}_not_in_partner_api`);
      continue;
    }
    if (v.length > 255) {
      why.push(`${sourceName(rule.source)}_too_long`);
      continue;
    }
    return { ok: true, key: identifierKey(rule.target, v), rule: i };
  }
  return { ok: false, reason: why.join('+') || 'no_rules' };
}

/**
 * Every member key the member can be held under: one per rule it has a usable value for, in rule
 * order (the first is resolveMember's key). A webhook user carries all its identifiers, so a push
 * can find the key a member was delivered under before it was identified (an alias) even though
 * it now resolves to another one (the user id).
 */
export function memberKeys(m: MemberInput, rules: readonly CohortIdRule[], opts: { partner?: boolean } = {}): string[] {
  const keys: string[] = [];
  for (const rule of rules) {
    const v = sourceValue(m, rule.source);
    if (v === undefined || v.length > 255 || (opts.partner && !partnerSupports(rule.target))) continue;
    const k = identifierKey(rule.target, v);
    if (!keys.includes(k)) keys.push(k);
  }
  return keys;
}

export function identifierKey(t: IdentifierTarget, value: string): string {
  switch (t.kind) {
    case 'external_id':
      return `e:${value}`;
    case 'user_alias':
      return `a:${t.aliasLabel}\u0000${value}`;
    case 'braze_id':
      return `b:${value}`;
    case 'email':
      return `m:${value}`;
  }
}

export type BrazeIdentifierObject =
  | { external_id: string }
  | { user_alias: { alias_name: string; alias_label: string } }
  | { braze_id: string }
  | { email: string };

/** The Braze identifier fields a member key stands for. */
export function keyToIdentifier(key: string): BrazeIdentifierObject {
  const v = key.slice(2);
  switch (key.charCodeAt(0)) {
    case 101 /* e */:
      return { external_id: v };
    case 97 /* a */: {
      const z = v.indexOf('\u0000');
      return { user_alias: { alias_label: v.slice(0, z), alias_name: v.slice(z + 1) } };
    }
    case 98 /* b */:
      return { braze_id: v };
    case 109 /* m */:
      return { email: v };
    default:
      throw new Error(`not a member key: ${JSON.stringify(key.slice(0, 40))}`);
  }
}

/** `ext:u-1`-style text for logs and GET /cohorts (never an alias label's NUL). */
export function describeKey(key: string): string {
  return key.replace('\u0000', ':');
}
