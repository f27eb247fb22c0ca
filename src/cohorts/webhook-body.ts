/**
 * Validation of what Amplitude's cohort webhook destination posts (amplitude-cohort-api.md §10):
 * `cohort_id`, `cohort_name`, `in_cohort` (true: entered, false: left), `computed_time`,
 * `message_id`, `users[]` (each with `user_id`, and `device_id`, `amplitude_id` or user properties
 * where the template adds them). A body that can never succeed is a 400; too many users a 413.
 */
import { checkDepthAndStrings, isPlainObject, safeJsonParse } from '../currents-ingest/currents-body.js';
import type { StoredPush } from './cohort-store.js';

export type WebhookParse = { ok: true; push: Omit<StoredPush, 'receivedAtMs'>; cohortName?: string } | { ok: false; status: 400 | 413; message: string };

const LIMITS = { maxDepth: 8, maxStringLength: 4_096 };
const USER_KEYS = new Set(['user_id', 'device_id', 'amplitude_id']);

function bool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'True') return true;
  if (v === 'false' || v === 'False') return false;
  return undefined;
}

function idString(v: unknown): string | undefined {
  if (typeof v === 'string') return v.length > 0 ? v : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

export function parseCohortWebhook(body: Buffer, maxUsers: number): WebhookParse {
  const parsed = safeJsonParse(body);
  if (!parsed.ok) return { ok: false, status: 400, message: parsed.message };
  const raw = parsed.value;
  if (!isPlainObject(raw)) return { ok: false, status: 400, message: 'body must be a JSON object with cohort_id, in_cohort, message_id and users' };
  const bounded = checkDepthAndStrings(raw, LIMITS);
  if (!bounded.ok) return { ok: false, status: 400, message: bounded.message };
  const cohortId = idString(raw.cohort_id);
  if (!cohortId || !/^[A-Za-z0-9_-]{1,64}$/.test(cohortId)) return { ok: false, status: 400, message: '"cohort_id" must be Amplitude\'s short cohort id' };
  const inCohort = bool(raw.in_cohort);
  if (inCohort === undefined) return { ok: false, status: 400, message: '"in_cohort" must be true or false' };
  const messageId = idString(raw.message_id);
  if (!messageId || messageId.length > 256) return { ok: false, status: 400, message: '"message_id" must be a non-empty string (at most 256 characters)' };
  const users = raw.users;
  if (!Array.isArray(users)) return { ok: false, status: 400, message: '"users" must be an array' };
  if (users.length > maxUsers) return { ok: false, status: 413, message: `${users.length} users in one batch, more than the ${maxUsers} accepted` };
  const out: StoredPush['users'] = [];
  for (let i = 0; i < users.length; i++) {
    const u: unknown = users[i];
    if (!isPlainObject(u)) return { ok: false, status: 400, message: `users[${i}] must be an object` };
    const user: StoredPush['users'][number] = {};
    const uid = idString(u.user_id);
    const did = idString(u.device_id);
    const aid = idString(u.amplitude_id);
    if (uid) user.user_id = uid;
    if (did) user.device_id = did;
    if (aid) user.amplitude_id = aid;
    // user properties: flat, or under `user_properties` / `properties` as templates write them
    const props: Record<string, string | number | boolean | null> = {};
    const take = (o: Record<string, unknown>): void => {
      for (const [k, v] of Object.entries(o)) {
        if (USER_KEYS.has(k)) continue;
        if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') props[k] = v;
      }
    };
    take(u);
    for (const nested of ['user_properties', 'properties']) if (isPlainObject(u[nested])) take(u[nested] as Record<string, unknown>);
    if (Object.keys(props).length > 0) user.properties = props;
    out.push(user);
  }
  const computed = raw.computed_time;
  const name = typeof raw.cohort_name === 'string' ? raw.cohort_name : undefined;
  return {
    ok: true,
    push: { cohortId, messageId, inCohort, ...(computed !== undefined && computed !== null ? { computedTime: String(computed) } : {}), users: out },
    ...(name ? { cohortName: name } : {}),
  };
}
