import { describe, expect, it } from 'vitest';
import { CsvRowParser, cohortColumns } from '../../src/cohorts/csv.js';
import { MemberSet, MemberSetBuilder, applyChange, decodeMembersInto, diffMembers, encodeMembers, keysAt } from '../../src/cohorts/member-set.js';
import { DEFAULT_COHORT_IDENTIFIERS, describeKey, keyToIdentifier, resolveMember, type CohortIdRule } from '../../src/cohorts/cohort-identifiers.js';
import { classifyPartnerResponse, partnerChange, trackMembershipTransport, writeAll, WriteFailure, type Transport } from '../../src/cohorts/braze-membership.js';
import type { Answer, DeliveryOutcome } from '../../src/delivery/outcome.js';
import { loadConfig, ConfigError } from '../../src/config/config.js';
import { parseCohortSyncs } from '../../src/cohorts/cohort-config.js';
import { parseCohortWebhook } from '../../src/cohorts/webhook-body.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function parseAll(text: string, chunk: number): string[][] {
  const rows: string[][] = [];
  const p = new CsvRowParser((r) => rows.push(r));
  for (let i = 0; i < text.length; i += chunk) p.write(text.slice(i, i + chunk));
  p.end();
  return rows;
}

describe('CsvRowParser (Amplitude quoted CSV)', () => {
  const text = '"amplitude_id","user_id","plan"\r\n"512340987654","u-10293","pro"\n"512340987699","",""\n"3","a ""quoted"", value","line\nbreak"\n4,plain,x';
  const expected = [
    ['amplitude_id', 'user_id', 'plan'],
    ['512340987654', 'u-10293', 'pro'],
    ['512340987699', '', ''],
    ['3', 'a "quoted", value', 'line\nbreak'],
    ['4', 'plain', 'x'],
  ];

  it('parses quoted fields, escaped quotes, commas and newlines inside quotes, CRLF and LF', () => {
    expect(parseAll(text, 1_000)).toEqual(expected);
  });

  it('gives the same rows whatever the chunk boundaries', () => {
    for (const n of [1, 2, 3, 5, 7, 13]) expect(parseAll(text, n), `chunk ${n}`).toEqual(expected);
  });

  it('skips blank lines and refuses an unterminated quote', () => {
    expect(parseAll('"a"\n\n"b"\n', 4)).toEqual([['a'], ['b']]);
    const p = new CsvRowParser(() => undefined);
    p.write('"a","b');
    expect(() => p.end()).toThrow(/quoted field/);
  });

  it('finds the columns, properties by name (gp: prefix accepted)', () => {
    const c = cohortColumns(['amplitude_id', 'user_id', 'plan', 'gp:country']);
    expect(c).toMatchObject({ amplitudeId: 0, userId: 1, deviceId: -1 });
    expect(c.properties.get('plan')).toBe(2);
    expect(c.properties.get('country')).toBe(3);
    expect(() => cohortColumns(['user_id'])).toThrow(/amplitude_id/);
  });
});

describe('MemberSet', () => {
  const keys = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `e:user-${i + from}`);

  it('diffs two sets exactly: adds, removes, unchanged', () => {
    const prev = MemberSet.of(keys(300));
    const cur = MemberSet.of([...keys(280, 20), ...keys(30, 1000)]);
    const d = diffMembers(prev, cur);
    expect(d.unchanged).toBe(280);
    expect(keysAt(cur, d.adds).sort()).toEqual(keys(30, 1000).sort());
    expect(keysAt(prev, d.removes).sort()).toEqual(keys(20).sort());
  });

  it('drops duplicates and answers has()', () => {
    const s = MemberSet.of(['e:a', 'e:b', 'e:a', 'a:amplitude_device_id\u0000d1']);
    expect(s.size).toBe(3);
    expect(s.has('e:a')).toBe(true);
    expect(s.has('e:c')).toBe(false);
    expect(s.has('a:amplitude_device_id\u0000d1')).toBe(true);
  });

  it('matches a naive Set difference on random data, hash collisions included', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % 5000);
    const a = Array.from({ length: 3000 }, () => `e:${rnd()}`);
    const b = Array.from({ length: 3000 }, () => `e:${rnd()}`);
    const d = diffMembers(MemberSet.of(a), MemberSet.of(b));
    const sa = new Set(a);
    const sb = new Set(b);
    expect(new Set(keysAt(MemberSet.of(b), d.adds))).toEqual(new Set([...sb].filter((k) => !sa.has(k))));
    expect(new Set(keysAt(MemberSet.of(a), d.removes))).toEqual(new Set([...sa].filter((k) => !sb.has(k))));
  });

  it('an identification is one remove (old alias) and one add (external id)', () => {
    const prev = MemberSet.of(['a:amplitude_device_id\u0000dev-1', 'e:u-2']);
    const cur = MemberSet.of(['e:u-1', 'e:u-2']);
    const d = diffMembers(prev, cur);
    expect(keysAt(cur, d.adds)).toEqual(['e:u-1']);
    expect(keysAt(prev, d.removes)).toEqual(['a:amplitude_device_id\u0000dev-1']);
  });

  it('applies a change and round-trips through the wire form in chunks', () => {
    const base = MemberSet.of(keys(1000));
    const next = applyChange(base, ['e:new-1', 'e:new-2'], ['e:user-0', 'e:user-1', 'e:absent']);
    expect(next.size).toBe(1000);
    expect(next.has('e:user-0')).toBe(false);
    expect(next.has('e:new-2')).toBe(true);
    const b = new MemberSetBuilder();
    for (let i = 0; i < next.size; i += 128) decodeMembersInto(encodeMembers(next, i, Math.min(next.size, i + 128)), b);
    const back = b.build();
    const d = diffMembers(next, back);
    expect([d.adds.length, d.removes.length, d.unchanged]).toEqual([0, 0, 1000]);
    expect(() => decodeMembersInto(new Uint8Array([5, 65]), new MemberSetBuilder())).toThrow(/truncated/);
  });

  it('finds every member of a large set (sparse index) and survives being split and joined again', () => {
    const ks = keys(5_000);
    const s = MemberSet.of(ks);
    expect(ks.every((k) => s.has(k))).toBe(true);
    expect(keys(200, 10_000).some((k) => s.has(k))).toBe(false);
    const offs = s.splitOffsets(1_000);
    expect(offs).toHaveLength(6);
    const joined = MemberSet.fromPacked(Buffer.concat(offs.slice(1).map((o, i) => s.data.subarray(offs[i]!, o))));
    expect(joined.size).toBe(5_000);
    expect(diffMembers(s, joined).unchanged).toBe(5_000);
    expect(s.byteSize).toBeLessThan(5_000 * 16);
    expect(() => MemberSet.fromPacked(new Uint8Array([3, 65]))).toThrow(/truncated/);
  });

  it('applies changes like a naive Set would, by merging, and the result stays a valid set', () => {
    let seed = 11;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % 4000);
    for (let round = 0; round < 5; round++) {
      const base = Array.from({ length: 2500 }, () => `e:${rnd()}`);
      const added = Array.from({ length: 300 }, () => `e:${rnd()}`);
      const removed = Array.from({ length: 300 }, () => `e:${rnd()}`);
      const want = new Set(base);
      for (const k of removed) want.delete(k);
      for (const k of added) want.add(k);
      const got = applyChange(MemberSet.of(base), added, removed);
      expect(new Set(got.keys())).toEqual(want);
      expect(got.size).toBe(want.size);
      expect([...want].every((k) => got.has(k))).toBe(true);
      expect(MemberSet.fromPacked(got.data).size).toBe(want.size);
    }
  });

  it('keeps non-ASCII keys intact', () => {
    const s = MemberSet.of(['e:ünïcødé-用户', 'e:x']);
    expect([...s.keys()].sort()).toEqual(['e:x', 'e:ünïcødé-用户']);
  });
});

describe('cohort identifiers', () => {
  const rules: CohortIdRule[] = [
    { source: { kind: 'user_id' }, target: { kind: 'external_id' } },
    { source: { kind: 'user_property', name: 'crm' }, target: { kind: 'user_alias', aliasLabel: 'crm_id' } },
    { source: { kind: 'amplitude_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_id' } },
  ];

  it('takes the first rule the member has a value for', () => {
    expect(resolveMember({ userId: 'u-1', amplitudeId: '5' }, rules)).toEqual({ ok: true, key: 'e:u-1', rule: 0 });
    expect(resolveMember({ userId: '', properties: { crm: 'c-9' }, amplitudeId: '5' }, rules)).toMatchObject({ key: 'a:crm_id\u0000c-9', rule: 1 });
    expect(resolveMember({ amplitudeId: '5', properties: new Map([['crm', '']]) }, rules)).toMatchObject({ key: 'a:amplitude_id\u00005', rule: 2 });
  });

  it('says why a member could not be identified (the default rules and an anonymous export row)', () => {
    expect(resolveMember({ amplitudeId: '5', userId: '' }, DEFAULT_COHORT_IDENTIFIERS)).toEqual({ ok: false, reason: 'no_user_id+no_device_id' });
    expect(resolveMember({ userId: 'x'.repeat(300) }, DEFAULT_COHORT_IDENTIFIERS)).toEqual({ ok: false, reason: 'user_id_too_long+no_device_id' });
  });

  it('the partner API has no field for braze_id or email', () => {
    const r: CohortIdRule[] = [{ source: { kind: 'user_id' }, target: { kind: 'email' } }];
    expect(resolveMember({ userId: 'a@b.c' }, r, { partner: true })).toEqual({ ok: false, reason: 'email_not_in_partner_api' });
  });

  it('turns member keys back into Braze identifiers', () => {
    expect(keyToIdentifier('e:u-1')).toEqual({ external_id: 'u-1' });
    expect(keyToIdentifier('a:amplitude_device_id\u0000d-1')).toEqual({ user_alias: { alias_label: 'amplitude_device_id', alias_name: 'd-1' } });
    expect(keyToIdentifier('b:B1')).toEqual({ braze_id: 'B1' });
    expect(keyToIdentifier('m:a@b.c')).toEqual({ email: 'a@b.c' });
    expect(describeKey('a:l\u0000n')).toBe('a:l:n');
  });
});

describe('membership writes and outcomes', () => {
  const answer = (outcome: DeliveryOutcome, status = 201): Answer => ({ outcome, status, durationMs: 1, body: '' });
  const opts = { concurrency: 2, maxRetries: 2, retryBaseMs: 1, retryMaxMs: 5, sleep: () => Promise.resolve() };
  function fake(answers: (body: string, n: number) => Answer): Transport<string> & { bodies: string[] } {
    const bodies: string[] = [];
    return {
      name: 'fake',
      maxPerRequest: 75,
      bodies,
      encode: (keys) => JSON.stringify(keys),
      post: async (b) => {
        bodies.push(b);
        return answers(b, bodies.length);
      },
    };
  }
  const items = Array.from({ length: 200 }, (_, i) => `e:u${i}`);

  it('encodes /users/track membership objects, update-existing-only', () => {
    const t = trackMembershipTransport({ track: () => Promise.reject(new Error('unused')) }, { cohortId: 'k3x9', attribute: 'amplitude_cohorts', op: 'remove', maxPerRequest: 75 });
    expect(JSON.parse(t.encode(['e:u1', 'a:l\u0000n']))).toEqual({
      attributes: [
        { external_id: 'u1', amplitude_cohorts: { remove: ['k3x9'] }, _update_existing_only: true },
        { user_alias: { alias_label: 'l', alias_name: 'n' }, amplitude_cohorts: { remove: ['k3x9'] }, _update_existing_only: true },
      ],
    });
  });

  it('batches to the cap and accepts what was delivered', async () => {
    const t = fake(() => answer({ kind: 'delivered' }));
    const r = await writeAll(items, t, opts);
    expect(t.bodies.map((b) => (JSON.parse(b) as string[]).length)).toEqual([75, 75, 50]);
    expect(r.acceptedCount).toBe(200);
  });

  it('counts rejected items and keeps them out; a 400 naming objects resends the others', async () => {
    const t = fake((b, n) => (n === 1 ? answer({ kind: 'rejected', rejects: [{ index: 3, reason: 'rejected_by_destination', error: 'bad id' }], othersDelivered: false }, 400) : answer({ kind: 'delivered' })));
    const r = await writeAll(items.slice(0, 10), t, opts);
    expect(r.rejected.get(3)).toBe('bad id');
    expect(r.acceptedCount).toBe(9);
    expect(JSON.parse(t.bodies[1]!)).toHaveLength(9);
  });

  it('backs off and retries within the bound, then fails the run', async () => {
    let n = 0;
    const t = fake(() => (++n <= 2 ? answer({ kind: 'backoff', failure: 'unavailable', error: '503' }, 503) : answer({ kind: 'delivered' })));
    expect((await writeAll(items.slice(0, 5), t, opts)).acceptedCount).toBe(5);
    const always = fake(() => answer({ kind: 'backoff', failure: 'unavailable', error: 'Braze answered 503' }, 503));
    await expect(writeAll(items.slice(0, 5), always, opts)).rejects.toThrow(/gave up after 2 retries/);
  });

  it('on the delivery core\'s back-off policy: once Braze fails, one request at a time probes it until it answers again', async () => {
    let n = 0;
    let failedAt = 0; // requests answered with a failure so far
    let recovered = false;
    let probesInFlight = 0; // requests started after the first failure and before the recovery
    let maxProbes = 0;
    const t: Transport<string> = {
      name: 'fake',
      maxPerRequest: 10,
      encode: (keys) => JSON.stringify(keys),
      post: async () => {
        const me = ++n;
        const probe = failedAt > 0 && !recovered;
        if (probe) maxProbes = Math.max(maxProbes, ++probesInFlight);
        await new Promise((r) => setTimeout(r, 2));
        if (probe) probesInFlight--;
        // the first wave (requests 1-4) fails, and so do the next three: Braze is back from the 8th
        if (me <= 7) {
          failedAt++;
          return answer({ kind: 'backoff', failure: 'unavailable', error: '503' }, 503);
        }
        recovered = true;
        return answer({ kind: 'delivered' });
      },
    };
    const r = await writeAll(items.slice(0, 80), t, { concurrency: 4, maxRetries: 10, retryBaseMs: 2, retryMaxMs: 8, sleep: (ms) => new Promise((res) => setTimeout(res, ms)) });
    expect(r.acceptedCount).toBe(80);
    expect(n).toBe(7 + 8);
    expect(maxProbes).toBe(1);
  });

  it('stops the run at once on a refused key', async () => {
    const t = fake(() => answer({ kind: 'stop', failure: 'auth', error: 'Braze refused the API key (401)' }, 401));
    const err = await writeAll(items, t, opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WriteFailure);
    expect((err as WriteFailure).failure).toBe('auth');
  });

  it('halves on split until the culprit stands alone', async () => {
    const t = fake((b) => ((JSON.parse(b) as string[]).includes('e:u7') ? answer({ kind: 'split', reason: 'rejected_by_destination', error: 'no' }, 400) : answer({ kind: 'delivered' })));
    const r = await writeAll(items.slice(0, 16), t, { ...opts, concurrency: 1 });
    expect(r.acceptedCount).toBe(15);
    expect([...r.rejected.keys()]).toEqual([7]);
  });

  it('maps the partner API answers (400 messages, 401, 423) to outcomes', () => {
    const c = (status: number, body: unknown) => classifyPartnerResponse(status, {}, JSON.stringify(body), 0).kind;
    expect(c(201, {})).toBe('delivered');
    expect(c(401, { message: 'Invalid client secret' })).toBe('stop');
    expect(c(400, { message: 'Only 1,000 user_ids, device_ids, and aliases are allowed per request' })).toBe('split');
    expect(c(400, { message: 'cohort_id must be a valid string' })).toBe('stop');
    expect(c(423, { message: 'Resource locked' })).toBe('backoff');
    expect(c(503, {})).toBe('backoff');
    expect(partnerChange(['e:u1', 'a:l\u0000n'], 'remove')).toEqual({ user_ids: ['u1'], aliases: [{ alias_name: 'n', alias_label: 'l' }], should_remove: true });
  });
});

describe('cohort settings', () => {
  const base = { KAFKA_BROKERS: 'localhost:9092', BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY: 'k' };

  it('reads COHORT_SYNCS and COHORT_IDENTIFIERS with the outbound syntax plus amplitude_id', () => {
    const c = loadConfig({ ...base, COHORT_SYNCS: 'k3x9qpa:daily, p0m4r2z:realtime', COHORT_IDENTIFIERS: 'user_id=external_id,amplitude_id=user_alias:amplitude_id' });
    expect(c.cohorts?.syncs.map((s) => [s.cohortId, s.cadence])).toEqual([['k3x9qpa', 'daily'], ['p0m4r2z', 'realtime']]);
    expect(c.cohorts?.identifiers[1]).toEqual({ source: { kind: 'amplitude_id' }, target: { kind: 'user_alias', aliasLabel: 'amplitude_id' } });
    expect(c.cohorts?.attribute).toBe('amplitude_cohorts');
    expect(c.cohorts?.transport).toBe('track');
    expect(c.topics.cohorts).toBe('gateway.cohorts');
  });

  it('is off without Braze credentials; partner transport needs both keys', () => {
    expect(loadConfig({ KAFKA_BROKERS: 'localhost:9092', COHORT_SYNCS: 'abc:once' }).cohorts).toBeUndefined();
    expect(loadConfig({ ...base, COHORT_SYNCS: 'abc:once', BRAZE_PARTNER_API_KEY: 'p', BRAZE_DATA_IMPORT_KEY: 'd' }).cohorts?.transport).toBe('partner');
    expect(() => loadConfig({ ...base, COHORT_SYNCS: 'abc:once', BRAZE_PARTNER_API_KEY: 'p' })).toThrow(ConfigError);
  });

  it('refuses bad entries by name', () => {
    const problems: string[] = [];
    parseCohortSyncs('abc:weekly,abc:once,abc:daily, bad id:once', [], (m) => problems.push(m));
    expect(problems.join('\n')).toMatch(/cadence must be one of/);
    expect(problems.join('\n')).toMatch(/listed twice/);
    expect(problems.join('\n')).toMatch(/short id/);
    expect(() => loadConfig({ ...base, COHORT_SYNCS: 'abc:once', COHORT_IDENTIFIERS: 'amplitude_id=phone' })).toThrow(/COHORT_IDENTIFIERS entry/);
    expect(() => loadConfig({ ...base, NOTIFY_SMTP_URL: 'smtp://localhost:25' })).toThrow(/NOTIFY_EMAIL_TO/);
  });
});

describe('cohort webhook body', () => {
  const ok = (o: unknown) => parseCohortWebhook(Buffer.from(JSON.stringify(o)), 100);
  const base = { cohort_id: 'k3x9qpa', cohort_name: 'n', in_cohort: true, computed_time: '1731402000', message_id: 'm::enter::0', users: [{ user_id: 'u-1' }] };

  it('reads the default payload, and properties flat or nested', () => {
    expect(ok(base)).toEqual({ ok: true, cohortName: 'n', push: { cohortId: 'k3x9qpa', messageId: 'm::enter::0', inCohort: true, computedTime: '1731402000', users: [{ user_id: 'u-1' }] } });
    const r = ok({ ...base, in_cohort: 'false', users: [{ user_id: 'u-2', device_id: 'd-2', plan: 'pro', user_properties: { country: 'DE' } }, { amplitude_id: 512 }] });
    expect(r.ok && r.push.inCohort).toBe(false);
    expect(r.ok && r.push.users).toEqual([{ user_id: 'u-2', device_id: 'd-2', properties: { plan: 'pro', country: 'DE' } }, { amplitude_id: '512' }]);
  });

  it('refuses what can never succeed (400) and too many users (413)', () => {
    const status = (o: unknown) => {
      const r = typeof o === 'string' ? parseCohortWebhook(Buffer.from(o), 100) : ok(o);
      return r.ok ? 200 : r.status;
    };
    expect(status('not json')).toBe(400);
    expect(status('[1]')).toBe(400);
    expect(status({ ...base, cohort_id: 'bad id' })).toBe(400);
    expect(status({ ...base, in_cohort: 'maybe' })).toBe(400);
    expect(status({ ...base, message_id: '' })).toBe(400);
    expect(status({ ...base, users: 'u-1' })).toBe(400);
    expect(status({ ...base, users: ['u-1'] })).toBe(400);
    expect(status('{"cohort_id":"k","in_cohort":true,"message_id":"m","users":[],"__proto__":{}}')).toBe(400);
    expect(status({ ...base, users: Array.from({ length: 101 }, (_, i) => ({ user_id: `u${i}` })) })).toBe(413);
    expect(parseCohortWebhook(Buffer.from([0xff, 0xfe]), 10).ok).toBe(false);
  });

  it('reads YAML syncs with per-sync identifiers', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cohort-cfg-'));
    const file = join(dir, 'g.yaml');
    writeFileSync(file, 'cohorts:\n  syncs:\n    - { cohort_id: abc, cadence: hourly }\n    - cohort_id: def\n      cadence: realtime\n      identifiers: [{ from: amplitude_id, to: user_alias, alias_label: amp }]\n');
    const c = loadConfig({ KAFKA_BROKERS: 'localhost:9092', BRAZE_REST_ENDPOINT: 'https://rest.iad-01.braze.com', BRAZE_API_KEY: 'k', GATEWAY_CONFIG: file });
    expect(c.cohorts?.syncs.map((s) => [s.cohortId, s.cadence, s.identifiers[0]?.source.kind])).toEqual([['abc', 'hourly', 'user_id'], ['def', 'realtime', 'amplitude_id']]);
  });
});
