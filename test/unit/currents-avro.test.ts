import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import avsc from 'avsc';
import { describe, expect, it } from 'vitest';
import {
  currentsEventToAvroRecord,
  decodeAvroContainer,
  encodeAvroContainer,
  eventTypeFromSchemaName,
  findProjectRoot,
  loadCurrentsSchemas,
  recordToCurrentsShape,
} from '../../src/currents-ingest/currents-avro.js';
import { validateCurrentsEvent } from '../../src/currents-ingest/currents-body.js';
import { mapCurrentsEvent } from '../../src/braze-to-amplitude/currents-to-amplitude.js';
import type { CurrentsEvent } from '../../src/currents-ingest/currents-types.js';
import { BRAZE_ID, CAMPAIGN, CANVAS, customEventProps, emailClickProps, purchaseProps, TIME, UUID } from '../support/currents-samples.js';


/**
 * One event per shipped schema, in the Custom HTTP connector shape, using the values of
 * Appboy/currents-examples `sample-data/Custom HTTP/**`, restricted to the fields each Avro schema
 * has (the HTTP samples fill `device_id` even where the storage schema has no such field).
 */
const SAMPLES: Record<string, { event: CurrentsEvent; amplitudeName: string }> = {
  'users.behaviors.CustomEvent': {
    amplitudeName: '[Appboy] [Custom Event] name',
    event: {
      id: UUID,
      event_type: 'users.behaviors.CustomEvent',
      time: TIME,
      user: { device_id: 'device_id', external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: customEventProps,
    },
  },
  'users.behaviors.Purchase': {
    amplitudeName: '[Appboy] Purchase',
    event: {
      id: UUID,
      event_type: 'users.behaviors.Purchase',
      time: TIME,
      user: { device_id: 'device_id', external_user_id: 'external_user_id', user_id: BRAZE_ID },
      properties: purchaseProps,
    },
  },
  'users.behaviors.app.SessionStart': {
    amplitudeName: '[Appboy] Session Start',
    event: {
      id: 'a1234567-89ab-cdef-0123-456789abcdef',
      event_type: 'users.behaviors.app.SessionStart',
      time: 1477502783,
      user: { user_id: '0123456789abcdef01234567', external_user_id: 'user_id', device_id: 'fedcba87-6543-210f-fedc-ba9876543210' },
      properties: {
        app_id: '01234567-89ab-cdef-0123-456789abcdef',
        platform: 'ios',
        os_version: 'iOS 10.3.1',
        device_model: 'iPhone 7 Plus',
        session_id: 'b1234567-89ab-cdef-0123-456789abcdef',
      },
    },
  },
  'users.messages.email.Send': {
    amplitudeName: '[Appboy] Email Send',
    event: {
      id: UUID,
      event_type: 'users.messages.email.Send',
      time: TIME,
      user: { external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: {
        app_group_id: UUID,
        ...CAMPAIGN,
        ...CANVAS,
        dispatch_id: BRAZE_ID,
        email_address: 'example@braze.com',
        from_domain: 'braze.com',
        ip_pool: 'ip_pool',
        message_extras: '{"offer":"spring"}',
        send_id: 'send_id',
      },
    },
  },
  'users.messages.email.Click': {
    amplitudeName: '[Appboy] Email Click',
    event: {
      id: UUID,
      event_type: 'users.messages.email.Click',
      time: TIME,
      user: { external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: emailClickProps,
    },
  },
  'users.messages.pushnotification.Open': {
    amplitudeName: '[Appboy] Push Notification Open',
    event: {
      id: UUID,
      event_type: 'users.messages.pushnotification.Open',
      time: TIME,
      user: { device_id: 'device_id', external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: {
        app_id: UUID,
        ...CAMPAIGN,
        ...CANVAS,
        canvas_step_message_variation_id: UUID,
        platform: 'ios',
        os_version: '17.6.1',
        device_model: 'device_model',
        send_id: 'send_id',
        dispatch_id: BRAZE_ID,
        button_action_type: 'deep_link',
        button_string: 'button_string',
        ad_id: UUID,
        ad_id_type: 'ios_idfa',
        ad_tracking_enabled: true,
        app_group_id: UUID,
      },
    },
  },
  'users.campaigns.Conversion': {
    amplitudeName: '[Appboy] Campaign Conversion',
    event: {
      id: UUID,
      event_type: 'users.campaigns.Conversion',
      time: TIME,
      user: { external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: {
        app_id: UUID,
        ...CAMPAIGN,
        send_id: 'send_id',
        conversion_behavior_index: 0,
        conversion_behavior: '{"type":"open_app"}',
        app_group_id: UUID,
      },
    },
  },
  'users.canvas.Entry': {
    amplitudeName: '[Appboy] Canvas Entry',
    event: {
      id: UUID,
      event_type: 'users.canvas.Entry',
      time: TIME,
      user: { external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: BRAZE_ID },
      properties: { app_group_id: UUID, ...CANVAS, in_control_group: true },
    },
  },
};

describe('loadCurrentsSchemas', () => {
  it('loads the eight representative schemas of braze-currents.md §4, keyed by event type', () => {
    const schemas = loadCurrentsSchemas();
    expect(Object.keys(schemas).sort()).toEqual(Object.keys(SAMPLES).sort());
    const fieldCounts: Record<string, number> = {
      'users.behaviors.CustomEvent': 16,
      'users.behaviors.Purchase': 17,
      'users.behaviors.app.SessionStart': 11,
      'users.messages.email.Send': 22,
      'users.messages.email.Click': 34,
      'users.messages.pushnotification.Open': 29,
      'users.campaigns.Conversion': 14,
      'users.canvas.Entry': 13,
    };
    for (const [eventType, type] of Object.entries(schemas)) {
      expect(type.name).toBe(`dataexport.S3.inner.${eventType}`);
      expect(type instanceof avsc.types.RecordType && type.fields.length).toBe(fieldCounts[eventType]);
    }
    expect(loadCurrentsSchemas()).toBe(schemas);
  });

  it('declares optional fields as ["null", T] with default null', () => {
    const file = join(findProjectRoot(), 'schemas', 'currents', 'users.messages.email.Click.avsc');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({
      type: 'record',
      name: 'Click',
      namespace: 'dataexport.S3.inner.users.messages.email',
      fields: expect.arrayContaining([
        { name: 'email_address', type: 'string' },
        { name: 'external_user_id', type: ['null', 'string'], default: null },
        { name: 'suspected_bot_click_reason', type: ['null', { type: 'array', items: 'string' }], default: null },
      ]),
    });
  });
});

describe('findProjectRoot', () => {
  it('walks up to the package named amplitude-braze-gateway', () => {
    const root = findProjectRoot();
    expect(findProjectRoot(join(root, 'src', 'inbound', 'currents-avro.ts'))).toBe(root);
    expect(findProjectRoot(new URL(`file://${join(root, 'dist', 'src', 'inbound', 'x.js')}`).href)).toBe(root);
  });

  it('skips other packages on the way up and fails when there is none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-root-'));
    mkdirSync(join(dir, 'a', 'b'), { recursive: true });
    writeFileSync(join(dir, 'a', 'package.json'), JSON.stringify({ name: 'something-else' }));
    expect(() => findProjectRoot(join(dir, 'a', 'b', 'file.js'))).toThrow(/amplitude-braze-gateway/);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'amplitude-braze-gateway' }));
    expect(findProjectRoot(join(dir, 'a', 'b', 'file.js'))).toBe(dir);
  });
});

describe('eventTypeFromSchemaName', () => {
  it.each([
    ['dataexport.S3.inner.users.behaviors.CustomEvent', 'users.behaviors.CustomEvent'],
    ['dataexport.GCS.inner.users.messages.email.Send', 'users.messages.email.Send'],
    ['dataexport.AzureBlob.inner.agentconsole.AgentExecuted', 'agentconsole.AgentExecuted'],
    ['users.canvas.Entry', 'users.canvas.Entry'],
  ])('%s → %s', (name, want) => {
    expect(eventTypeFromSchemaName(name)).toBe(want);
  });
});

describe('encode → decode → validate → map, every schema, both codecs', () => {
  const rows = Object.entries(SAMPLES).flatMap(([eventType, s]) =>
    (['null', 'deflate'] as const).map((codec) => ({ eventType, codec, ...s })),
  );

  it.each(rows)('$eventType ($codec)', async ({ eventType, codec, event, amplitudeName }) => {
    const type = loadCurrentsSchemas()[eventType];
    expect(type).toBeDefined();
    if (type === undefined) return;
    const second: CurrentsEvent = { ...event, id: `${event.id}-2`, time: event.time + 1 };
    const buf = await encodeAvroContainer(type, [currentsEventToAvroRecord(event), currentsEventToAvroRecord(second)], { codec });
    expect(buf.subarray(0, 4)).toEqual(Buffer.from('Obj\x01', 'latin1'));

    const decoded = await decodeAvroContainer(buf);
    expect(decoded.schemaName).toBe(`dataexport.S3.inner.${eventType}`);
    expect(decoded.eventType).toBe(eventType);
    expect(decoded.codec).toBe(codec);
    // Same shape as the HTTP connector posts, value for value (float price included).
    expect(decoded.events).toEqual([event, second]);

    for (const raw of decoded.events) {
      const v = validateCurrentsEvent(raw);
      expect(v.ok).toBe(true);
      if (!v.ok) continue;
      const m = mapCurrentsEvent(v.event);
      expect(m.ok).toBe(true);
      if (!m.ok) continue;
      expect(m.event.event_type).toBe(amplitudeName);
      expect(m.event.insert_id).toBe(v.event.id);
      expect(m.event.time).toBe(v.event.time * 1000);
      expect(m.event.user_id).toBe('external_user_id' in event.user ? event.user.external_user_id : undefined);
    }
  });
});

describe('decoding details', () => {
  it('turns null optional fields into absent keys', async () => {
    const type = loadCurrentsSchemas()['users.canvas.Entry']!;
    const buf = await encodeAvroContainer(type, [
      { id: 'e1', user_id: BRAZE_ID, time: TIME, canvas_id: UUID, canvas_variation_id: UUID, in_control_group: false, external_user_id: null },
    ]);
    const { events } = await decodeAvroContainer(buf);
    expect(events).toEqual([
      {
        id: 'e1',
        event_type: 'users.canvas.Entry',
        time: TIME,
        user: { user_id: BRAZE_ID },
        properties: { canvas_id: UUID, canvas_variation_id: UUID, in_control_group: false },
      },
    ]);
  });

  it('rounds 32-bit float prices back to their decimal', async () => {
    const type = loadCurrentsSchemas()['users.behaviors.Purchase']!;
    const prices = [3.14, 19.99, 0.1, 1234.56, 5];
    const records = prices.map((price, i) => ({ id: `p${i}`, user_id: BRAZE_ID, external_user_id: 'cust-000482', time: TIME, product_id: 'sku', price, currency: 'EUR', properties: '{}' }));
    const { events } = await decodeAvroContainer(await encodeAvroContainer(type, records));
    expect(events.map((e) => (e['properties'] as Record<string, unknown>)['price'])).toEqual(prices);
    // and an empty JSON object string becomes an empty purchase_properties object
    expect((events[0]!['properties'] as Record<string, unknown>)['purchase_properties']).toEqual({});
  });

  it('keeps a properties string that is not a JSON object rather than losing it', async () => {
    const type = loadCurrentsSchemas()['users.behaviors.CustomEvent']!;
    const base = { user_id: BRAZE_ID, external_user_id: 'cust-000482', time: TIME, name: 'n' };
    const buf = await encodeAvroContainer(type, [
      { ...base, id: 'a', properties: '{"broken":' },
      { ...base, id: 'b', properties: '[1,2]' },
      { ...base, id: 'c', properties: '{"__proto__":{"polluted":1}}' },
      { ...base, id: 'd', properties: '' },
    ]);
    const { events } = await decodeAvroContainer(buf);
    const props = events.map((e) => e['properties'] as Record<string, unknown>);
    expect(props[0]).toEqual({ name: 'n', properties: '{"broken":' });
    expect(props[1]).toEqual({ name: 'n', properties: '[1,2]' });
    expect(props[2]).toEqual({ name: 'n', properties: '{"__proto__":{"polluted":1}}' });
    expect(props[3]).toEqual({ name: 'n' });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('decodes multi-block files in order', async () => {
    const type = loadCurrentsSchemas()['users.behaviors.app.SessionStart']!;
    const records = Array.from({ length: 500 }, (_, i) => ({ id: `s${i}`, user_id: BRAZE_ID, app_id: UUID, time: TIME + i, session_id: `sess-${i}`, device_id: `device-${i}` }));
    for (const codec of ['null', 'deflate'] as const) {
      const buf = await encodeAvroContainer(type, records, { codec, blockSize: 512 });
      const { events } = await decodeAvroContainer(buf);
      expect(events.map((e) => e['id'])).toEqual(records.map((r) => r.id));
    }
  });

  it('converts other Avro types to plain JSON (maps, wrapped unions, bytes, enums, nested records, floats)', async () => {
    const schema = {
      type: 'record',
      name: 'Thing',
      namespace: 'dataexport.S3.inner.users.messages.survey',
      fields: [
        { name: 'id', type: 'string' },
        { name: 'time', type: 'long' },
        { name: 'external_user_id', type: ['null', 'string'], default: null },
        { name: 'tags', type: { type: 'map', values: ['null', 'float'] } },
        { name: 'either', type: ['null', 'int', 'long'], default: null },
        { name: 'blob', type: 'bytes' },
        { name: 'kind', type: { type: 'enum', name: 'Kind', symbols: ['A', 'B'] } },
        { name: 'nested', type: ['null', { type: 'record', name: 'Inner', fields: [{ name: 'x', type: ['null', 'string'], default: null }, { name: 'f', type: 'float' }] }], default: null },
        { name: 'list', type: { type: 'array', items: ['null', 'string'] } },
      ],
    } as const;
    const type = avsc.Type.forSchema(schema as unknown as Parameters<typeof avsc.Type.forSchema>[0], { wrapUnions: 'auto' });
    const record = {
      id: 'x1',
      time: 1767225600,
      external_user_id: 'cust-000482',
      tags: { a: 1.1, b: null },
      either: { long: 7 },
      blob: Buffer.from('hi'),
      kind: 'B',
      nested: { x: null, f: 2.2 },
      list: ['a', null],
    };
    const { events, eventType } = await decodeAvroContainer(await encodeAvroContainer(type, [record]));
    expect(eventType).toBe('users.messages.survey.Thing');
    expect(events[0]).toEqual({
      id: 'x1',
      event_type: 'users.messages.survey.Thing',
      time: 1767225600,
      user: { external_user_id: 'cust-000482' },
      properties: { tags: { a: 1.1 }, either: 7, blob: Buffer.from('hi').toString('base64'), kind: 'B', nested: { f: 2.2 }, list: ['a', null] },
    });
  });

  it('splits flat records into the HTTP shape', () => {
    expect(recordToCurrentsShape('users.messages.email.Open', { id: 'e', time: 1, user_id: 'b', external_user_id: 'x', device_id: 'd', timezone: 'UTC', email_address: 'a@b.c' })).toEqual({
      id: 'e',
      event_type: 'users.messages.email.Open',
      time: 1,
      user: { user_id: 'b', external_user_id: 'x', device_id: 'd', timezone: 'UTC' },
      properties: { email_address: 'a@b.c' },
    });
  });
});

describe('decoding failures (rejects, never hangs)', () => {
  async function validFile(codec: 'null' | 'deflate' = 'null'): Promise<Buffer> {
    const s = SAMPLES['users.behaviors.CustomEvent']!;
    const type = loadCurrentsSchemas()['users.behaviors.CustomEvent']!;
    const records = Array.from({ length: 20 }, (_, i) => currentsEventToAvroRecord({ ...s.event, id: `e${i}` }));
    return encodeAvroContainer(type, records, { codec, blockSize: 256 });
  }

  it('rejects an empty buffer', async () => {
    await expect(decodeAvroContainer(Buffer.alloc(0))).rejects.toThrow();
  });

  it('rejects bytes that are not an Avro container', async () => {
    await expect(decodeAvroContainer(Buffer.from('{"events":[]}'))).rejects.toThrow(/magic/);
    await expect(decodeAvroContainer(Buffer.from([0x4f, 0x62, 0x6a]))).rejects.toThrow();
  });

  it.each(['null', 'deflate'] as const)('rejects truncated files (%s codec)', async (codec) => {
    const buf = await validFile(codec);
    for (const cut of [5, 40, Math.floor(buf.length / 2), buf.length - 3]) {
      await expect(decodeAvroContainer(buf.subarray(0, cut))).rejects.toThrow();
    }
  });

  it('never reports a cut-off file as complete, whatever the cut', async () => {
    const buf = await validFile('deflate');
    let resolved = 0;
    // Every fifth cut: each decode compiles the writer schema, and this keeps the test quick.
    for (let cut = 0; cut < buf.length; cut += 5) {
      try {
        const { events } = await decodeAvroContainer(buf.subarray(0, cut));
        // The container format has no trailer: a cut exactly after a block's sync marker is a
        // valid, shorter file. Anything else must be refused.
        expect(events.length).toBeLessThan(20);
        resolved++;
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
      }
    }
    expect(resolved).toBeLessThan(25);
  });

  it('survives random byte corruption without hanging or crashing', async () => {
    const good = await validFile('null');
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let n = 0; n < 300; n++) {
      const buf = Buffer.from(good);
      for (let k = 0; k < 3; k++) buf[rand(buf.length)] = rand(256);
      const outcome = await decodeAvroContainer(buf).then(
        (r) => r.events.length,
        (err: unknown) => (err instanceof Error ? -1 : -2),
      );
      expect(outcome).not.toBe(-2);
    }
  });

  it('rejects a corrupted sync marker or block', async () => {
    const buf = Buffer.from(await validFile('deflate'));
    buf[buf.length - 1] = buf[buf.length - 1]! ^ 0xff;
    await expect(decodeAvroContainer(buf)).rejects.toThrow();
  });

  it('rejects an unknown codec', async () => {
    const type = loadCurrentsSchemas()['users.canvas.Entry']!;
    const buf = await new Promise<Buffer>((resolve, reject) => {
      const enc = new avsc.streams.BlockEncoder(type, { codec: 'snappy', codecs: { snappy: (b: Buffer, cb: (e: Error | null, out?: Buffer) => void) => cb(null, b) } });
      const chunks: Buffer[] = [];
      enc.on('data', (c: Buffer) => chunks.push(c));
      enc.on('end', () => resolve(Buffer.concat(chunks)));
      enc.on('error', reject);
      enc.end({ id: 'e', user_id: BRAZE_ID, time: TIME, canvas_id: UUID, canvas_variation_id: UUID, in_control_group: true });
    });
    await expect(decodeAvroContainer(buf)).rejects.toThrow(/codec/);
  });

  it('rejects a writer schema that is not a record', async () => {
    const buf = await encodeAvroContainer(avsc.Type.forSchema('string'), [] as Record<string, unknown>[]);
    await expect(decodeAvroContainer(buf)).rejects.toThrow(/record/);
  });

  it.each(['__proto__', 'constructor', 'prototype'])('rejects a writer schema with a field named %s', async (name) => {
    const type = avsc.Type.forSchema({ type: 'record', name: 'R', namespace: 'dataexport.S3.inner.users', fields: [{ name: 'id', type: 'string' }, { name, type: 'string' }] });
    const rec: Record<string, unknown> = { id: 'e' };
    Object.defineProperty(rec, name, { value: 'v', enumerable: true });
    const buf = await new Promise<Buffer>((resolve, reject) => {
      const enc = new avsc.streams.BlockEncoder(type);
      const chunks: Buffer[] = [];
      enc.on('data', (c: Buffer) => chunks.push(c));
      enc.on('end', () => resolve(Buffer.concat(chunks)));
      enc.on('error', reject);
      enc.end(rec);
    });
    await expect(decodeAvroContainer(buf)).rejects.toThrow(/forbidden/);
    expect(({} as Record<string, unknown>)['v']).toBeUndefined();
  });

  it('rejects a nested record with a forbidden field name', async () => {
    const type = avsc.Type.forSchema({
      type: 'record',
      name: 'Outer',
      namespace: 'dataexport.S3.inner.users',
      fields: [{ name: 'id', type: 'string' }, { name: 'inner', type: { type: 'record', name: 'Inner', fields: [{ name: 'constructor', type: 'string' }] } }],
    });
    const inner: Record<string, unknown> = {};
    Object.defineProperty(inner, 'constructor', { value: 'v', enumerable: true });
    const buf = await new Promise<Buffer>((resolve, reject) => {
      const enc = new avsc.streams.BlockEncoder(type);
      const chunks: Buffer[] = [];
      enc.on('data', (c: Buffer) => chunks.push(c));
      enc.on('end', () => resolve(Buffer.concat(chunks)));
      enc.on('error', reject);
      enc.end({ id: 'e', inner });
    });
    await expect(decodeAvroContainer(buf)).rejects.toThrow(/forbidden/);
  });

  it('decodes a file with a header and no blocks as no events', async () => {
    const type = loadCurrentsSchemas()['users.canvas.Entry']!;
    const buf = await encodeAvroContainer(type, []);
    expect(await decodeAvroContainer(buf)).toEqual({ schemaName: 'dataexport.S3.inner.users.canvas.Entry', eventType: 'users.canvas.Entry', codec: 'null', events: [] });
  });

  it('rejects a file with more records than allowed', async () => {
    const buf = await validFile();
    await expect(decodeAvroContainer(buf, { maxRecords: 5 })).rejects.toThrow(/more than 5 records/);
    expect((await decodeAvroContainer(buf, { maxRecords: 20 })).events).toHaveLength(20);
  });

  it('rejects a deflate block that inflates past the limit (decompression bomb)', async () => {
    const type = loadCurrentsSchemas()['users.behaviors.CustomEvent']!;
    const s = SAMPLES['users.behaviors.CustomEvent']!;
    const huge = { ...currentsEventToAvroRecord(s.event), properties: JSON.stringify({ pad: 'x'.repeat(4_000_000) }) };
    const buf = await encodeAvroContainer(type, [huge], { codec: 'deflate' });
    expect(buf.length).toBeLessThan(50_000);
    await expect(decodeAvroContainer(buf, { maxBlockBytes: 1024 * 1024 })).rejects.toThrow();
    expect((await decodeAvroContainer(buf)).events).toHaveLength(1);
  });

  it('rejects values nested deeper than allowed by a recursive schema', async () => {
    const type = avsc.Type.forSchema({
      type: 'record',
      name: 'Node',
      namespace: 'dataexport.S3.inner.users',
      fields: [{ name: 'id', type: 'string' }, { name: 'next', type: ['null', 'dataexport.S3.inner.users.Node'], default: null }],
    });
    let v: Record<string, unknown> = { id: 'leaf', next: null };
    for (let i = 0; i < 100; i++) v = { id: `n${i}`, next: v };
    const buf = await encodeAvroContainer(type, [v]);
    await expect(decodeAvroContainer(buf, { maxDepth: 50 })).rejects.toThrow(/deeper/);
  });

  it('encodeAvroContainer rejects a record that does not match the schema', async () => {
    const type = loadCurrentsSchemas()['users.canvas.Entry']!;
    await expect(encodeAvroContainer(type, [{ id: 'e', time: 'yesterday' }])).rejects.toThrow(/does not match/);
  });
});

describe('schemas/amplitude-event.avsc', () => {
  it('holds a mapped Currents event once its objects are serialised', () => {
    const file = join(findProjectRoot(), 'schemas', 'amplitude-event.avsc');
    const type = avsc.Type.forSchema(JSON.parse(readFileSync(file, 'utf8')) as Parameters<typeof avsc.Type.forSchema>[0]);
    const mapped = mapCurrentsEvent(SAMPLES['users.behaviors.Purchase']!.event);
    expect(mapped.ok).toBe(true);
    if (!mapped.ok) return;
    const record: Record<string, unknown> = { ...mapped.event, event_properties: JSON.stringify(mapped.event.event_properties) };
    expect(type.isValid(record)).toBe(true);
    const back: unknown = type.fromBuffer(type.toBuffer(record));
    expect(back).toMatchObject({ event_type: '[Appboy] Purchase', productId: 'product_id', price: 3.14, library: 'Braze', insert_id: UUID, time: TIME * 1000 });
    expect(JSON.parse((back as { event_properties: string }).event_properties)).toEqual(mapped.event.event_properties);
  });
});
