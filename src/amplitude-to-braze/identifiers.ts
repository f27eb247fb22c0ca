/**
 * Picks the Braze identifier of an Amplitude event from the configured rules (primary, secondary,
 * tertiary, ...), the way Braze's Amplitude integrations fall back when the primary is missing.
 */
import type { IdentifierRule, IdentifierSource } from './mapping-config.js';
import type { BrazeIdentifier, JsonObject, JsonValue } from './braze-types.js';
import { type AmplitudeInEvent, isJsonObject } from './amplitude-event.js';

export interface ResolvedIdentifier {
  identifier: BrazeIdentifier;
  /**
   * Stable per user, for ordering and batching: `ext:<id>`, `alias:<label>:<name>`,
   * `braze:<id>`, `email:<address>`. A `:` inside an alias label can make two aliases share a
   * key; that only merges their ordering lanes, it never mixes their data.
   */
  key: string;
  /** index of the rule that matched */
  rule: number;
}

export type IdentifierInput = Pick<AmplitudeInEvent, 'userId' | 'deviceId' | 'userProperties'>;

export function resolveIdentifier(ev: IdentifierInput, rules: readonly IdentifierRule[]): ResolvedIdentifier | undefined {
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const value = sourceValue(ev, rule.source);
    if (value === undefined) continue;
    const target = rule.target;
    switch (target.kind) {
      case 'external_id':
        return { identifier: { external_id: value }, key: `ext:${value}`, rule: i };
      case 'user_alias':
        return {
          identifier: { user_alias: { alias_name: value, alias_label: target.aliasLabel } },
          key: `alias:${target.aliasLabel}:${value}`,
          rule: i,
        };
      case 'braze_id':
        return { identifier: { braze_id: value }, key: `braze:${value}`, rule: i };
      case 'email':
        return { identifier: { email: value }, key: `email:${value}`, rule: i };
    }
  }
  return undefined;
}

function sourceValue(ev: IdentifierInput, source: IdentifierSource): string | undefined {
  switch (source.kind) {
    case 'user_id':
      return ev.userId;
    case 'device_id':
      return ev.deviceId;
    case 'user_property':
      return userPropertyValue(ev.userProperties, source.name);
  }
}

/**
 * The export shape carries resolved user properties as plain keys; the ingest shape may carry
 * them only inside a `$set` operation, so that is looked at second.
 */
function userPropertyValue(up: JsonObject | undefined, name: string): string | undefined {
  if (up === undefined) return undefined;
  const plain = idValue(up[name]);
  if (plain !== undefined) return plain;
  const set = up['$set'];
  return isJsonObject(set) ? idValue(set[name]) : undefined;
}

function idValue(v: JsonValue | undefined): string | undefined {
  if (typeof v === 'string') return v.length > 0 ? v : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}
