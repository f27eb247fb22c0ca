/**
 * Shapes of the inbound leg: a Braze Currents event as the Custom HTTP connector posts it, and the
 * Amplitude HTTP V2 ingest event the gateway builds from it.
 *
 * The HTTP connector shape is the canonical in-memory and Kafka shape for Currents events: events
 * decoded from Avro container files (storage connectors) are converted to it, so everything after
 * the edge handles one shape only.
 */

export type JsonPrimitive = null | boolean | number | string;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * The `user` block of a Currents HTTP event. Every field is optional here: `external_user_id` is
 * null for anonymous users, `device_id` is absent from most message events, `user_id` (the Braze
 * id) is nullable on the inbound-message events and `timezone` is only set where Braze knows it.
 * Nulls are normalised to absent by the validator.
 */
export interface CurrentsUser {
  /** Braze-assigned id (`braze_id`), a 24-hex string in the samples. Not an Amplitude identity. */
  user_id?: string;
  /** The customer's `external_id`; becomes the Amplitude `user_id`. */
  external_user_id?: string;
  /** Braze SDK device id; becomes the Amplitude `device_id`. */
  device_id?: string;
  /** IANA zone of the user at event time. */
  timezone?: string;
}

/**
 * One Currents event as posted by the Custom HTTP connector:
 * `{"event_type", "id", "time", "user": {...}, "properties": {...}}`.
 * Custom-event and purchase properties arrive as nested objects under `properties.custom_properties`
 * / `properties.purchase_properties` (the Avro storage files carry them as a JSON string instead).
 */
export interface CurrentsEvent {
  /** Globally unique event id: the de-duplication key (delivery is at-least-once). */
  id: string;
  /** Dotted type name, e.g. `users.messages.email.Open`. */
  event_type: string;
  /** Epoch seconds, UTC. */
  time: number;
  user: CurrentsUser;
  /** Every other field of the event (campaign/Canvas ids, app_id, platform, channel fields, ...). */
  properties: JsonObject;
}

/** Well-known `properties` fields the mapping reads; the rest pass through untouched. */
export interface CurrentsKnownProperties {
  app_id?: string;
  app_group_id?: string;
  platform?: string;
  os_version?: string;
  device_model?: string;
  name?: string;
  custom_properties?: JsonObject;
  purchase_properties?: JsonObject;
  product_id?: string;
  price?: number;
  currency?: string;
  session_id?: string;
  ad_id?: string;
  ad_id_type?: string;
  ad_tracking_enabled?: boolean;
}

/**
 * An event in the shape Amplitude's HTTP V2 API (`POST /2/httpapi`) ingests
 * (amplitude-http-api.md §3). Only `event_type` is always required; at least one of `user_id` /
 * `device_id` must be present for Amplitude to accept it.
 */
export interface AmplitudeEvent {
  event_type: string;
  user_id?: string;
  device_id?: string;
  /** Milliseconds since the Unix epoch. */
  time?: number;
  /** Idempotency key; Amplitude ignores a repeat within 7 days. */
  insert_id?: string;
  event_properties?: JsonObject;
  user_properties?: JsonObject;
  groups?: JsonObject;
  group_properties?: JsonObject;
  $skip_user_properties_sync?: boolean;
  app_version?: string;
  platform?: string;
  os_name?: string;
  os_version?: string;
  device_brand?: string;
  device_manufacturer?: string;
  device_model?: string;
  carrier?: string;
  country?: string;
  region?: string;
  city?: string;
  dma?: string;
  language?: string;
  location_lat?: number;
  location_lng?: number;
  ip?: string;
  idfa?: string;
  idfv?: string;
  adid?: string;
  android_id?: string;
  android_app_set_id?: string;
  user_agent?: string;
  price?: number;
  quantity?: number;
  revenue?: number;
  productId?: string;
  revenueType?: string;
  currency?: string;
  event_id?: number;
  /** Amplitude session start in ms (never Braze's UUID `session_id`, which stays a property). */
  session_id?: number;
  partner_id?: string;
  plan?: { branch?: string; source?: string; version?: string };
  /** Sending library; the gateway sets `Braze` so the outbound leg can spot Braze-originated events. */
  library?: string;
  ingestion_metadata?: { source_name?: string; source_version?: string };
  version_name?: string;
}
