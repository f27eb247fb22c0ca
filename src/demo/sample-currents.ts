import type { CurrentsEvent } from '../currents-ingest/currents-types.js';

/**
 * Synthetic Braze Currents events in the Custom HTTP connector's shape, for the demo, the
 * integration tests and the benchmarks. Deterministic in `i`, so a test can recompute what event
 * i should become in Amplitude.
 */
export function sampleCurrentsEvent(i: number, o: { users: number; startSec?: number }): CurrentsEvent {
  const u = i % o.users;
  const time = (o.startSec ?? 1_741_942_800) + i;
  const user = {
    user_id: `braze-${String(u).padStart(8, '0')}`,
    ...(u % 5 === 0 ? {} : { external_user_id: `user-${String(u).padStart(6, '0')}` }),
    device_id: `device-${String(u).padStart(6, '0')}`,
    timezone: 'Europe/Berlin',
  };
  const id = `cur-${String(i).padStart(10, '0')}`;
  const common = { app_id: 'app-0001', platform: 'ios', os_version: 'iOS 17.4', device_model: 'iPhone15,2' };
  switch (i % 4) {
    case 0:
      return { id, event_type: 'users.behaviors.CustomEvent', time, user, properties: { ...common, name: 'level_completed', custom_properties: { seq: i, level: i % 50 } } };
    case 1:
      return { id, event_type: 'users.messages.email.Open', time, user, properties: { email_address: `u${u}@example.com`, campaign_id: 'camp-1', campaign_name: 'Welcome', dispatch_id: `d-${i}` } };
    case 2:
      return { id, event_type: 'users.behaviors.Purchase', time, user, properties: { ...common, product_id: 'pro_annual', price: 49.99, currency: 'EUR', purchase_properties: { seq: i } } };
    default:
      return { id, event_type: 'users.behaviors.app.SessionStart', time, user, properties: { ...common, session_id: `s-${i}` } };
  }
}
