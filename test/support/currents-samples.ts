import type { JsonObject } from '../../src/currents-ingest/currents-types.js';

/** Values of Braze's published Currents samples (Appboy/currents-examples), shared by the mapping and Avro tests. */
export const UUID = 'f47ac10b-58cc-4372-a567-0e02b2c3d479';
export const BRAZE_ID = '639a35d192b0df004d06514c';
export const TIME = 2033802504;
export const CAMPAIGN = {
  campaign_id: UUID,
  campaign_name: 'campaign_name',
  message_variation_id: UUID,
  message_variation_name: 'message_variation_name',
} as const;
export const CANVAS = {
  canvas_id: UUID,
  canvas_name: 'canvas_name',
  canvas_step_id: UUID,
  canvas_step_name: 'canvas_step_name',
  canvas_variation_id: UUID,
  canvas_variation_name: 'canvas_variation_name',
} as const;
export const customEventProps: JsonObject = {
  ad_id: UUID,
  ad_id_type: 'ios_idfa',
  ad_tracking_enabled: true,
  app_group_id: UUID,
  app_id: UUID,
  custom_properties: { listProperty: ['a'], numberProperty: 1, stringProperty: 'properties' },
  device_model: 'device_model',
  name: 'name',
  os_version: '17.6.1',
  platform: 'android',
};
export const purchaseProps: JsonObject = {
  ad_id: UUID,
  ad_id_type: 'ios_idfa',
  ad_tracking_enabled: true,
  app_group_id: UUID,
  app_id: UUID,
  currency: 'USD',
  device_model: 'device_model',
  os_version: '17.6.1',
  platform: 'android',
  price: 3.14,
  product_id: 'product_id',
  purchase_properties: { listProperty: ['a'], numberProperty: 1, stringProperty: 'properties' },
};
export const emailClickProps: JsonObject = {
  app_group_id: UUID,
  browser: 'Chrome Mobile iOS',
  ...CAMPAIGN,
  ...CANVAS,
  device_class: 'desktop',
  device_model: 'device_model',
  device_os: 'Android',
  dispatch_id: BRAZE_ID,
  email_address: 'example@braze.com',
  esp: 'SendGrid',
  from_domain: 'braze.com',
  ip_pool: 'ip_pool',
  is_amp: true,
  is_suspected_bot_click: true,
  link_alias: 'link_alias',
  link_id: 'link_id',
  mailbox_provider: 'mailbox_provider',
  send_id: 'send_id',
  suspected_bot_click_reason: ['suspected_bot_click_reason'],
  url: 'url',
  user_agent: 'Mozilla/5.0',
};
