/**
 * TraitSync on its own (an in-memory state store and a recording Braze port, the Amplitude stand-in
 * for the User Profile API on an injected clock): computations are fetched one user at a time
 * within the API's 600 requests a minute, and the per-attribute state stays compact.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Answer } from '../../src/delivery/outcome.js';
import { ManualClock } from '../../src/clock.js';
import type { SnapshotMeta } from '../../src/cohorts/cohort-store.js';
import { MemberSet } from '../../src/cohorts/member-set.js';
import { TraitSync, type TraitRow, type TraitStateStore } from '../../src/cohorts/traits.js';
import { startAmplitudeCohortStandIn, type AmplitudeCohortStandIn } from '../../src/demo/standins/amplitude-cohorts.js';
import { memoryLogger, testConfig } from '../support/harness.js';

class MemStore implements TraitStateStore {
  saved: { meta: SnapshotMeta; members: MemberSet; applied: string[] } | undefined;
  snapshot(): { meta: SnapshotMeta; members: MemberSet; applied: string[] } | undefined {
    return this.saved;
  }
  async saveSnapshot(_sync: string, members: MemberSet, meta: Omit<SnapshotMeta, 'v' | 'generation' | 'chunks' | 'members' | 'deltaSeq'>): Promise<SnapshotMeta> {
    const full: SnapshotMeta = { ...meta, v: 1, generation: (this.saved?.meta.generation ?? 0) + 1, chunks: 1, members: members.size, deltaSeq: 0 };
    this.saved = { meta: full, members, applied: [] };
    return full;
  }
}

function rig(amp: AmplitudeCohortStandIn, env: Record<string, string>, clock: ManualClock): { traits: TraitSync; store: MemStore; sent: Array<Record<string, unknown>> } {
  const config = testConfig({ KAFKA_BROKERS: 'x:1', COHORT_SYNCS: 'k3x9qpa:daily', BRAZE_REST_ENDPOINT: 'http://127.0.0.1:1', BRAZE_API_KEY: 'k', AMPLITUDE_API_KEY: 'a', AMPLITUDE_SECRET_KEY: 's', AMPLITUDE_PROFILE_API_URL: amp.url, ...env });
  const store = new MemStore();
  const sent: Array<Record<string, unknown>> = [];
  const answer: Answer = { outcome: { kind: 'delivered' }, status: 201, durationMs: 1, body: '{"message":"success"}' };
  const traits = new TraitSync({
    settings: config.cohorts!.traits,
    amplitude: config.amplitude,
    braze: {
      track: async (body) => {
        sent.push(...(JSON.parse(body) as { attributes: Array<Record<string, unknown>> }).attributes);
        return answer;
      },
    },
    maxPerRequest: 75,
    store,
    logger: memoryLogger('silent').logger,
    // waiting moves the injected clock: the pacing is checked in Profile API time, not wall time
    sleep: async (ms) => clock.advance(ms),
    writeOptions: { concurrency: 1, maxRetries: 0, retryBaseMs: 1, retryMaxMs: 1 },
    now: () => clock.now(),
  });
  return { traits, store, sent };
}

describe('TraitSync', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    while (closers.length) await closers.pop()!();
  });

  it('fetches each member\'s computations within the User Profile API\'s 600 requests a minute', async () => {
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 12, 0));
    // the stand-in counts its per-minute window on the same clock and answers 429 beyond 600
    const amp = await startAmplitudeCohortStandIn({ apiKey: 'a', secretKey: 's', clock });
    closers.push(() => amp.close());
    const { traits, sent } = rig(amp, { TRAIT_COMPUTATIONS: 'score' }, clock);
    const rows: TraitRow[] = [];
    for (let i = 0; i < 650; i++) {
      amp.setProfile(`u-${i}`, { score: i % 4 });
      rows.push({ userId: `u-${i}`, values: {} });
    }
    const start = clock.now();
    expect(await traits.sync(rows, start)).toBe(650);
    expect(amp.stats).toMatchObject({ profileCalls: 650, profileThrottled: 0 });
    // 650 calls evenly spaced at 100 ms: the last one at least 64.9 s after the first
    expect(clock.now() - start).toBeGreaterThanOrEqual(64_900);
    expect(sent).toHaveLength(650);
    expect(sent.find((a) => a.external_id === 'u-7')).toEqual({ external_id: 'u-7', score: 3 });
  });

  it('keeps one compact entry per user, and sends only the attributes whose values changed', async () => {
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 12, 0));
    const amp = await startAmplitudeCohortStandIn({ apiKey: 'a', secretKey: 's', clock });
    closers.push(() => amp.close());
    const { traits, store, sent } = rig(amp, { TRAIT_PROPERTIES: 'plan,country,city' }, clock);
    const rows = (n: number, plan: (i: number) => string): TraitRow[] => Array.from({ length: n }, (_, i) => ({ userId: `user-${String(i).padStart(6, '0')}`, values: { plan: plan(i), country: 'DE', city: 'Berlin' } }));
    expect(await traits.sync(rows(1_000, () => 'free'), clock.now())).toBe(1_000);
    expect(sent).toHaveLength(1_000);
    const state = store.saved!.members;
    expect(state.size).toBe(1_000);
    // per user: the 11-character user id, a separator, 3 attributes x 10 characters, a length byte
    expect(state.data.length / state.size).toBeLessThanOrEqual(11 + 1 + 30 + 1);

    sent.length = 0;
    expect(await traits.sync(rows(1_000, (i) => (i % 10 === 0 ? 'pro' : 'free')), clock.now())).toBe(100);
    expect(sent).toHaveLength(100);
    expect(sent.every((a) => Object.keys(a).sort().join() === 'external_id,plan' && a.plan === 'pro')).toBe(true);
    expect(store.saved!.members.size).toBe(1_000);

    sent.length = 0;
    expect(await traits.sync(rows(1_000, (i) => (i % 10 === 0 ? 'pro' : 'free')), clock.now())).toBe(0);
    expect(sent).toEqual([]);
  });
});
