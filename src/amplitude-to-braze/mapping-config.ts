/**
 * The shape of the outbound mapping settings, shared by the config loader (which validates
 * them) and the pure mapping code (which trusts them).
 */

/** Where an identifier's value comes from in the Amplitude event. */
export type IdentifierSource =
  | { kind: 'user_id' }
  | { kind: 'device_id' }
  | { kind: 'user_property'; name: string };

/** Which Braze identifier the value becomes. */
export type IdentifierTarget =
  | { kind: 'external_id' }
  | { kind: 'user_alias'; aliasLabel: string }
  | { kind: 'braze_id' }
  | { kind: 'email' };

export interface IdentifierRule {
  source: IdentifierSource;
  target: IdentifierTarget;
}

export interface EventFilter {
  /** event types to send; `*` and `?` wildcards; empty means every event */
  allow: string[];
  /** event types never sent; wins over allow */
  deny: string[];
}

export interface LoopPrevention {
  /** when false, Braze-originated events are sent back to Braze like any other */
  enabled: boolean;
  /** `library` values that mark an event as coming from Braze (compared case-insensitively) */
  libraries: string[];
  /** event_type prefixes that mark an event as coming from Braze */
  eventTypePrefixes: string[];
}

export interface OutboundMappingConfig {
  /** priority order: primary, secondary, tertiary; the first rule the event has a value for wins */
  identifiers: IdentifierRule[];
  /** Braze `app_id` for events and purchases, when set */
  appId?: string;
  /** sent as `_update_existing_only` on every object when set; Braze's own default applies otherwise */
  updateExistingOnly?: boolean;
  filter: EventFilter;
  loopPrevention: LoopPrevention;
  /** send the event's user properties as Braze custom attributes */
  sendUserProperties: boolean;
  /** revenue events become Braze purchases ('purchase'), or are left as plain custom events ('event') */
  revenueAs: 'purchase' | 'event';
  /** currency used when a revenue event names none */
  defaultCurrency: string;
}

export const defaultOutboundMapping: OutboundMappingConfig = {
  identifiers: [
    { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
    { source: { kind: 'device_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_device_id' } },
  ],
  filter: { allow: [], deny: [] },
  loopPrevention: { enabled: true, libraries: ['Braze'], eventTypePrefixes: ['[Appboy]'] },
  sendUserProperties: true,
  revenueAs: 'purchase',
  defaultCurrency: 'USD',
};
