import { describe, expect, it } from 'vitest';
import type { AmplitudeEvent, CurrentsEvent, CurrentsUser, JsonObject } from '../../src/currents-ingest/currents-types.js';
import {
  AMPLITUDE_BLOCKED_IDS,
  CURRENTS_EVENT_TYPES,
  deriveDisplayName,
  identityKey,
  idRejection,
  mapCurrentsEvent,
  roundFloat32,
  type CurrentsMappingOptions,
} from '../../src/braze-to-amplitude/currents-to-amplitude.js';
import { BRAZE_ID, CAMPAIGN, CANVAS, customEventProps, emailClickProps, purchaseProps, TIME, UUID } from '../support/currents-samples.js';

// Values from Appboy/currents-examples `sample-data/Custom HTTP/**` (braze-currents.md §3, §5).
const ID = 'f47ac10b-58cc-4372-a567-0e02b2c3d479';
const TIME_MS = 2033802504000;
const FULL_USER: CurrentsUser = { device_id: 'device_id', external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID };
const USER_NO_DEVICE: CurrentsUser = { external_user_id: 'external_user_id', user_id: BRAZE_ID };

function ev(eventType: string, user: CurrentsUser, properties: JsonObject, id = ID, time = TIME): CurrentsEvent {
  return { id, event_type: eventType, time, user, properties };
}

/** The Amplitude event every case shares, before the per-case fields. */
function amp(eventType: string, eventProperties: JsonObject, extra: Partial<AmplitudeEvent> = {}, user: CurrentsUser = FULL_USER): AmplitudeEvent {
  const out: AmplitudeEvent = { event_type: eventType };
  if (user.external_user_id !== undefined) out.user_id = user.external_user_id;
  if (user.device_id !== undefined) out.device_id = user.device_id;
  out.time = TIME_MS;
  out.insert_id = ID;
  const base: JsonObject = {};
  if (user.user_id !== undefined) base['braze_id'] = user.user_id;
  if (user.timezone !== undefined) base['timezone'] = user.timezone;
  out.event_properties = { ...base, ...eventProperties };
  return { ...out, ...extra, library: 'Braze' };
}


interface Case {
  family: string;
  input: CurrentsEvent;
  opts?: CurrentsMappingOptions;
  expected: AmplitudeEvent;
}

const ALL: CurrentsMappingOptions = { eventScope: 'all' };

const purchaseUser: CurrentsUser = { device_id: 'device_id', external_user_id: 'external_user_id', user_id: BRAZE_ID };
const sessionUser: CurrentsUser = { user_id: '0123456789abcdef01234567', external_user_id: 'user_id', device_id: 'fedcba87-6543-210f-fedc-ba9876543210' };
const sessionProps: JsonObject = {
  app_id: '01234567-89ab-cdef-0123-456789abcdef',
  platform: 'ios',
  os_version: 'iOS 10.3.1',
  device_model: 'iPhone 7 Plus',
  session_id: 'b1234567-89ab-cdef-0123-456789abcdef',
};
const canvasEntryProps: JsonObject = { app_group_id: UUID, ...CANVAS, in_control_group: true };
const smsInboundProps: JsonObject = {
  action: 'Subscribed',
  app_group_id: UUID,
  ...CAMPAIGN,
  ...CANVAS,
  inbound_phone_number: '+1234567890',
  media_urls: ['media_urls'],
  message_body: 'message_body',
  subscription_group_id: UUID,
  user_phone_number: '+1234567890',
};
const pushOpenProps: JsonObject = {
  app_id: UUID,
  ...CAMPAIGN,
  platform: 'ios',
  os_version: '17.6.1',
  device_model: 'iPhone15,2',
  send_id: 'send_id',
  dispatch_id: BRAZE_ID,
  button_action_type: 'deep_link',
  button_string: 'open',
  ad_id: 'AEBE52E7-03EE-455A-B3C4-E57283966239',
  ad_id_type: 'ios_idfa',
  ad_tracking_enabled: true,
  app_group_id: UUID,
};

function omit(obj: JsonObject, ...keys: string[]): JsonObject {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}
const customPassThrough = omit(customEventProps, 'custom_properties', 'name');
const purchasePassThrough = omit(purchaseProps, 'product_id', 'price', 'purchase_properties');

const cases: Case[] = [
  {
    family: 'users.behaviors.CustomEvent (Custom HTTP sample)',
    input: ev('users.behaviors.CustomEvent', FULL_USER, customEventProps),
    expected: amp(
      '[Appboy] [Custom Event] name',
      {
        ...customPassThrough,
        '[Custom event property] listProperty': ['a'],
        '[Custom event property] numberProperty': 1,
        '[Custom event property] stringProperty': 'properties',
      },
      { idfa: UUID },
    ),
  },
  {
    family: 'users.behaviors.Purchase (Custom HTTP sample)',
    input: ev('users.behaviors.Purchase', purchaseUser, purchaseProps),
    expected: amp(
      '[Appboy] Purchase',
      {
        ...purchasePassThrough,
        '[Purchase property] listProperty': ['a'],
        '[Purchase property] numberProperty': 1,
        '[Purchase property] stringProperty': 'properties',
      },
      { productId: 'product_id', price: 3.14, idfa: UUID },
      purchaseUser,
    ),
  },
  {
    family: 'users.behaviors.app.SessionStart (Custom HTTP sample)',
    input: { id: 'a1234567-89ab-cdef-0123-456789abcdef', event_type: 'users.behaviors.app.SessionStart', time: 1477502783, user: sessionUser, properties: sessionProps },
    expected: {
      event_type: '[Appboy] Session Start',
      user_id: 'user_id',
      device_id: 'fedcba87-6543-210f-fedc-ba9876543210',
      time: 1477502783000,
      insert_id: 'a1234567-89ab-cdef-0123-456789abcdef',
      event_properties: { braze_id: '0123456789abcdef01234567', ...sessionProps },
      library: 'Braze',
    },
  },
  {
    family: 'users.behaviors.* (Location)',
    input: ev('users.behaviors.Location', FULL_USER, { app_id: UUID, latitude: 40.7128, longitude: -74.006, platform: 'ios' }),
    expected: amp('[Appboy] Location', { app_id: UUID, latitude: 40.7128, longitude: -74.006, platform: 'ios' }),
  },
  {
    family: 'users.behaviors.app.* (FirstSession)',
    input: ev('users.behaviors.app.FirstSession', FULL_USER, { app_id: UUID, session_id: 'session-1' }),
    expected: amp('[Appboy] First Session', { app_id: UUID, session_id: 'session-1' }),
  },
  {
    family: 'users.behaviors.app.* (SessionEnd, duration stays a property)',
    input: ev('users.behaviors.app.SessionEnd', FULL_USER, { app_id: UUID, session_id: 'session-1', duration: 12.5 }),
    expected: amp('[Appboy] Session End', { app_id: UUID, session_id: 'session-1', duration: 12.5 }),
  },
  {
    family: 'users.behaviors.subscription.*',
    input: ev('users.behaviors.subscription.GlobalStateChange', USER_NO_DEVICE, { app_group_id: UUID, email_address: 'example@braze.com', subscription_status: 'Unsubscribed' }),
    expected: amp('[Appboy] Global Subscription State Change', { app_group_id: UUID, email_address: 'example@braze.com', subscription_status: 'Unsubscribed' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.behaviors.subscriptiongroup.*',
    input: ev('users.behaviors.subscriptiongroup.StateChange', USER_NO_DEVICE, { subscription_group_id: UUID, subscription_status: 'Subscribed', channel: 'email' }),
    expected: amp('[Appboy] Subscription Group State Change', { subscription_group_id: UUID, subscription_status: 'Subscribed', channel: 'email' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.behaviors.liveactivity.* (storage-only, scope all)',
    input: ev('users.behaviors.liveactivity.PushToStartTokenChange', FULL_USER, { app_id: UUID }),
    opts: ALL,
    expected: amp('[Appboy] Live Activity Push To Start Token Change', { app_id: UUID }),
  },
  {
    family: 'users.behaviors.pushnotification.* (storage-only, scope all)',
    input: ev('users.behaviors.pushnotification.TokenStateChange', FULL_USER, { app_id: UUID, push_token_state: 'active' }),
    opts: ALL,
    expected: amp('[Appboy] Push Notification Token State Change', { app_id: UUID, push_token_state: 'active' }),
  },
  {
    family: 'users.campaigns.*',
    input: ev('users.campaigns.Conversion', USER_NO_DEVICE, { app_id: UUID, ...CAMPAIGN, send_id: 'send_id', conversion_behavior_index: 0, conversion_behavior: '{"type":"open_app"}' }),
    expected: amp(
      '[Appboy] Campaign Conversion',
      { app_id: UUID, ...CAMPAIGN, send_id: 'send_id', conversion_behavior_index: 0, conversion_behavior: '{"type":"open_app"}' },
      {},
      USER_NO_DEVICE,
    ),
  },
  {
    family: 'users.campaigns.* (EnrollInControl)',
    input: ev('users.campaigns.EnrollInControl', USER_NO_DEVICE, { ...CAMPAIGN }),
    expected: amp('[Appboy] Campaign Enroll In Control', { ...CAMPAIGN }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.canvas.* (Entry, Custom HTTP sample)',
    input: ev('users.canvas.Entry', FULL_USER, canvasEntryProps),
    expected: amp('[Appboy] Canvas Entry', canvasEntryProps),
  },
  {
    family: 'users.canvas.* (Conversion)',
    input: ev('users.canvas.Conversion', USER_NO_DEVICE, { ...CANVAS }),
    expected: amp('[Appboy] Canvas Conversion', { ...CANVAS }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.canvas.costep.* (storage-only, scope all)',
    input: ev('users.canvas.costep.Send', USER_NO_DEVICE, { ...CANVAS }),
    opts: ALL,
    expected: amp('[Appboy] Canvas Co-Step Send', { ...CANVAS }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.canvas.exit.*',
    input: ev('users.canvas.exit.PerformedEvent', USER_NO_DEVICE, { canvas_id: UUID, canvas_name: 'canvas_name' }),
    expected: amp('[Appboy] Canvas Exit Performed Event', { canvas_id: UUID, canvas_name: 'canvas_name' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.canvas.experimentstep.*',
    input: ev('users.canvas.experimentstep.SplitEntry', USER_NO_DEVICE, { canvas_id: UUID, experiment_step_id: 'step', experiment_split_name: 'A' }),
    expected: amp('[Appboy] Canvas Experiment Step Split Entry', { canvas_id: UUID, experiment_step_id: 'step', experiment_split_name: 'A' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.canvasstep.* (storage-only, scope all)',
    input: ev('users.canvasstep.Progression', USER_NO_DEVICE, { canvas_id: UUID }),
    opts: ALL,
    expected: amp('[Appboy] Canvas Step Progression', { canvas_id: UUID }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.banner.* (storage-only, scope all)',
    input: ev('users.messages.banner.Click', FULL_USER, { app_id: UUID, banner_placement_id: 'top' }),
    opts: ALL,
    expected: amp('[Appboy] Banner Click', { app_id: UUID, banner_placement_id: 'top' }),
  },
  {
    family: 'users.messages.contentcard.*',
    input: ev('users.messages.contentcard.Click', FULL_USER, { app_id: UUID, card_id: 'card', ...CAMPAIGN }),
    expected: amp('[Appboy] Content Card Click', { app_id: UUID, card_id: 'card', ...CAMPAIGN }),
  },
  {
    family: 'users.messages.email.* (Click, Custom HTTP sample)',
    input: ev('users.messages.email.Click', FULL_USER, emailClickProps),
    expected: amp('[Appboy] Email Click', emailClickProps),
  },
  {
    family: 'users.messages.email.* (Open, no device id)',
    input: ev('users.messages.email.Open', USER_NO_DEVICE, { email_address: 'example@braze.com', ...CAMPAIGN }),
    expected: amp('[Appboy] Email Open', { email_address: 'example@braze.com', ...CAMPAIGN }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.featureflag.* (storage-only, scope all)',
    input: ev('users.messages.featureflag.Impression', FULL_USER, { feature_flag_id_name: 'beta' }),
    opts: ALL,
    expected: amp('[Appboy] Feature Flag Impression', { feature_flag_id_name: 'beta' }),
  },
  {
    family: 'users.messages.inappmessage.*',
    input: ev('users.messages.inappmessage.Impression', FULL_USER, { app_id: UUID, ...CAMPAIGN }),
    expected: amp('[Appboy] In-App Message Impression', { app_id: UUID, ...CAMPAIGN }),
  },
  {
    family: 'users.messages.line.* (storage-only, scope all)',
    input: ev('users.messages.line.Send', USER_NO_DEVICE, { ...CAMPAIGN }),
    opts: ALL,
    expected: amp('[Appboy] LINE Send', { ...CAMPAIGN }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.liveactivity.* (storage-only, scope all)',
    input: ev('users.messages.liveactivity.Send', FULL_USER, { app_id: UUID }),
    opts: ALL,
    expected: amp('[Appboy] Live Activity Send', { app_id: UUID }),
  },
  {
    family: 'users.messages.pushnotification.* (Open, iOS ad id → idfa)',
    input: ev('users.messages.pushnotification.Open', FULL_USER, pushOpenProps),
    expected: amp('[Appboy] Push Notification Open', pushOpenProps, { idfa: 'AEBE52E7-03EE-455A-B3C4-E57283966239' }),
  },
  {
    family: 'users.messages.pushnotification.* (IosForeground)',
    input: ev('users.messages.pushnotification.IosForeground', FULL_USER, { app_id: UUID, platform: 'ios' }),
    expected: amp('[Appboy] Push Notification iOS Foreground Open', { app_id: UUID, platform: 'ios' }),
  },
  {
    family: 'users.messages.rcs.* (storage-only, scope all)',
    input: ev('users.messages.rcs.Delivery', USER_NO_DEVICE, { to_phone_number: '+1234567890' }),
    opts: ALL,
    expected: amp('[Appboy] RCS Delivery', { to_phone_number: '+1234567890' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.sms.* (InboundReceive, Custom HTTP sample)',
    input: ev('users.messages.sms.InboundReceive', USER_NO_DEVICE, smsInboundProps),
    expected: amp('[Appboy] SMS Inbound Receive', smsInboundProps, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.webhook.*',
    input: ev('users.messages.webhook.Send', USER_NO_DEVICE, { ...CAMPAIGN, dispatch_id: BRAZE_ID }),
    expected: amp('[Appboy] Webhook Send', { ...CAMPAIGN, dispatch_id: BRAZE_ID }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.messages.whatsapp.* (time is a long here)',
    input: ev('users.messages.whatsapp.Read', USER_NO_DEVICE, { to_phone_number: '+1234567890' }),
    expected: amp('[Appboy] WhatsApp Read', { to_phone_number: '+1234567890' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.profile.* (storage-only, scope all)',
    input: ev('users.profile.Update', USER_NO_DEVICE, { app_group_id: UUID, time_ms: 2033802504123 }),
    opts: ALL,
    expected: amp('[Appboy] Profile Update', { app_group_id: UUID, time_ms: 2033802504123 }, {}, USER_NO_DEVICE),
  },
  {
    family: 'users.* (UserOrphan, storage-only, scope all)',
    input: ev('users.UserOrphan', USER_NO_DEVICE, { app_group_id: UUID, orphaned_by_id: 'other' }),
    opts: ALL,
    expected: amp('[Appboy] User Orphan', { app_group_id: UUID, orphaned_by_id: 'other' }, {}, USER_NO_DEVICE),
  },
  {
    family: 'agentconsole.* (storage-only, scope all)',
    input: ev('agentconsole.AgentExecuted', USER_NO_DEVICE, { agent_id: 'agent' }),
    opts: ALL,
    expected: amp('[Appboy] Agent Console Agent Executed', { agent_id: 'agent' }, {}, USER_NO_DEVICE),
  },
];

describe('mapCurrentsEvent: one case per event family', () => {
  it.each(cases)('$family', ({ input, opts, expected }) => {
    const r = mapCurrentsEvent(input, opts);
    expect(r).toEqual({ ok: true, event: expected, droppedIds: [] });
  });

  it('covers every family of braze-currents.md §1', () => {
    const families = [
      'agentconsole', 'users', 'users.behaviors', 'users.behaviors.app', 'users.behaviors.liveactivity',
      'users.behaviors.pushnotification', 'users.behaviors.subscription', 'users.behaviors.subscriptiongroup',
      'users.campaigns', 'users.canvas', 'users.canvas.costep', 'users.canvas.exit', 'users.canvas.experimentstep',
      'users.canvasstep', 'users.messages.banner', 'users.messages.contentcard', 'users.messages.email',
      'users.messages.featureflag', 'users.messages.inappmessage', 'users.messages.line', 'users.messages.liveactivity',
      'users.messages.pushnotification', 'users.messages.rcs', 'users.messages.sms', 'users.messages.webhook',
      'users.messages.whatsapp', 'users.profile',
    ];
    const covered = new Set(cases.map((c) => c.input.event_type.slice(0, c.input.event_type.lastIndexOf('.'))));
    expect(families.filter((f) => !covered.has(f))).toEqual([]);
  });
});

describe('event naming', () => {
  it('names every known event type `[Appboy] <display name>` under scope all', () => {
    for (const [type, info] of Object.entries(CURRENTS_EVENT_TYPES)) {
      if (type === 'users.behaviors.CustomEvent') continue;
      const r = mapCurrentsEvent(ev(type, FULL_USER, {}), ALL);
      expect(r.ok && r.event.event_type).toBe(`[Appboy] ${info.name}`);
    }
  });

  it('lists the 94 event types of the sample set plus campaign/Canvas Abort', () => {
    expect(Object.keys(CURRENTS_EVENT_TYPES)).toHaveLength(96);
  });

  it('uses the display names Braze quotes', () => {
    const quoted: Record<string, string> = {
      'users.messages.email.Send': 'Email Send',
      'users.messages.email.Delivery': 'Email Delivery',
      'users.messages.email.Open': 'Email Open',
      'users.messages.email.Bounce': 'Email Bounce',
      'users.messages.email.SoftBounce': 'Email Soft Bounce',
      'users.messages.email.MarkAsSpam': 'Email Mark As Spam',
      'users.messages.email.Unsubscribe': 'Email Unsubscribe',
      'users.messages.pushnotification.Send': 'Push Notification Send',
      'users.messages.pushnotification.Bounce': 'Push Notification Bounce',
      'users.messages.inappmessage.Click': 'In-App Message Click',
      'users.messages.contentcard.Send': 'Content Card Send',
      'users.messages.contentcard.Impression': 'Content Card Impression',
      'users.messages.contentcard.Dismiss': 'Content Card Dismiss',
      'users.messages.sms.Send': 'SMS Send',
      'users.behaviors.InstallAttribution': 'Install Attribution',
      'users.behaviors.Uninstall': 'Uninstall',
    };
    for (const [type, name] of Object.entries(quoted)) {
      const r = mapCurrentsEvent(ev(type, FULL_USER, {}));
      expect(r.ok && r.event.event_type).toBe(`[Appboy] ${name}`);
    }
  });

  it('refuses event types the native connector does not export, by default', () => {
    for (const type of ['users.messages.email.Retry', 'users.RandomBucketNumberUpdate', 'agentconsole.ToolInvocation', 'users.messages.survey.Response']) {
      const r = mapCurrentsEvent(ev(type, FULL_USER, {}));
      expect(r).toMatchObject({ ok: false, reason: 'unsupported_event' });
    }
  });

  it('derives a name for event types missing from the table (scope all)', () => {
    const r = mapCurrentsEvent(ev('users.messages.survey.Response', FULL_USER, {}), ALL);
    expect(r.ok && r.event.event_type).toBe('[Appboy] Survey Response');
    expect(deriveDisplayName('users.messages.landingpage.FormSubmission')).toBe('Landing Page Form Submission');
    expect(deriveDisplayName('users.behaviors.UpgradedApp')).toBe('Upgraded App');
    expect(deriveDisplayName('users.somethingnew.SMSThing')).toBe('Somethingnew SMS Thing');
  });

  it('applies a configurable prefix and custom-event prefix', () => {
    const opts: CurrentsMappingOptions = { eventNamePrefix: '[Braze] ', customEventPrefix: '' };
    const open = mapCurrentsEvent(ev('users.messages.email.Open', FULL_USER, {}), opts);
    expect(open.ok && open.event.event_type).toBe('[Braze] Email Open');
    const custom = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'report_exported' }), opts);
    expect(custom.ok && custom.event.event_type).toBe('[Braze] report_exported');
    const glossary = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'report_exported' }), { eventNamePrefix: '', customEventPrefix: '[Braze Custom Event] ' });
    expect(glossary.ok && glossary.event.event_type).toBe('[Braze Custom Event] report_exported');
  });

  it('uses name overrides verbatim, with a {name} template for custom events, and lets them opt a type in', () => {
    const opts: CurrentsMappingOptions = {
      nameOverrides: {
        'users.messages.email.Open': 'Email Opened',
        'users.behaviors.CustomEvent': 'Braze: {name}',
        'users.messages.email.Retry': '[Appboy] Email Retry',
      },
    };
    const open = mapCurrentsEvent(ev('users.messages.email.Open', FULL_USER, {}), opts);
    expect(open.ok && open.event.event_type).toBe('Email Opened');
    const custom = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'report_exported' }), opts);
    expect(custom.ok && custom.event.event_type).toBe('Braze: report_exported');
    const retry = mapCurrentsEvent(ev('users.messages.email.Retry', FULL_USER, {}), opts);
    expect(retry.ok && retry.event.event_type).toBe('[Appboy] Email Retry');
  });

  it('documented example: [Appboy] [Custom Event] report_exported', () => {
    const r = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'report_exported', custom_properties: {} }));
    expect(r.ok && r.event.event_type).toBe('[Appboy] [Custom Event] report_exported');
  });

  it('refuses a custom event without a name', () => {
    expect(mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, {}))).toMatchObject({ ok: false, reason: 'missing_name' });
    expect(mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: '' }))).toMatchObject({ ok: false, reason: 'missing_name' });
  });
});

describe('identity gate and Amplitude id rules', () => {
  const OPEN = 'users.messages.email.Open';
  const rows: Array<{
    name: string;
    user: CurrentsUser;
    opts?: CurrentsMappingOptions;
    result: { ok: true; user_id?: string; device_id?: string } | { ok: false; reason: string };
    dropped: Array<{ field: string; reason: string }>;
  }> = [
    { name: 'both ids', user: { external_user_id: 'cust-000482', device_id: 'device-0001' }, result: { ok: true, user_id: 'cust-000482', device_id: 'device-0001' }, dropped: [] },
    { name: 'external id only', user: { external_user_id: 'cust-000482' }, result: { ok: true, user_id: 'cust-000482' }, dropped: [] },
    { name: 'anonymous with device id', user: { device_id: 'device-0001', user_id: BRAZE_ID }, result: { ok: true, device_id: 'device-0001' }, dropped: [] },
    { name: 'neither id (the Braze id is not an identity)', user: { user_id: BRAZE_ID }, result: { ok: false, reason: 'no_identity' }, dropped: [] },
    { name: 'empty strings', user: { external_user_id: '', device_id: '' }, result: { ok: false, reason: 'no_identity' }, dropped: [] },
    { name: 'short user id dropped, device kept', user: { external_user_id: 'abcd', device_id: 'device-0001' }, result: { ok: true, device_id: 'device-0001' }, dropped: [{ field: 'user_id', reason: 'too_short' }] },
    { name: 'blocked device id dropped, user kept', user: { external_user_id: 'cust-000482', device_id: '00000000-0000-0000-0000-000000000000' }, result: { ok: true, user_id: 'cust-000482' }, dropped: [{ field: 'device_id', reason: 'blocked' }] },
    { name: 'only id is blocked', user: { external_user_id: 'undefined' }, result: { ok: false, reason: 'invalid_id' }, dropped: [{ field: 'user_id', reason: 'blocked' }] },
    { name: 'both ids refused', user: { external_user_id: 'null', device_id: '-1' }, result: { ok: false, reason: 'invalid_id' }, dropped: [{ field: 'user_id', reason: 'blocked' }, { field: 'device_id', reason: 'blocked' }] },
    { name: 'blocked values compared case-insensitively by default', user: { external_user_id: 'Anonymous', device_id: 'device-0001' }, result: { ok: true, device_id: 'device-0001' }, dropped: [{ field: 'user_id', reason: 'blocked' }] },
    { name: 'case-sensitive comparison on request', user: { external_user_id: 'Anonymous' }, opts: { blockedIdsCaseSensitive: true }, result: { ok: true, user_id: 'Anonymous' }, dropped: [] },
    { name: 'minIdLength lowered', user: { external_user_id: 'abc' }, opts: { minIdLength: 3 }, result: { ok: true, user_id: 'abc' }, dropped: [] },
    { name: 'length counts code points', user: { external_user_id: '😀😀😀😀' }, result: { ok: false, reason: 'invalid_id' }, dropped: [{ field: 'user_id', reason: 'too_short' }] },
    { name: 'custom blocked list', user: { external_user_id: 'test-user' }, opts: { blockedIds: ['test-user'] }, result: { ok: false, reason: 'invalid_id' }, dropped: [{ field: 'user_id', reason: 'blocked' }] },
  ];

  it.each(rows)('$name', ({ user, opts, result, dropped }) => {
    const r = mapCurrentsEvent(ev(OPEN, user, {}), opts);
    expect(r.droppedIds).toEqual(dropped);
    if (result.ok) {
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.event.user_id).toBe(result.user_id);
      expect(r.event.device_id).toBe(result.device_id);
    } else {
      expect(r).toMatchObject({ ok: false, reason: result.reason });
    }
  });

  it('blocks every value of amplitude-http-api.md §4', () => {
    expect([...AMPLITUDE_BLOCKED_IDS].sort()).toEqual(
      ['anonymous', 'nil', 'none', 'null', 'n/a', 'na', 'undefined', 'unknown', '""', '00000000-0000-0000-0000-000000000000', '{}', 'lmy47d', '0', '-1'].sort(),
    );
    for (const id of AMPLITUDE_BLOCKED_IDS) expect(idRejection(id, { minIdLength: 1 })).toBe('blocked');
  });
});

describe('identityKey (Kafka key)', () => {
  it('is the external id, else the device id, for a Currents event (one partition per user)', () => {
    expect(identityKey(ev('x', FULL_USER, {}))).toBe('external_user_id');
    expect(identityKey(ev('x', { device_id: 'device_id' }, {}))).toBe('device_id');
    expect(identityKey(ev('x', USER_NO_DEVICE, {}))).toBe('external_user_id');
    expect(identityKey(ev('x', { user_id: BRAZE_ID }, {}))).toBeUndefined();
  });
  it('is the user id, else the device id, for an Amplitude event', () => {
    expect(identityKey({ event_type: 'e', user_id: 'cust-000482', device_id: 'device-0001' })).toBe('cust-000482');
    expect(identityKey({ event_type: 'e', device_id: 'device-0001' })).toBe('device-0001');
    expect(identityKey({ event_type: 'e', user_id: 'cust-000482' })).toBe('cust-000482');
    expect(identityKey({ event_type: 'e' })).toBeUndefined();
  });
  it('skips ids Amplitude would refuse, so the key matches the mapped identity', () => {
    const e = ev('users.messages.email.Open', { external_user_id: 'cust-000482', device_id: 'null' }, {});
    const mapped = mapCurrentsEvent(e);
    expect(mapped.ok && identityKey(mapped.event)).toBe('cust-000482');
    expect(identityKey(e)).toBe('cust-000482');
    const f = ev('users.messages.email.Open', { external_user_id: 'null', device_id: 'device-0001' }, {});
    const mappedF = mapCurrentsEvent(f);
    expect(mappedF.ok && identityKey(mappedF.event)).toBe('device-0001');
    expect(identityKey(f)).toBe('device-0001');
  });
});

describe('field mapping details', () => {
  it('converts epoch seconds to milliseconds and uses the event id as insert_id', () => {
    const r = mapCurrentsEvent(ev('users.messages.email.Open', USER_NO_DEVICE, {}, 'evt-1', 1767225600));
    expect(r.ok && [r.event.time, r.event.insert_id]).toEqual([1767225600000, 'evt-1']);
  });

  it('rounds an Avro float price back to its decimal', () => {
    const r = mapCurrentsEvent(ev('users.behaviors.Purchase', purchaseUser, { ...purchaseProps, price: Math.fround(3.14) }));
    expect(Math.fround(3.14)).toBe(3.140000104904175);
    expect(r.ok && r.event.price).toBe(3.14);
    expect(r.ok && r.event.event_properties?.['currency']).toBe('USD');
    expect(r.ok && [r.event.quantity, r.event.revenue]).toEqual([undefined, undefined]);
  });

  it('parses custom properties still carried as a JSON string, and keeps an unparseable one', () => {
    const parsed = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'n', properties: '{"plan":"pro","n":2}' }));
    expect(parsed.ok && parsed.event.event_properties).toEqual({
      braze_id: BRAZE_ID,
      timezone: 'America/New_York',
      '[Custom event property] plan': 'pro',
      '[Custom event property] n': 2,
    });
    const broken = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'n', properties: '{"plan":' }));
    expect(broken.ok && broken.event.event_properties?.['properties']).toBe('{"plan":');
    const proto = mapCurrentsEvent(ev('users.behaviors.Purchase', FULL_USER, { product_id: 'p', price: 1, properties: '{"__proto__":{"x":1}}' }));
    expect(proto.ok && proto.event.event_properties?.['properties']).toBe('{"__proto__":{"x":1}}');
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });

  it('uses configurable property prefixes', () => {
    const r = mapCurrentsEvent(ev('users.behaviors.CustomEvent', FULL_USER, { name: 'n', custom_properties: { a: 1 } }), { customPropertyPrefix: 'cp_' });
    expect(r.ok && r.event.event_properties?.['cp_a']).toBe(1);
  });

  it('fills idfa/adid from ad_id by ad_id_type, then platform; never an all-zero id', () => {
    const adRows: Array<[JsonObject, Partial<AmplitudeEvent>]> = [
      [{ ad_id: 'AD-ID-1', ad_id_type: 'ios_idfa' }, { idfa: 'AD-ID-1' }],
      [{ ad_id: 'AD-ID-1', ad_id_type: 'google_ad_id' }, { adid: 'AD-ID-1' }],
      [{ ad_id: 'AD-ID-1', ad_id_type: 'roku_ad_id' }, {}],
      [{ ad_id: 'AD-ID-1', platform: 'android' }, { adid: 'AD-ID-1' }],
      [{ ad_id: 'AD-ID-1', platform: 'web' }, {}],
      [{ ad_id: '00000000-0000-0000-0000-000000000000', ad_id_type: 'ios_idfa' }, {}],
    ];
    for (const [props, want] of adRows) {
      const r = mapCurrentsEvent(ev('users.messages.pushnotification.Open', FULL_USER, props));
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      expect({ idfa: r.event.idfa, adid: r.event.adid }).toEqual({ idfa: undefined, adid: undefined, ...want });
      expect(r.event.event_properties?.['ad_id']).toBe(props['ad_id']);
    }
  });

  it('marks events with library Braze (loop prevention), configurable', () => {
    const r = mapCurrentsEvent(ev('users.messages.email.Open', USER_NO_DEVICE, {}), { library: 'braze-currents-gateway' });
    expect(r.ok && r.event.library).toBe('braze-currents-gateway');
  });

  it('keeps Braze session_id as a property, never as Amplitude session_id', () => {
    const r = mapCurrentsEvent(ev('users.behaviors.app.SessionStart', FULL_USER, { session_id: 'b1234567-89ab-cdef-0123-456789abcdef' }));
    expect(r.ok && r.event.session_id).toBeUndefined();
    expect(r.ok && r.event.event_properties?.['session_id']).toBe('b1234567-89ab-cdef-0123-456789abcdef');
  });

  it('refuses unsupported events before looking at identity', () => {
    expect(mapCurrentsEvent(ev('users.UserDeleteRequest', { user_id: BRAZE_ID }, { app_group_id: UUID }))).toMatchObject({ ok: false, reason: 'unsupported_event' });
    expect(mapCurrentsEvent(ev('users.UserDeleteRequest', { user_id: BRAZE_ID }, { app_group_id: UUID }), ALL)).toMatchObject({ ok: false, reason: 'no_identity' });
  });
});

describe('roundFloat32', () => {
  it.each([
    [Math.fround(3.14), 3.14],
    [Math.fround(0.1), 0.1],
    [Math.fround(19.99), 19.99],
    [Math.fround(1234567.8), 1234567.8],
    [Math.fround(16777217), 16777216],
    [5, 5],
    [0.1, 0.1],
    [3.14, 3.14],
    [-Math.fround(2.5), -2.5],
  ])('%s → %s', (input, want) => {
    expect(roundFloat32(input)).toBe(want);
  });
});
