/**
 * Outbound mapping throughput on one core: Amplitude export-shape messages (as Kafka delivers
 * them, Buffers) through the mapper, against the floor of any JSON-to-JSON transform,
 * `JSON.stringify(JSON.parse(buf.toString()))` on the same messages.
 *
 * The leg's target is 75,000 events/s on 2 cores including Kafka and HTTP, so mapping alone has
 * to run far above that; a ratio near or above 1 means mapping costs no more than re-serialising.
 */
import { pathToFileURL } from 'node:url';
import { createOutboundMapper } from '../src/amplitude-to-braze/map-to-braze.js';
import { defaultOutboundMapping } from '../src/amplitude-to-braze/mapping-config.js';
import { note, printResult, roundRatio, type BenchResult } from './common.js';

const MESSAGE_COUNT = 200_000;
const USER_COUNT = 20_000;
const RUNS = 3;

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

const EVENT_TYPES = [
  'page_view', 'page_view', 'page_view', 'screen_view', 'button_clicked', 'button_clicked', 'search_performed',
  'product_viewed', 'product_viewed', 'add_to_cart', 'checkout_started', 'session_start', 'session_end',
  'signup_completed', 'login', 'logout', 'video_played', 'video_paused', 'share_clicked', 'notification_opened',
  'settings_changed', 'report_exported', 'file_uploaded', 'comment_posted', 'feature_used',
];
const PLATFORMS = ['Web', 'iOS', 'Android'];
const COUNTRIES = ['United States', 'Germany', 'France', 'Japan', 'Brazil', 'India', 'United Kingdom'];
const PLANS = ['free', 'trial', 'pro', 'team', 'enterprise'];
const LIBRARIES = ['amplitude-ts/2.11.0', 'amplitude-ios/8.17.1', 'amplitude-android/1.12.0', 'http/2.0'];

export function generateMessages(count = MESSAGE_COUNT, seed = 42): Buffer[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const hex = (n: number): string => {
    let s = '';
    for (let i = 0; i < n; i++) s += Math.floor(rnd() * 16).toString(16);
    return s;
  };
  const users = Array.from({ length: USER_COUNT }, (_, i) => ({
    userId: rnd() < 0.8 ? `user-${100000 + i}` : undefined,
    deviceId: `${hex(8)}-${hex(4)}-${hex(4)}-${hex(12)}`,
    amplitudeId: 1_000_000_000 + i,
    plan: pick(PLANS),
    country: pick(COUNTRIES),
    platform: pick(PLATFORMS),
    library: pick(LIBRARIES),
  }));
  const base = Date.UTC(2025, 2, 14, 9, 0, 0);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const u = users[Math.floor(rnd() * users.length)]!;
    const t = base + Math.floor(rnd() * 86_400_000);
    const iso = new Date(t).toISOString();
    // Streaming destinations send the zone-less form; the Export API sends ISO.
    const clientTime = rnd() < 0.3 ? iso.replace('T', ' ').replace('Z', '') : iso;
    const eventProperties: Record<string, unknown> = {
      path: `/app/${pick(['home', 'search', 'settings', 'reports', 'billing'])}/${Math.floor(rnd() * 1000)}`,
      referrer: rnd() < 0.5 ? 'https://www.google.com/' : '',
      duration_ms: Math.floor(rnd() * 30_000),
      is_first: rnd() < 0.1,
    };
    if (rnd() < 0.5) eventProperties['experiment'] = pick(['control', 'variant_a', 'variant_b']);
    if (rnd() < 0.2) eventProperties['tags'] = ['alpha', 'beta', 'gamma'].slice(0, 1 + Math.floor(rnd() * 3));
    if (rnd() < 0.05) eventProperties['context'] = { screen: { w: 1920, h: 1080 }, locale: 'en-US' };
    if (rnd() < 0.01) eventProperties['$browser_hint'] = 'x'; // gets dropped and reported
    if (rnd() < 0.01) eventProperties['description'] = 'd'.repeat(300); // gets truncated and reported
    let eventType = pick(EVENT_TYPES);
    if (rnd() < 0.05) {
      eventType = 'order_completed';
      const quantity = 1 + Math.floor(rnd() * 3);
      const price = Math.round(rnd() * 20_000) / 100;
      eventProperties['$price'] = price;
      eventProperties['$quantity'] = quantity;
      eventProperties['$revenue'] = price * quantity;
      eventProperties['$productId'] = pick(['pro_monthly', 'pro_annual', 'credits_100', 'seat_addon']);
      eventProperties['$revenueType'] = 'purchase';
    }
    const userProperties: Record<string, unknown> = {
      plan: u.plan,
      country: u.country,
      signup_date: '2024-11-02',
      sessions: Math.floor(rnd() * 500),
      email_opt_in: rnd() < 0.6,
      initial_utm_source: pick(['google', 'newsletter', 'direct', 'linkedin']),
      '[Amplitude] Device Family': pick(['Mac', 'Windows', 'iPhone', 'Pixel']),
    };
    if (rnd() < 0.1) {
      userProperties['$set'] = { last_seen_feature: pick(EVENT_TYPES) };
      userProperties['$add'] = { exports: 1 };
      if (rnd() < 0.5) userProperties['$append'] = { badges: pick(['early_bird', 'power_user']) };
      if (rnd() < 0.2) userProperties['$setOnce'] = { first_platform: u.platform };
    }
    const doc: Record<string, unknown> = {
      event_type: eventType,
      user_id: u.userId ?? null,
      device_id: u.deviceId,
      amplitude_id: u.amplitudeId,
      uuid: `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`,
      $insert_id: hex(32),
      app: 187520,
      event_time: clientTime,
      client_event_time: clientTime,
      client_upload_time: iso,
      server_received_time: iso,
      server_upload_time: iso,
      processed_time: iso,
      session_id: t - 60_000,
      event_id: Math.floor(rnd() * 5000),
      event_properties: eventProperties,
      user_properties: userProperties,
      groups: {},
      group_properties: {},
      version_name: '3.14.2',
      platform: u.platform,
      os_name: u.platform === 'Web' ? 'Chrome' : u.platform,
      os_version: '17.4',
      device_type: u.platform === 'Web' ? 'Mac' : 'Apple iPhone',
      device_family: u.platform === 'Web' ? 'Mac' : 'iPhone',
      country: u.country,
      region: 'Bavaria',
      city: 'Munich',
      language: 'English',
      ip_address: `10.${Math.floor(rnd() * 255)}.${Math.floor(rnd() * 255)}.${Math.floor(rnd() * 255)}`,
      library: u.library,
      paying: rnd() < 0.1,
      data: { first_event: false },
      sample_rate: null,
    };
    out.push(Buffer.from(JSON.stringify(doc)));
  }
  return out;
}

function measure(messages: readonly Buffer[], fn: (b: Buffer) => number): { rate: number; sink: number } {
  let sink = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < messages.length; i++) sink += fn(messages[i]!);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { rate: messages.length / seconds, sink };
}

export async function runMappingBench(): Promise<BenchResult[]> {
  const messages = generateMessages();
  const mapper = createOutboundMapper({ ...defaultOutboundMapping, appId: 'bench-app', updateExistingOnly: false });
  // Both sides return a number derived from their output so neither can be optimised away.
  const ours = (b: Buffer): number => {
    const r = mapper(b);
    return r.kind === 'mapped' ? r.sizeEstimate + r.adjustments.length : 1;
  };
  const baseline = (b: Buffer): number => JSON.stringify(JSON.parse(b.toString())).length;

  const warm = messages.slice(0, 50_000);
  for (let i = 0; i < 2; i++) {
    measure(warm, ours);
    measure(warm, baseline);
  }
  let bestOurs = 0;
  let bestBaseline = 0;
  let sink = 0;
  // Interleaved so that drift in machine load touches both sides alike.
  for (let run = 0; run < RUNS; run++) {
    const a = measure(messages, ours);
    const b = measure(messages, baseline);
    bestOurs = Math.max(bestOurs, a.rate);
    bestBaseline = Math.max(bestBaseline, b.rate);
    sink += a.sink + b.sink;
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (sink === 0) throw new Error('benchmark produced no output');
  note(
    `outbound_mapping: ${messages.length} messages, avg ${Math.round(
      messages.reduce((n, m) => n + m.length, 0) / messages.length,
    )} B; mapper ${Math.round(bestOurs)} events/s, json_parse_stringify ${Math.round(bestBaseline)} events/s`,
  );
  return [
    {
      bench: 'outbound_mapping',
      value: Math.round(bestOurs),
      unit: 'events/s',
      baseline: 'json_parse_stringify',
      ratio: roundRatio(bestOurs / bestBaseline),
    },
  ];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await runMappingBench();
  for (const r of results) printResult(r);
}
