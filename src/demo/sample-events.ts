/**
 * Synthetic Amplitude events for the demo, the integration tests and the benchmarks: realistic
 * shapes (both export and ingest forms), a spread of users, user-property operations and revenue.
 */
export interface SampleOptions {
  users: number;
  /** fraction of events in the ingest shape (`time` ms, `insert_id`) rather than the export shape */
  ingestShare?: number;
  /** fraction of events carrying revenue */
  revenueShare?: number;
  /** fraction of events from anonymous users (device id only) */
  anonymousShare?: number;
  startMs?: number;
}

export interface SampleEvent {
  key: string;
  value: Record<string, unknown>;
}

const EVENT_TYPES = ['page_viewed', 'button_clicked', 'report_exported', 'signup_completed', 'search_performed', 'item_added_to_cart'];

/** deterministic for a given i, so tests can recompute what event i should look like */
export function sampleEvent(i: number, o: SampleOptions): SampleEvent {
  const user = i % o.users;
  const anonymous = frac(user, 7) < (o.anonymousShare ?? 0.2);
  const ingest = frac(i, 13) < (o.ingestShare ?? 0.3);
  const revenue = frac(i, 17) < (o.revenueShare ?? 0.05);
  const deviceId = `device-${String(user).padStart(6, '0')}`;
  const userId = anonymous ? undefined : `user-${String(user).padStart(6, '0')}`;
  const t = (o.startMs ?? Date.parse('2025-03-14T09:00:00.000Z')) + i * 10;
  const eventType = revenue ? 'order_completed' : (EVENT_TYPES[i % EVENT_TYPES.length] as string);
  const eventProperties: Record<string, unknown> = { seq: i, source: 'sample', plan: i % 3 === 0 ? 'pro' : 'free' };
  const userProperties: Record<string, unknown> = { $set: { plan_tier: i % 2 === 0 ? 'trial' : 'paid', last_seq: i } };
  if (i % 10 === 0) userProperties.$add = { sessions: 1 };
  const value: Record<string, unknown> = ingest
    ? {
        event_type: eventType,
        ...(userId ? { user_id: userId } : {}),
        device_id: deviceId,
        time: t,
        insert_id: `ins-${i}`,
        event_properties: eventProperties,
        user_properties: userProperties,
        platform: 'Web',
        library: 'amplitude-ts/2.0.0',
        ...(revenue ? { price: 12.5, quantity: 2, productId: 'pro_annual', revenue: 25, currency: 'EUR' } : {}),
      }
    : {
        event_type: eventType,
        ...(userId ? { user_id: userId } : {}),
        device_id: deviceId,
        client_event_time: new Date(t).toISOString(),
        event_time: new Date(t).toISOString(),
        $insert_id: `ins-${i}`,
        uuid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        amplitude_id: 1_000_000 + user,
        event_properties: revenue ? { ...eventProperties, $price: 12.5, $quantity: 2, $productId: 'pro_annual', $revenue: 25 } : eventProperties,
        user_properties: userProperties,
        platform: 'Web',
        os_name: 'Chrome',
        country: 'Germany',
        library: 'amplitude-ts/2.0.0',
      };
  return { key: userId ?? deviceId, value };
}

/** a cheap deterministic hash in [0,1) so shares are spread evenly without a random generator */
function frac(n: number, salt: number): number {
  const x = Math.sin(n * 12.9898 + salt * 78.233) * 43758.5453;
  return x - Math.floor(x);
}
