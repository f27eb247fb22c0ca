import { afterEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_BODY_LIMITS,
  MAX_EPOCH_SECONDS,
  checkDepthAndStrings,
  currentsContentKind,
  eventSources,
  parseCurrentsBody,
  parseJsonText,
  safeJsonParse,
  validateCurrentsEvent,
  type BodyLimits,
} from '../../src/currents-ingest/currents-body.js';

const LIMITS: BodyLimits = { maxDepth: 8, maxStringLength: 100, maxEventsPerBatch: 3 };

// From Appboy/currents-examples `sample-data/Custom HTTP/users/behaviors/CustomEvent.json`.
const SAMPLE_EVENT = {
  event_type: 'users.behaviors.CustomEvent',
  id: 'f47ac10b-58cc-4372-a567-0e02b2c3d479',
  properties: {
    ad_id: 'f47ac10b-58cc-4372-a567-0e02b2c3d479',
    ad_id_type: 'ios_idfa',
    ad_tracking_enabled: true,
    app_group_id: 'f47ac10b-58cc-4372-a567-0e02b2c3d479',
    app_id: 'f47ac10b-58cc-4372-a567-0e02b2c3d479',
    custom_properties: { listProperty: ['a'], numberProperty: 1, stringProperty: 'properties' },
    device_model: 'device_model',
    name: 'name',
    os_version: '17.6.1',
    platform: 'android',
  },
  time: 2033802504,
  user: { device_id: 'device_id', external_user_id: 'external_user_id', timezone: 'America/New_York', user_id: '639a35d192b0df004d06514c' },
};

function without(obj: Record<string, unknown>, key: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => k !== key));
}
function nestedArrays(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}
function nestedObjects(depth: number): unknown {
  let v: unknown = 'leaf';
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

afterEach(() => {
  // A failed prototype-pollution defence would show up here, in every later test.
  expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
});

describe('DEFAULT_BODY_LIMITS', () => {
  it('has the documented values', () => {
    expect(DEFAULT_BODY_LIMITS).toEqual({ maxDepth: 64, maxStringLength: 65_536, maxEventsPerBatch: 1_000 });
    expect(Object.isFrozen(DEFAULT_BODY_LIMITS)).toBe(true);
  });
});

describe('safeJsonParse', () => {
  it('parses a Buffer or a string', () => {
    expect(safeJsonParse(Buffer.from('{"events":[]}'))).toEqual({ ok: true, value: { events: [] } });
    expect(safeJsonParse('{"events":[1]}')).toEqual({ ok: true, value: { events: [1] } });
    expect(safeJsonParse(new Uint8Array(Buffer.from('[]')))).toEqual({ ok: true, value: [] });
  });

  it('treats an empty or blank body as no value (an empty batch)', () => {
    expect(safeJsonParse(Buffer.alloc(0))).toEqual({ ok: true, value: undefined });
    expect(safeJsonParse(' \r\n\t')).toEqual({ ok: true, value: undefined });
  });

  it('tolerates a UTF-8 byte-order mark and keeps multi-byte text', () => {
    const r = safeJsonParse(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"name":"café 😀"}')]));
    expect(r).toEqual({ ok: true, value: { name: 'café 😀' } });
  });

  it.each([
    ['lone continuation byte', [0x7b, 0x22, 0x80, 0x22, 0x7d]],
    ['invalid lead byte 0xFF', [0x5b, 0xff, 0x5d]],
    ['overlong encoding of "/"', [0x22, 0xc0, 0xaf, 0x22]],
    ['UTF-16 surrogate encoded in UTF-8', [0x22, 0xed, 0xa0, 0x80, 0x22]],
    ['code point above U+10FFFF', [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]],
    ['truncated multi-byte sequence at the end', [0x22, 0x61, 0xe2, 0x82]],
    ['Latin-1 "é"', [0x22, 0xe9, 0x22]],
  ])('refuses invalid UTF-8: %s', (_name, bytes) => {
    expect(safeJsonParse(Buffer.from(bytes))).toMatchObject({ ok: false, status: 400, reason: 'invalid_utf8' });
  });

  it.each([
    ['truncated', '{"events":['],
    ['trailing comma', '{"events":[1,]}'],
    ['single quotes', "{'events':[]}"],
    ['garbage', 'Obj\u0001 not json at all'],
    ['two documents', '{} {}'],
    ['NaN literal', '{"time": NaN}'],
  ])('refuses invalid JSON: %s', (_name, text) => {
    expect(safeJsonParse(text)).toMatchObject({ ok: false, status: 400, reason: 'invalid_json' });
  });

  it('refuses random binary garbage without throwing', () => {
    let seed = 42;
    for (let n = 0; n < 200; n++) {
      const bytes = Buffer.alloc(64);
      for (let i = 0; i < bytes.length; i++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        bytes[i] = seed & 0xff;
      }
      const r = safeJsonParse(bytes);
      expect(r.ok).toBe(false);
    }
  });

  it.each([
    ['top-level __proto__', '{"__proto__":{"polluted":true},"events":[]}'],
    ['__proto__ inside an event', '{"events":[{"id":"x","properties":{"custom_properties":{"__proto__":{"polluted":1}}}}]}'],
    ['__proto__ inside an array', '{"events":[[{"__proto__":{"polluted":1}}]]}'],
    ['constructor', '{"events":[{"constructor":{"prototype":{"polluted":1}}}]}'],
    ['prototype', '{"events":[{"properties":{"prototype":1}}]}'],
  ])('refuses forbidden keys: %s', (_name, text) => {
    const r = safeJsonParse(text);
    expect(r).toMatchObject({ ok: false, status: 400, reason: 'forbidden_key' });
  });

  it('allows forbidden words as values and as parts of keys', () => {
    const r = safeJsonParse('{"events":[{"name":"__proto__","my_constructor":"constructor","prototype_id":1}]}');
    expect(r.ok).toBe(true);
  });

  it('parses 10,000 and 200,000 levels of nesting without overflowing the stack', () => {
    for (const n of [10_000, 200_000]) {
      expect(safeJsonParse('['.repeat(n) + ']'.repeat(n)).ok).toBe(true);
      expect(safeJsonParse('{"a":'.repeat(n) + '1' + '}'.repeat(n)).ok).toBe(true);
    }
  });

  it('handles a huge string value', () => {
    const big = 'x'.repeat(5_000_000);
    const r = safeJsonParse(`{"events":[{"s":"${big}"}]}`);
    expect(r.ok).toBe(true);
  });
});

describe('parseCurrentsBody', () => {
  it.each([
    ['no body', undefined],
    ['object without events', {}],
    ['events null', { events: null }],
    ['events empty', { events: [] }],
  ])('treats %s as an empty batch', (_name, raw) => {
    expect(parseCurrentsBody(raw, LIMITS)).toEqual({ ok: true, events: [] });
  });

  it.each([
    ['null', null],
    ['an array of events', [SAMPLE_EVENT]],
    ['a string', 'events'],
    ['a number', 42],
    ['a boolean', true],
    ['events as an object', { events: { 0: SAMPLE_EVENT } }],
    ['events as a string', { events: '[]' }],
    ['events as a number', { events: 1 }],
  ])('refuses %s with 400', (_name, raw) => {
    const r = parseCurrentsBody(raw, LIMITS);
    expect(r).toMatchObject({ ok: false, status: 400 });
  });

  it('returns the raw events without inspecting them', () => {
    const events = [SAMPLE_EVENT, 'garbage', null];
    expect(parseCurrentsBody({ events, extra: 1 }, LIMITS)).toEqual({ ok: true, events });
  });

  it('answers 413 (Braze splits smaller) for more events than the limit', () => {
    expect(parseCurrentsBody({ events: [1, 2, 3] }, LIMITS).ok).toBe(true);
    expect(parseCurrentsBody({ events: [1, 2, 3, 4] }, LIMITS)).toMatchObject({ ok: false, status: 413 });
  });

  it('uses the defaults when no limits are given', () => {
    expect(parseCurrentsBody({ events: new Array(1000).fill(0) }).ok).toBe(true);
    expect(parseCurrentsBody({ events: new Array(1001).fill(0) })).toMatchObject({ ok: false, status: 413 });
  });
});

describe('checkDepthAndStrings', () => {
  it('accepts plain JSON within the limits', () => {
    expect(checkDepthAndStrings(SAMPLE_EVENT, LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings('scalar', LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings(null, LIMITS)).toEqual({ ok: true });
  });

  it('counts the outermost container as depth 1', () => {
    expect(checkDepthAndStrings(nestedArrays(8), LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings(nestedArrays(9), LIMITS)).toMatchObject({ ok: false, reason: 'too_deep' });
    expect(checkDepthAndStrings(nestedObjects(8), LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings(nestedObjects(9), LIMITS)).toMatchObject({ ok: false, reason: 'too_deep' });
  });

  it('refuses 10,000 (and 1,000,000) levels of nesting without recursion', () => {
    for (const n of [10_000, 1_000_000]) {
      expect(checkDepthAndStrings(nestedArrays(n), DEFAULT_BODY_LIMITS)).toMatchObject({ ok: false, reason: 'too_deep' });
      expect(checkDepthAndStrings(nestedObjects(n), DEFAULT_BODY_LIMITS)).toMatchObject({ ok: false, reason: 'too_deep' });
    }
    // The walk itself must not depend on the limit to stay iterative.
    const r = checkDepthAndStrings(nestedArrays(100_000), { maxDepth: 1_000_000, maxStringLength: 10 });
    expect(r).toEqual({ ok: true });
  });

  it('refuses long strings and long keys', () => {
    expect(checkDepthAndStrings({ a: 'x'.repeat(100) }, LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings({ a: 'x'.repeat(101) }, LIMITS)).toMatchObject({ ok: false, reason: 'string_too_long' });
    expect(checkDepthAndStrings({ ['k'.repeat(101)]: 1 }, LIMITS)).toMatchObject({ ok: false, reason: 'string_too_long' });
    expect(checkDepthAndStrings(['x'.repeat(10_000_000)], DEFAULT_BODY_LIMITS)).toMatchObject({ ok: false, reason: 'string_too_long' });
  });

  it('refuses forbidden keys even when they did not come through safeJsonParse', () => {
    const viaParse: unknown = JSON.parse('{"a":{"__proto__":{"polluted":1}}}');
    expect(checkDepthAndStrings(viaParse, LIMITS)).toMatchObject({ ok: false, reason: 'forbidden_key' });
    expect(checkDepthAndStrings({ constructor: 1 }, LIMITS)).toMatchObject({ ok: false, reason: 'forbidden_key' });
  });

  it.each([
    ['a function', { f: () => 1 }],
    ['undefined', { u: undefined }],
    ['NaN', [Number.NaN]],
    ['Infinity', { n: Number.POSITIVE_INFINITY }],
    ['a Buffer', { b: Buffer.from('x') }],
    ['a Date', { d: new Date(0) }],
    ['a Map', { m: new Map() }],
    ['a bigint', { n: 1n }],
    ['a symbol', { s: Symbol('s') }],
  ])('refuses non-JSON values: %s', (_name, value) => {
    expect(checkDepthAndStrings(value, LIMITS)).toMatchObject({ ok: false, reason: 'not_json' });
  });

  it('accepts null-prototype objects', () => {
    const o = Object.create(null) as Record<string, unknown>;
    o['a'] = 1;
    expect(checkDepthAndStrings(o, LIMITS)).toEqual({ ok: true });
  });

  it('names the path of the violation, and a walk stopped midway leaves the next one unaffected', () => {
    // The walk that passes shares one stack between calls; a refusal deep in a wide value must
    // leave nothing behind for the next value.
    const wide = { a: [1, 2, { b: { c: 'x'.repeat(101) } }], d: Array.from({ length: 50 }, (_, i) => ({ i })) };
    expect(checkDepthAndStrings(wide, LIMITS)).toEqual({
      ok: false,
      reason: 'string_too_long',
      message: '$.a[2].b.c is 101 characters long, over the limit of 100',
    });
    expect(checkDepthAndStrings({ ok: [true, null, 'y'] }, LIMITS)).toEqual({ ok: true });
    expect(checkDepthAndStrings({ a: { b: [Number.NaN] } }, LIMITS)).toEqual({ ok: false, reason: 'not_json', message: '$.a.b[0] is not a finite number' });
    expect(checkDepthAndStrings(SAMPLE_EVENT, LIMITS)).toEqual({ ok: true });
  });
});

describe('validateCurrentsEvent', () => {
  it('accepts the Custom HTTP sample and normalises it', () => {
    const r = validateCurrentsEvent(SAMPLE_EVENT);
    expect(r).toEqual({ ok: true, event: SAMPLE_EVENT });
  });

  it('drops null user fields and unknown top-level fields, defaults properties', () => {
    const r = validateCurrentsEvent({
      id: 'e1',
      event_type: 'users.messages.email.Open',
      time: 1767225600,
      user: { user_id: null, external_user_id: 'cust-000482', device_id: null, extra: 5 },
      extra_top_level: { x: 1 },
    });
    expect(r).toEqual({
      ok: true,
      event: { id: 'e1', event_type: 'users.messages.email.Open', time: 1767225600, user: { external_user_id: 'cust-000482' }, properties: {} },
    });
  });

  it('accepts an event without user (the mapper reports no_identity) and with null properties', () => {
    const r = validateCurrentsEvent({ id: 'e1', event_type: 'users.UserDeleteRequest', time: 0, user: null, properties: null });
    expect(r).toEqual({ ok: true, event: { id: 'e1', event_type: 'users.UserDeleteRequest', time: 0, user: {}, properties: {} } });
  });

  const base = { id: 'e1', event_type: 'users.messages.email.Open', time: 1767225600, user: { external_user_id: 'cust-000482' }, properties: {} };
  it.each([
    ['null', null, 'not_object'],
    ['an array', [base], 'not_object'],
    ['a string', 'event', 'not_object'],
    ['a number', 7, 'not_object'],
    ['no id', without(base, 'id'), 'missing_id'],
    ['id explicitly undefined (not JSON)', { ...base, id: undefined }, 'not_json'],
    ['numeric id', { ...base, id: 12345 }, 'missing_id'],
    ['empty id', { ...base, id: '' }, 'missing_id'],
    ['no event_type', without(base, 'event_type'), 'missing_event_type'],
    ['null event_type', { ...base, event_type: null }, 'missing_event_type'],
    ['empty event_type', { ...base, event_type: '' }, 'missing_event_type'],
    ['time as a string', { ...base, time: '1767225600' }, 'invalid_time'],
    ['null time', { ...base, time: null }, 'invalid_time'],
    ['no time', without(base, 'time'), 'invalid_time'],
    ['negative time', { ...base, time: -1 }, 'invalid_time'],
    ['time in milliseconds', { ...base, time: 1767225600000 }, 'invalid_time'],
    ['user as a string', { ...base, user: 'cust-000482' }, 'invalid_user'],
    ['user as an array', { ...base, user: ['cust-000482'] }, 'invalid_user'],
    ['numeric external_user_id', { ...base, user: { external_user_id: 482 } }, 'invalid_user'],
    ['object device_id', { ...base, user: { device_id: { id: 'x' } } }, 'invalid_user'],
    ['properties as an array', { ...base, properties: [1] }, 'invalid_properties'],
    ['properties as a JSON string', { ...base, properties: '{}' }, 'invalid_properties'],
    ['deep custom properties', { ...base, properties: { custom_properties: nestedObjects(100) } }, 'too_deep'],
    ['10,000-deep properties', { ...base, properties: { custom_properties: nestedArrays(10_000) } }, 'too_deep'],
    ['huge string', { ...base, properties: { message_body: 'x'.repeat(70_000) } }, 'string_too_long'],
    ['forbidden key', JSON.parse('{"id":"e1","event_type":"t","time":1,"properties":{"__proto__":{"polluted":1}}}') as unknown, 'forbidden_key'],
    ['a Date inside', { ...base, properties: { when: new Date(0) } }, 'not_json'],
  ])('refuses %s', (_name, raw, reason) => {
    expect(validateCurrentsEvent(raw)).toMatchObject({ ok: false, reason });
  });

  it('accepts the largest epoch-seconds time and refuses one past it', () => {
    expect(validateCurrentsEvent({ ...base, time: MAX_EPOCH_SECONDS }).ok).toBe(true);
    expect(validateCurrentsEvent({ ...base, time: MAX_EPOCH_SECONDS + 1 }).ok).toBe(false);
  });

  it('applies the limits it is given', () => {
    expect(validateCurrentsEvent({ ...base, properties: { a: 'x'.repeat(101) } }, LIMITS)).toMatchObject({ ok: false, reason: 'string_too_long' });
  });
});

describe('the whole path: bytes → envelope → events', () => {
  it('accepts a Braze Custom HTTP batch and isolates a bad event', () => {
    const body = Buffer.from(JSON.stringify({ events: [SAMPLE_EVENT, { id: 'no-time', event_type: 'users.messages.email.Open' }] }));
    const parsed = safeJsonParse(body);
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const env = parseCurrentsBody(parsed.value, DEFAULT_BODY_LIMITS);
    expect(env.ok).toBe(true);
    if (!env.ok) return;
    const results = env.events.map((e) => validateCurrentsEvent(e, DEFAULT_BODY_LIMITS));
    expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'invalid_time']);
  });
});

describe('parseJsonText and per-event decisions (POST /currents)', () => {
  it('keeps __proto__ and constructor as own properties, never as the prototype', () => {
    const r = parseJsonText('{"events":[{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}]}');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const ev = (r.value as { events: Array<Record<string, unknown>> }).events[0]!;
    expect(Object.getPrototypeOf(ev)).toBe(Object.prototype);
    expect(Object.hasOwn(ev, '__proto__')).toBe(true);
    expect((ev as { polluted?: unknown }).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(validateCurrentsEvent(ev)).toMatchObject({ ok: false, reason: 'forbidden_key' });
  });

  it('refuses only what can never be stored: invalid UTF-8, not JSON', () => {
    expect(parseJsonText(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]))).toMatchObject({ ok: false, reason: 'invalid_utf8' });
    expect(parseJsonText('not json')).toMatchObject({ ok: false, reason: 'invalid_json' });
    expect(parseJsonText('')).toMatchObject({ ok: true, value: undefined });
    expect(parseJsonText(Buffer.from('\ufeff{"events":[]}'))).toMatchObject({ ok: true, value: { events: [] }, text: '{"events":[]}' });
  });

  it('decides each event of a batch on its own', () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    const text = `{"events":[${JSON.stringify(SAMPLE_EVENT)},{"id":"c","event_type":"t","time":1,"properties":{"constructor":1}},{"id":"s","event_type":"t","time":1,"properties":{"s":"${'x'.repeat(70 * 1024)}"}},${deep},{"id":"m","time":1}]}`;
    const r = parseJsonText(text);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const env = parseCurrentsBody(r.value, DEFAULT_BODY_LIMITS);
    if (!env.ok) throw new Error(env.message);
    expect(env.events.map((e) => validateCurrentsEvent(e, DEFAULT_BODY_LIMITS)).map((v) => (v.ok ? 'ok' : v.reason))).toEqual([
      'ok',
      'forbidden_key',
      'string_too_long',
      'not_object',
      'missing_event_type',
    ]);
  });
});

describe('eventSources', () => {
  it('gives each event\'s text exactly as sent, whatever its nesting or escapes', () => {
    const deep = '['.repeat(50_000) + ']'.repeat(50_000);
    const e1 = '{ "id" : "a,]}\\"\\\\" , "n": [1, {"x": "]"}] }';
    const text = ` { "other": {"events": [9]}, "ev\\u0065nts" : [ ${e1} ,${deep}, 12.5e3 ,"s" ,null, true ] , "tail": "}" } `;
    expect(JSON.parse(text)).toBeTruthy();
    const got = eventSources(text);
    expect(got).toEqual([e1, deep, '12.5e3', '"s"', 'null', 'true']);
    expect(got!.map((s) => (s.length > 1000 ? 'deep' : JSON.parse(s) as unknown))).toEqual([JSON.parse(e1), 'deep', 12500, 's', null, true]);
  });

  it('takes the last "events" key, as JSON.parse does, and answers undefined without one', () => {
    expect(eventSources('{"events":[1],"events":[2,3]}')).toEqual(['2', '3']);
    expect(eventSources('{"events":[]}')).toEqual([]);
    expect(eventSources('{"x":1}')).toBeUndefined();
    expect(eventSources('[1]')).toBeUndefined();
  });
});

describe('currentsContentKind', () => {
  it.each([
    [undefined, 'json'],
    ['', 'json'],
    ['application/json', 'json'],
    ['Application/JSON; charset=UTF-8', 'json'],
    ['application/json;charset="utf-8"', 'json'],
    ['application/vnd.braze.currents+json', 'json'],
    ['avro/binary', 'avro'],
    ['AVRO/BINARY; codec=deflate', 'avro'],
  ])('accepts %j as %s', (header, kind) => {
    expect(currentsContentKind(header)).toEqual({ ok: true, kind });
  });

  it.each(['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/octet-stream', 'avro/binaryx'])(
    'refuses %j',
    (header) => {
      const r = currentsContentKind(header);
      expect(r.ok).toBe(false);
    },
  );
});
