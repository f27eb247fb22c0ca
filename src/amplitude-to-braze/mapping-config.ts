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
  /**
   * `true`: every object is update-only (`_update_existing_only: true`), no profile is created.
   * `false`: sent as `false` on every object. Unset: Braze's default per identifier, except that a
   * user identified by alias gets an attributes object with `_update_existing_only: false` (before
   * its events, in the same request) so that its alias-only profile exists: for an alias Braze's
   * default is update-only, and events for an unknown alias are accepted and silently dropped.
   * Until Braze has accepted such an object, that user's events and purchases carry `false` as
   * well, so each can create the profile even if Braze refuses the attributes object.
   */
  updateExistingOnly?: boolean;
  filter: EventFilter;
  loopPrevention: LoopPrevention;
  /** send the event's user properties as Braze custom attributes */
  sendUserProperties: boolean;
  /** which user properties are synced (`*` and `?` wildcards, case-sensitive); empty or `*` means all */
  userProperties: string[];
  /**
   * users whose last-sent attributes are remembered, so only changed attributes from events not
   * older than the last sent one are written; 0 turns the attribute state off (every event writes
   * its whole user-property snapshot)
   */
  attributeStateMaxUsers: number;
  /** revenue events become Braze purchases ('purchase'), or are left as plain custom events ('event') */
  revenueAs: 'purchase' | 'event';
  /** currency used when a revenue event names none, or names one that is not an ISO 4217 code */
  defaultCurrency: string;
  /**
   * a revenue event with negative revenue (a refund) is never a Braze purchase: `event` sends the
   * custom event with the revenue fields as properties; `drop` sends the custom event without them.
   * The same for refund entries of a `products` list (negative price or revenue): with `event` the
   * custom event carries the revenue fields, the `products` list with the refunds included, while
   * the other entries still become purchases.
   */
  negativeRevenueAs: 'event' | 'drop';
}

export const defaultOutboundMapping: OutboundMappingConfig = {
  identifiers: [
    { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
    { source: { kind: 'device_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_device_id' } },
  ],
  filter: { allow: [], deny: [] },
  loopPrevention: { enabled: true, libraries: ['Braze'], eventTypePrefixes: ['[Appboy]'] },
  sendUserProperties: true,
  userProperties: ['*'],
  attributeStateMaxUsers: 100_000,
  revenueAs: 'purchase',
  defaultCurrency: 'USD',
  negativeRevenueAs: 'event',
};
