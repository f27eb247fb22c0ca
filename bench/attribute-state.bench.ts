/**
 * Attribute writes sent to Braze with the attribute state (only changed attributes, never from an
 * older event, `$setOnce` once per user) against the snapshot-per-event behaviour (every event
 * writes its whole user-property snapshot), on two kinds of traffic:
 *  - the demo's: `npm run demo`'s 20,000 sample events over 2,000 users (src/demo/sample-events.ts);
 *  - a realistic mix: users sending 50 events a day in Amplitude's export shape, each carrying the
 *    user's 12 user properties, with a handful (3) of property changes per user and day, 15% of
 *    users anonymous (alias), and 2% of events arriving late (1 to 6 hours after newer ones).
 * A write is one attribute set in an attributes object (what Braze bills as a data point on
 * data-point contracts); an object is one attributes object in a request.
 *
 * Also the cost: mapping and serialising throughput (what the leg does per message) with and
 * without the state on the realistic mix.
 */
import { pathToFileURL } from 'node:url';
import { createOutboundMapper, type MapResult } from '../src/amplitude-to-braze/map-to-braze.js';
import { defaultOutboundMapping } from '../src/amplitude-to-braze/mapping-config.js';
import { AttributeState } from '../src/amplitude-to-braze/attribute-state.js';
import { sampleEvent } from '../src/demo/sample-events.js';
import { envInt, note, nowMs, roundRatio, type BenchResult } from './common.js';

const NON_ATTRIBUTES = new Set(['external_id', 'user_alias', 'braze_id', 'email', '_update_existing_only', '_merge_objects']);

export interface WriteCounts {
  events: number;
  /** attribute writes */
  writes: number;
  /** attributes objects */
  objects: number;
  /** attributes objects holding no attribute, only the flag that creates an alias-only profile */
  creating: number;
  saved: number;
}

/** Runs messages through a mapper and counts the attribute writes and objects it produces; Braze accepts everything. */
export function countWrites(messages: Buffer[], withState: boolean, maxUsers = 100_000): WriteCounts {
  const state = withState ? new AttributeState({ maxUsers }) : null;
  const map = createOutboundMapper(defaultOutboundMapping, { attributeState: state });
  const c: WriteCounts = { events: 0, writes: 0, objects: 0, creating: 0, saved: 0 };
  for (const m of messages) {
    const r: MapResult = map(m);
    if (r.kind !== 'mapped') continue;
    c.events++;
    c.saved += r.attributeWritesSaved;
    if (r.attributes !== undefined) {
      c.objects++;
      let n = 0;
      for (const k in r.attributes) if (!NON_ATTRIBUTES.has(k) || (k === 'email' && r.identifier.email === undefined)) n++;
      c.writes += n;
      if (n === 0) c.creating++;
    }
    state?.confirm(r.attributeWrite);
  }
  return c;
}

export function demoMessages(count = 20_000, users = 2_000): Buffer[] {
  return Array.from({ length: count }, (_, i) => Buffer.from(JSON.stringify(sampleEvent(i, { users }).value)));
}

/** Deterministic, so runs compare like with like. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PLANS = ['free', 'trial', 'pro', 'team'];
const COUNTRIES = ['DE', 'US', 'FR', 'JP', 'BR', 'IN', 'GB'];
const CITIES = ['Berlin', 'Austin', 'Lyon', 'Osaka', 'Recife', 'Pune', 'Leeds'];
const EVENT_TYPES = ['page_view', 'screen_view', 'button_clicked', 'search_performed', 'product_viewed', 'add_to_cart', 'session_start'];

/**
 * `users` users over one day, `perDay` events each, export shape with the full user-property
 * snapshot; `changes` property changes per user spread over the day; `lateShare` of events
 * delivered 1 to 6 hours after their time. Returned in delivery order.
 */
export function realisticMessages(users = 2_000, perDay = 50, changes = 3, lateShare = 0.02, seed = 7): Buffer[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const day0 = Date.UTC(2025, 2, 14);
  const out: Array<{ deliverAt: number; value: string }> = [];
  for (let u = 0; u < users; u++) {
    const anonymous = rnd() < 0.15;
    const props: Record<string, unknown> = {
      plan: pick(PLANS),
      country: pick(COUNTRIES),
      city: pick(CITIES),
      language: 'en',
      platform: pick(['Web', 'iOS', 'Android']),
      os_version: `${10 + Math.floor(rnd() * 8)}.${Math.floor(rnd() * 5)}`,
      app_version: `3.${Math.floor(rnd() * 20)}.0`,
      ...(anonymous ? {} : { email: `user${u}@example.com` }),
      signup_date: '2024-11-02',
      lifetime_orders: Math.floor(rnd() * 20),
      favourite_category: pick(['books', 'games', 'music', 'tools']),
      newsletter_opt_in: rnd() < 0.5,
    };
    const times = Array.from({ length: perDay }, () => day0 + Math.floor(rnd() * 86_400_000)).sort((a, b) => a - b);
    const changeAt = new Set(Array.from({ length: changes }, () => Math.floor(rnd() * perDay)));
    for (let k = 0; k < perDay; k++) {
      if (changeAt.has(k)) {
        const which = Math.floor(rnd() * 3);
        if (which === 0) props.lifetime_orders = (props.lifetime_orders as number) + 1;
        else if (which === 1) props.app_version = `3.${Math.floor(rnd() * 20) + 20}.0`;
        else props.plan = pick(PLANS);
      }
      const t = times[k]!;
      const late = rnd() < lateShare ? 3_600_000 + Math.floor(rnd() * 5 * 3_600_000) : 0;
      const value = JSON.stringify({
        event_type: pick(EVENT_TYPES),
        ...(anonymous ? {} : { user_id: `user-${u}` }),
        device_id: `device-${u}`,
        event_time: new Date(t).toISOString(),
        client_event_time: new Date(t).toISOString(),
        $insert_id: `ins-${u}-${k}`,
        event_properties: { seq: k },
        user_properties: { ...props },
        library: 'amplitude-ts/2.11.0',
      });
      out.push({ deliverAt: t + late, value });
    }
  }
  out.sort((a, b) => a.deliverAt - b.deliverAt);
  return out.map((o) => Buffer.from(o.value));
}

function describe(name: string, c: WriteCounts): string {
  return `${name}: ${c.events} events, ${c.writes} attribute writes in ${c.objects} attributes objects (${c.creating} only creating an alias profile), ${c.saved} writes saved`;
}

function comparison(prefix: string, base: WriteCounts, state: WriteCounts): BenchResult[] {
  const b = `${prefix}_writes_snapshot_per_event`;
  return [
    { bench: b, value: base.writes, unit: 'attribute writes', baseline: b, ratio: 1 },
    { bench: `${prefix}_writes_attribute_state`, value: state.writes, unit: 'attribute writes', baseline: b, ratio: roundRatio(state.writes / base.writes) },
    { bench: `${prefix}_objects_attribute_state`, value: state.objects, unit: 'attributes objects', baseline: `${prefix}_objects_snapshot_per_event`, ratio: roundRatio(state.objects / base.objects) },
  ];
}

function mappingRate(messages: Buffer[], withState: boolean): number {
  let best = 0;
  for (let run = 0; run < 3; run++) {
    const state = withState ? new AttributeState() : null;
    const map = createOutboundMapper(defaultOutboundMapping, { attributeState: state });
    const t0 = nowMs();
    let bytes = 0;
    for (const m of messages) {
      const r = map(m);
      if (r.kind !== 'mapped') continue;
      // the leg serialises each object once
      if (r.attributes !== undefined) bytes += JSON.stringify(r.attributes).length;
      if (r.event !== undefined) bytes += JSON.stringify(r.event).length;
      state?.confirm(r.attributeWrite);
    }
    if (bytes === 0) note('nothing serialised');
    best = Math.max(best, messages.length / ((nowMs() - t0) / 1000));
  }
  return best;
}

export async function runAttributeStateBench(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];

  const demo = demoMessages(envInt('BENCH_DEMO_EVENTS', 20_000), 2_000);
  const demoBase = countWrites(demo, false);
  const demoState = countWrites(demo, true);
  note(describe('demo, snapshot per event', demoBase));
  note(describe('demo, attribute state   ', demoState));
  results.push(...comparison('demo', demoBase, demoState));

  const users = envInt('BENCH_REALISTIC_USERS', 2_000);
  const mix = realisticMessages(users);
  const mixBase = countWrites(mix, false);
  const mixState = countWrites(mix, true);
  note(describe(`realistic (${users} users x 50 events/day), snapshot per event`, mixBase));
  note(describe(`realistic (${users} users x 50 events/day), attribute state   `, mixState));
  results.push(...comparison('realistic', mixBase, mixState));

  const plain = mappingRate(mix, false);
  const withState = mappingRate(mix, true);
  note(`mapping and serialising the realistic mix: ${Math.round(plain)} events/s without the state, ${Math.round(withState)} events/s with it`);
  results.push(
    { bench: 'realistic_mapping_snapshot_per_event', value: Math.round(plain), unit: 'events/s', baseline: 'realistic_mapping_snapshot_per_event', ratio: 1 },
    { bench: 'realistic_mapping_attribute_state', value: Math.round(withState), unit: 'events/s', baseline: 'realistic_mapping_snapshot_per_event', ratio: roundRatio(withState / plain) },
  );
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const r of await runAttributeStateBench()) process.stdout.write(`${JSON.stringify(r)}\n`);
}
