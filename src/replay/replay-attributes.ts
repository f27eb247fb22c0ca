/**
 * A refused attributes object replayed long after it was refused must not write its old values over
 * newer ones the outbound leg sent meanwhile. The replay reads the attribute state (what Braze
 * accepted last for each user and attribute, with the event time it came from) and passes each
 * attributes object through the same decision the leg makes: an attribute goes only when its value
 * differs from what Braze has and its event is not older than the one Braze's value came from.
 */
import type { AttributeState } from '../amplitude-to-braze/attribute-state.js';
import { BRAZE_OBJECT_HEADERS } from '../amplitude-to-braze/braze-dead-letter.js';
import type { BrazeAttributes } from '../amplitude-to-braze/braze-types.js';

export type ReplayedAttributes =
  /** send this JSON (the object as refused, or less the attributes Braze has newer) */
  | { send: string }
  /** nothing left to send: Braze has every attribute of it, as new or newer */
  | { skip: true };

/**
 * `object`/`json`: the dead letter's attributes object. Without a state, or a dead letter written
 * before these headers existed, the object goes as it was.
 */
export function replayedAttributes(
  state: AttributeState | undefined,
  headers: Readonly<Record<string, string>>,
  object: Record<string, unknown>,
  json: string,
): ReplayedAttributes {
  const user = headers[BRAZE_OBJECT_HEADERS.user];
  const time = Number(headers[BRAZE_OBJECT_HEADERS.eventTime]);
  if (state === undefined || user === undefined || !Number.isFinite(time)) return { send: json };
  const f = state.filter(user, object as BrazeAttributes, time);
  // an object with no attribute at all (it only creates an alias-only profile) still goes
  if (f.kept + f.unchanged + f.stale + f.setOnce === 0) return { send: json };
  if (f.kept === 0) return { skip: true };
  return { send: f.unchanged + f.stale + f.setOnce === 0 ? json : JSON.stringify(f.attributes) };
}
