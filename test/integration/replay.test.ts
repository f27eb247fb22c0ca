import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Partitioners, type IHeaders } from 'kafkajs';
import { startMockCluster, type MockCluster } from '../../src/demo/mock-cluster.js';
import { toMessage, type DeadLetter } from '../../src/kafka/dead-letter.js';
import { replayDeadLetters, type ReplayFilter } from '../../src/replay/replay.js';
import { runReplayCli } from '../../src/replay/replay-cli.js';
import { memoryLogger, testConfig, testKafka } from '../support/harness.js';
import { brazeObjectDeadLetter } from '../../src/amplitude-to-braze/braze-dead-letter.js';
import { startBrazeStandIn } from '../../src/demo/standins/braze.js';
import { BRAZE_TARGET } from '../../src/replay/replay.js';

let cluster: MockCluster;

beforeAll(async () => {
  cluster = await startMockCluster({ brokers: 1 });
});
afterAll(async () => {
  await cluster?.stop();
});
afterEach(() => {
  vi.restoreAllMocks();
});

let n = 0;
/** a fresh topic set per test; the dead-letter topic has 4 partitions, so some stay empty */
async function setup(dlqPartitions = 4) {
  const id = `r${++n}-${Date.now()}`;
  const topics = {
    dlq: `gateway.dead-letter.${id}`,
    events: `amplitude.events.${id}`,
    currents: `braze.currents.${id}`,
    retry: `gateway.retry.${id}`,
  };
  await cluster.createTopic(topics.dlq, dlqPartitions);
  await cluster.createTopic(topics.events, 3);
  await cluster.createTopic(topics.currents, 3);
  await cluster.createTopic(topics.retry, 2);
  const env = {
    KAFKA_BROKERS: cluster.bootstrap,
    KAFKA_GROUP_ID: `gw-${id}`,
    TOPIC_DEAD_LETTER: topics.dlq,
    TOPIC_AMPLITUDE_EVENTS: topics.events,
    TOPIC_BRAZE_CURRENTS: topics.currents,
    TOPIC_RETRY: topics.retry,
  };
  return { topics, env, config: testConfig(env) };
}

type Topics = Awaited<ReturnType<typeof setup>>['topics'];

/** Writes dead letters exactly as the gateway does (toMessage), each to the partition named. */
async function writeDeadLetters(topic: string, items: Array<{ dl: DeadLetter; partition: number }>): Promise<void> {
  const producer = testKafka(cluster.bootstrap).producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let i = 0; i < items.length; i += 500) {
    await producer.send({
      topic,
      acks: -1,
      messages: items.slice(i, i + 500).map(({ dl, partition }) => ({ ...toMessage(dl), partition })),
    });
  }
  await producer.disconnect();
}

/** records currently in a topic, from its offsets: exact, and no consumer group to wait for */
async function countRecords(topic: string): Promise<number> {
  const admin = testKafka(cluster.bootstrap).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

interface RawRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** Reads exactly `count` records with raw keys (the harness's reader turns keys into strings). */
async function readRaw(topic: string, count: number, timeoutMs = 20_000): Promise<RawRecord[]> {
  const consumer = testKafka(cluster.bootstrap).consumer({ groupId: `replay-reader-${topic}-${Math.random()}`, maxWaitTimeInMs: 50 });
  const got: RawRecord[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${got.length} of ${count} records from ${topic}`)), timeoutMs);
    void consumer.run({
      eachMessage: async ({ message }) => {
        got.push({ key: message.key, value: message.value, headers: stringHeaders(message.headers) });
        if (got.length >= count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  }).finally(() => consumer.disconnect());
  return got;
}

function stringHeaders(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined) out[k] = first.toString();
  }
  return out;
}

const at = (iso: string): number => Date.parse(iso);
const json = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

/** What the filtered replay below must do with each dead letter: the target's name, 'skip', or nothing. */
type Expect = 'events' | 'currents' | 'skip' | null;

/**
 * A mix of dead letters as the legs write them, each with what the filtered replay
 * (reasons drop_window_expired|daily_quota, connectors braze|amplitude,
 * [2025-03-10T00:00Z, 2025-03-12T00:00Z)) must do with it.
 */
function fixtures(t: Topics): Array<{ name: string; dl: DeadLetter; partition: number; expect: Expect }> {
  const src = (topic: string, offset: number) => ({ topic, partition: 1, offset: String(offset) });
  return [
    { name: 'A', partition: 0, expect: 'events', dl: { leg: 'outbound', connector: 'braze', reason: 'drop_window_expired', error: 'undelivered for 172801 s', key: 'device-a', value: json({ event_type: 'a', device_id: 'device-a', insert_id: 'ia' }), source: src(t.events, 10), firstFailureMs: at('2025-03-10T08:00:00Z') } },
    { name: 'B', partition: 2, expect: null, dl: { leg: 'outbound', connector: 'braze', reason: 'not_json', error: 'Unexpected token', key: 'device-b', value: Buffer.from('{not json'), source: src(t.events, 11), firstFailureMs: at('2025-03-10T09:00:00Z') } },
    // parked in the retry topic, then over the quota: it goes back to the leg's main input
    { name: 'C', partition: 0, expect: 'currents', dl: { leg: 'inbound', connector: 'amplitude', reason: 'daily_quota', error: 'over the daily quota', key: 'device-c', value: json({ id: 'c', event_type: 'users.behaviors.CustomEvent' }), source: src(t.retry, 3), firstFailureMs: at('2025-03-11T10:00:00Z'), extraHeaders: { 'received-at': '1741600000000' } } },
    // binary value and key, and the last millisecond of the range
    { name: 'D', partition: 2, expect: 'currents', dl: { leg: 'inbound', connector: 'amplitude', reason: 'drop_window_expired', error: 'expired', key: Buffer.from([0x01, 0xff, 0x00, 0x80]), value: Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x0d, 0xc3, 0x28]), source: src(t.currents, 7), firstFailureMs: at('2025-03-11T23:59:59.999Z') } },
    // `to` is exclusive
    { name: 'E', partition: 0, expect: null, dl: { leg: 'inbound', connector: 'amplitude', reason: 'drop_window_expired', error: 'expired', key: 'device-e', value: json({ id: 'e' }), source: src(t.currents, 8), firstFailureMs: at('2025-03-12T00:00:00.000Z') } },
    { name: 'F', partition: 2, expect: null, dl: { leg: 'inbound', connector: 'amplitude', reason: 'daily_quota', error: 'over', key: 'device-f', value: json({ id: 'f' }), source: src(t.currents, 9), firstFailureMs: at('2025-03-09T23:59:59.999Z') } },
    // refused at POST /currents: no source headers, no key
    { name: 'G', partition: 0, expect: null, dl: { leg: 'inbound', connector: 'currents', reason: 'not_json', error: 'bad', key: null, value: json({ id: 'g' }), firstFailureMs: at('2025-03-10T12:00:00Z') } },
    { name: 'H', partition: 2, expect: null, dl: { leg: 'inbound', connector: 'currents', reason: 'drop_window_expired', error: 'x', key: null, value: json({ id: 'h' }), firstFailureMs: at('2025-03-10T12:00:00Z') } },
    { name: 'I', partition: 0, expect: 'events', dl: { leg: 'outbound', connector: 'braze', reason: 'daily_quota', error: 'x', key: 'device-i', value: json({ event_type: 'i' }), firstFailureMs: at('2025-03-11T00:00:00Z') } },
    { name: 'J', partition: 2, expect: 'skip', dl: { leg: 'outbound', connector: 'braze', reason: 'drop_window_expired', error: 'x', key: 'device-j', value: null, source: src(t.events, 12), firstFailureMs: at('2025-03-10T10:00:00Z') } },
    { name: 'K', partition: 0, expect: 'currents', dl: { leg: 'inbound', connector: 'amplitude', reason: 'daily_quota', error: 'x', key: 'device-k', value: json({ id: 'k' }), firstFailureMs: at('2025-03-11T01:00:00Z') } },
    // a leg with no input topic to go back to
    { name: 'L', partition: 2, expect: 'skip', dl: { leg: 'cohorts', connector: 'braze', reason: 'drop_window_expired', error: 'x', key: 'cohort-l', value: json({ cohort: 'l' }), firstFailureMs: at('2025-03-10T10:00:00Z') } },
  ];
}

const FILTER: ReplayFilter = {
  reasons: ['drop_window_expired', 'daily_quota'],
  connectors: ['braze', 'amplitude'],
  from: new Date('2025-03-10T00:00:00Z'),
  to: new Date('2025-03-12T00:00:00Z'),
};

describe('replay: dead letters back through their leg', () => {
  it('dry run: counts everything, by reason and target, and writes nothing', async () => {
    const { topics, config } = await setup();
    const fx = fixtures(topics);
    await writeDeadLetters(topics.dlq, fx);
    const log = memoryLogger('info');

    const report = await replayDeadLetters(config, { filter: {}, dryRun: true }, log.logger);
    expect(report).toEqual({
      scanned: 12,
      matched: 12,
      replayed: 10,
      byReason: { drop_window_expired: 6, not_json: 2, daily_quota: 4 },
      byTarget: { [topics.events]: 3, [topics.currents]: 7 },
      skippedNoTarget: 2,
      brazeRejected: 0,
      skippedNewer: 0,
    });

    const filtered = await replayDeadLetters(config, { filter: FILTER, dryRun: true }, log.logger);
    const want = fx.filter((f) => f.expect !== null);
    expect(filtered).toMatchObject({ scanned: 12, matched: want.length, replayed: 5, skippedNoTarget: 2 });
    expect(filtered.byTarget).toEqual({ [topics.events]: 2, [topics.currents]: 3 });

    expect(await countRecords(topics.events)).toBe(0);
    expect(await countRecords(topics.currents)).toBe(0);
    expect(await countRecords(topics.retry)).toBe(0);
    expect(await countRecords(topics.dlq)).toBe(12);
  });

  it('writes exactly the matching values, byte for byte, with their keys, to their leg\'s topic', async () => {
    const { topics, config } = await setup();
    const fx = fixtures(topics);
    await writeDeadLetters(topics.dlq, fx);
    const before = Date.now();

    const report = await replayDeadLetters(config, { filter: FILTER, dryRun: false }, memoryLogger('info').logger);
    expect(report).toEqual({
      scanned: 12,
      matched: 7,
      replayed: 5,
      byReason: { drop_window_expired: 4, daily_quota: 3 },
      byTarget: { [topics.events]: 2, [topics.currents]: 3 },
      skippedNoTarget: 2,
      brazeRejected: 0,
      skippedNewer: 0,
    });

    expect(await countRecords(topics.events)).toBe(2);
    expect(await countRecords(topics.currents)).toBe(3);
    expect(await countRecords(topics.retry)).toBe(0);
    // nothing is deleted
    expect(await countRecords(topics.dlq)).toBe(12);

    for (const target of ['events', 'currents'] as const) {
      const want = fx.filter((f) => f.expect === target);
      const got = await readRaw(topics[target], want.length);
      const byValue = new Map(got.map((r) => [r.value?.toString('hex') ?? '', r]));
      expect(byValue.size).toBe(want.length);
      for (const f of want) {
        const r = byValue.get(f.dl.value?.toString('hex') ?? 'missing');
        expect(r, `dead letter ${f.name} in ${target}`).toBeDefined();
        expect(r!.value!.equals(f.dl.value!)).toBe(true);
        const key = f.dl.key;
        expect(r!.key?.equals(typeof key === 'string' ? Buffer.from(key) : key!)).toBe(true);
        expect(r!.headers['replayed-from-reason']).toBe(f.dl.reason);
        expect(Date.parse(r!.headers['replayed-at']!)).toBeGreaterThanOrEqual(before - 1_000);
        // the dead-letter headers stay behind; only received-at travels with the event
        for (const h of ['reason', 'error', 'leg', 'connector', 'source-topic', 'source-partition', 'source-offset', 'first-failure-time']) {
          expect(r!.headers[h], `${f.name}: ${h}`).toBeUndefined();
        }
        expect(r!.headers['received-at']).toBe(f.dl.extraHeaders?.['received-at']);
      }
    }
  });

  it('stops at --limit, and replaying twice sends twice', async () => {
    const { topics, config } = await setup(2);
    const items = Array.from({ length: 20 }, (_, i) => ({
      partition: i % 2,
      dl: { leg: 'outbound' as const, connector: 'braze', reason: 'daily_quota', error: 'x', key: `k${i}`, value: json({ i }), source: { topic: topics.events, partition: 0, offset: String(i) }, firstFailureMs: at('2025-03-10T00:00:00Z') },
    }));
    await writeDeadLetters(topics.dlq, items);
    const log = memoryLogger('info').logger;

    const limited = await replayDeadLetters(config, { filter: {}, dryRun: false, limit: 7 }, log);
    expect(limited).toMatchObject({ matched: 7, replayed: 7, skippedNoTarget: 0 });
    expect(await countRecords(topics.events)).toBe(7);

    await replayDeadLetters(config, { filter: {}, dryRun: false }, log);
    expect(await countRecords(topics.events)).toBe(27);
  });

  it('terminates at the end offsets it started with while dead letters keep arriving', async () => {
    const { topics, config } = await setup(3);
    // keyed like the gateway's dead letters: one key, one partition; partition 2 starts empty
    const dl = (i: number, key = `device-${i % 97}`, partition = (i % 97) % 2) => ({
      partition,
      dl: { leg: 'outbound' as const, connector: 'braze', reason: 'drop_window_expired', error: 'x', key, value: json({ seq: i }), source: { topic: topics.events, partition: 0, offset: String(i) }, firstFailureMs: at('2025-03-10T00:00:00Z') },
    });
    await writeDeadLetters(topics.dlq, Array.from({ length: 2_000 }, (_, i) => dl(i)));

    let appending = true;
    let appended = 0;
    const producer = testKafka(cluster.bootstrap).producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const appender = (async () => {
      // paced, and capped: the mock trims a partition's oldest records past 5 MiB
      while (appending && appended < 20_000) {
        const batch = Array.from({ length: 20 }, (_, i) => {
          const j = appended + i;
          const { dl: late, partition } = dl(100_000 + j, `late-${j % 10}`, (j % 10) % 3);
          return { ...toMessage(late), partition };
        });
        await producer.send({ topic: topics.dlq, acks: -1, messages: batch });
        appended += batch.length;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    let snapshot = 0;
    try {
      const log = memoryLogger('info');
      const started = Date.now();
      const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, log.logger);
      const tookMs = Date.now() - started;
      const appendedDuring = appended;
      // the appender may get a batch in before the end offsets are taken: those count, later ones not
      const start = log.lines().find((l) => String(l.msg).startsWith('replay: reading'));
      snapshot = Number(start?.records);
      expect(snapshot).toBeGreaterThanOrEqual(2_000);
      expect(report).toMatchObject({ scanned: snapshot, matched: snapshot, replayed: snapshot, skippedNoTarget: 0 });
      expect(appendedDuring).toBeGreaterThan(snapshot - 2_000);
      console.info(`replay of ${snapshot} dead letters took ${tookMs} ms while ${appendedDuring} more arrived`);
    } finally {
      appending = false;
      await appender;
      await producer.disconnect();
    }
    expect(await countRecords(topics.dlq)).toBe(2_000 + appended);
    expect(await countRecords(topics.events)).toBe(snapshot);
    const got = await readRaw(topics.events, snapshot);
    expect(new Set(got.map((r) => (JSON.parse(r.value!.toString()) as { seq: number }).seq)).size).toBe(snapshot);
    // per key, the replay keeps the dead-letter topic's order
    const lastByKey = new Map<string, number>();
    for (const r of got) {
      const seq = (JSON.parse(r.value!.toString()) as { seq: number }).seq;
      const key = r.key!.toString();
      expect(seq).toBeGreaterThan(lastByKey.get(key) ?? -1);
      lastByKey.set(key, seq);
    }
  });

  it('returns at once on an empty dead-letter topic', async () => {
    const { topics, config } = await setup();
    const started = Date.now();
    const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, memoryLogger('info').logger);
    expect(report).toEqual({ scanned: 0, matched: 0, replayed: 0, byReason: {}, byTarget: {}, skippedNoTarget: 0, brazeRejected: 0, skippedNewer: 0 });
    // no consumer group was joined (the mock holds a first join for 3 s)
    expect(Date.now() - started).toBeLessThan(2_500);
    expect(await countRecords(topics.events)).toBe(0);
  });
});

describe('replay CLI', () => {
  function capture() {
    const out: string[] = [];
    const err: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(chunk.toString());
      return true;
    });
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      err.push(chunk.toString());
      return true;
    });
    return { out: () => out.join(''), err: () => err.join('') };
  }

  it.each([
    [['--from', 'yesterday'], /--from must be an ISO-8601 date/],
    [['--to', '2025-02-30'], /--to must be an ISO-8601 date/],
    [['--from', '03/10/2025'], /--from must be an ISO-8601 date/],
    [['--bogus'], /unknown option "--bogus"/],
    [['--reason'], /--reason needs a value/],
    [['--limit', '0'], /--limit must be a positive integer/],
    [['--limit', 'ten'], /--limit must be a positive integer/],
    [['--leg', 'sideways'], /--leg must be one of/],
    [['--dry-run=yes'], /--dry-run takes no value/],
    [['--from', '2025-03-12', '--to', '2025-03-10'], /--from .* must be before --to/],
    [['drop_window_expired'], /unexpected argument "drop_window_expired"/],
  ])('refuses %j with exit code 2', async (argv, message) => {
    const io = capture();
    expect(await runReplayCli(argv)).toBe(2);
    expect(io.err()).toMatch(message);
    expect(io.err()).toContain('usage: amplitude-braze-gateway replay');
    expect(io.out()).toBe('');
  });

  it('prints its usage for --help', async () => {
    const io = capture();
    expect(await runReplayCli(['--help'])).toBe(0);
    expect(io.out()).toContain('--dry-run');
    expect(io.out()).toContain('Braze does not');
  });

  it('runs a filtered dry run from the environment and prints a summary and one JSON line', async () => {
    const { topics, env } = await setup();
    await writeDeadLetters(topics.dlq, fixtures(topics));
    const saved = { ...process.env };
    Object.assign(process.env, env, { KAFKA_FETCH_MAX_WAIT_MS: '50', KAFKA_SESSION_TIMEOUT_MS: '10000', LOG_LEVEL: 'silent' });
    const io = capture();
    try {
      const code = await runReplayCli([
        '--dry-run',
        '--reason', 'drop_window_expired,daily_quota',
        '--connector', 'braze', '--connector=amplitude',
        '--from', '2025-03-10',
        '--to', '2025-03-12T00:00',
        '--limit', '6',
      ]);
      expect(code).toBe(0);
    } finally {
      process.env = saved;
    }
    const lines = io.out().trim().split('\n');
    expect(lines[0]).toMatch(/^DRY RUN, nothing written\. .* \d+ scanned, 6 matched .*stopped at --limit 6/);
    expect(io.out()).toContain('stay in the topic');
    const report = JSON.parse(lines[lines.length - 1]!) as { dryRun: boolean; scanned: number; matched: number; replayed: number; skippedNoTarget: number };
    // which 6 of the 7 matches depends on the order the two partitions are read in
    expect(report).toMatchObject({ dryRun: true, matched: 6 });
    expect(report.replayed + report.skippedNoTarget).toBe(6);
    expect(report.scanned).toBeLessThanOrEqual(12);
    expect(await countRecords(topics.events)).toBe(0);
    expect(await countRecords(topics.currents)).toBe(0);
  });

  it('sends a single-Braze-object dead letter straight to /users/track as exactly that object; refused again, it goes back to the dead-letter topic', async () => {
    const braze = await startBrazeStandIn({ apiKey: 'replay-key' });
    try {
      const base = await setup(1);
      const config = testConfig({ ...base.env, BRAZE_REST_ENDPOINT: braze.url, BRAZE_API_KEY: 'replay-key' });
      const topics = base.topics;
      const purchase = { external_id: 'u-1', product_id: 'pro', currency: 'EUR', price: 10, quantity: 1, time: '2025-03-14T09:00:00.000Z' };
      const badPurchase = { ...purchase, product_id: 'still-bad' };
      const attrs = { user_alias: { alias_name: 'd-1', alias_label: 'amplitude_device_id' }, _update_existing_only: false, plan: 'pro' };
      const common = { reason: 'rejected_by_destination' as const, connector: 'braze', key: 'u-1', firstFailureMs: at('2025-03-14T09:00:01Z') };
      const src = (offset: number) => ({ topic: topics.events, partition: 0, offset: String(offset) });
      await writeDeadLetters(topics.dlq, [
        { partition: 0, dl: brazeObjectDeadLetter({ ...common, array: 'purchases', json: JSON.stringify(purchase), index: 2, error: "purchases[0]: 'quantity' is not valid", source: src(7) }) },
        { partition: 0, dl: brazeObjectDeadLetter({ ...common, array: 'attributes', json: JSON.stringify(attrs), index: 0, error: 'attributes[3]: x', source: src(8) }) },
        { partition: 0, dl: brazeObjectDeadLetter({ ...common, array: 'purchases', json: JSON.stringify(badPurchase), index: 1, error: 'purchases[1]: y', source: src(9) }) },
        // an ordinary dead letter in the same topic still goes back to its topic
        { partition: 0, dl: { leg: 'outbound', connector: 'braze', reason: 'drop_window_expired', error: 'old', key: 'u-2', value: json({ event_type: 'e', user_id: 'u-2' }), source: src(10), firstFailureMs: at('2025-03-14T09:00:02Z') } },
      ]);

      const dry = await replayDeadLetters(config, { filter: {}, dryRun: true }, memoryLogger('info').logger);
      expect(dry.byTarget).toEqual({ [BRAZE_TARGET]: 3, [topics.events]: 1 });
      expect(braze.stats.requests).toBe(0);

      braze.rejectWhen((o) => (o.product_id === 'still-bad' ? "'product_id' is not valid" : undefined));
      const report = await replayDeadLetters(config, { filter: {}, dryRun: false }, memoryLogger('info').logger);
      expect(report).toMatchObject({ scanned: 4, matched: 4, replayed: 3, brazeRejected: 1, byTarget: { [BRAZE_TARGET]: 2, [topics.events]: 1 } });
      // exactly those objects, once each, in one request; nothing else of their events
      expect(braze.received.purchases).toEqual([purchase]);
      expect(braze.received.attributes).toEqual([attrs]);
      expect(braze.received.events).toEqual([]);
      expect(braze.stats.requests).toBe(1);
      expect(braze.profile({ user_alias: attrs.user_alias })?.attributes).toEqual({ plan: 'pro' });
      // the one refused again is back in the dead-letter topic with Braze's new answer
      expect(await countRecords(topics.dlq)).toBe(5);
      const all = await readRaw(topics.dlq, 5);
      const again = all[4]!;
      expect(again.headers.payload).toBe('braze-object');
      expect(again.headers['braze-array']).toBe('purchases');
      expect(again.headers.error).toContain("'product_id' is not valid");
      expect(again.headers['replayed-at']).toBeTruthy();
      expect(JSON.parse(again.value!.toString())).toEqual(badPurchase);
      expect(await countRecords(topics.events)).toBe(1);
    } finally {
      await braze.close();
    }
  });
});
