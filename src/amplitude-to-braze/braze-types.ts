/**
 * Wire objects of Braze `POST /users/track` (reference/braze-users-track.md §2–§5).
 *
 * These are the exact JSON shapes sent to Braze, so field names follow Braze's snake_case.
 */

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export type JsonObject = { [key: string]: JsonValue };

// A type alias rather than an interface so it stays assignable to JsonObject.
export type BrazeUserAlias = { alias_name: string; alias_label: string };

/**
 * Exactly one identifier per object: Braze rejects or mis-attributes objects that carry several,
 * so the other identifier fields are ruled out at the type level.
 */
export type BrazeIdentifier =
  | { external_id: string; user_alias?: never; braze_id?: never; email?: never }
  | { user_alias: BrazeUserAlias; external_id?: never; braze_id?: never; email?: never }
  | { braze_id: string; external_id?: never; user_alias?: never; email?: never }
  | { email: string; external_id?: never; user_alias?: never; braze_id?: never };

export interface BrazeObjectFlags {
  /** absent means Braze's default: false for external_id, true for user_alias (§2) */
  _update_existing_only?: boolean;
}

/** Atomic custom-attribute operations (§3). They are not idempotent: a retried batch applies them twice. */
export type BrazeIncrement = { inc: number };
export type BrazeArrayAdd = { add: string[] };
export type BrazeArrayRemove = { remove: string[] };

/** `null` removes the attribute from the profile. */
export type BrazeAttributeValue = JsonValue | BrazeIncrement | BrazeArrayAdd | BrazeArrayRemove;

/**
 * One user's attribute updates. Keys beyond the identifier are standard profile fields
 * (`first_name`, `email`, `country`, ...) or custom attributes. Setting the `email` profile field
 * through the index signature is allowed when another identifier names the user.
 */
export type BrazeAttributes = BrazeIdentifier &
  BrazeObjectFlags & {
    _merge_objects?: boolean;
    [attribute: string]: BrazeAttributeValue | undefined;
  };

export type BrazeEvent = BrazeIdentifier &
  BrazeObjectFlags & {
    app_id?: string;
    /** the custom event name */
    name: string;
    /** ISO-8601 UTC */
    time: string;
    properties?: JsonObject;
  };

export type BrazePurchase = BrazeIdentifier &
  BrazeObjectFlags & {
    app_id?: string;
    /** at most 255 characters; Braze keeps at most 5,000 distinct ids */
    product_id: string;
    /** ISO-4217 alphabetic code */
    currency: string;
    /** unit price in the currency's base unit; revenue is price × quantity */
    price: number;
    /** integer, 1..100 */
    quantity?: number;
    /** ISO-8601 UTC */
    time: string;
    properties?: JsonObject;
  };

/** The body of one `/users/track` request; at least one array must be non-empty. */
export interface TrackRequest {
  attributes?: BrazeAttributes[];
  events?: BrazeEvent[];
  purchases?: BrazePurchase[];
}
