/**
 * The cohort part of `npm run demo`: a stand-in Amplitude cohort API holding one cohort, synced by
 * the gateway's pull at start (export requested, polled, downloaded through the pre-signed URL,
 * diffed, sent to the Braze stand-in), then Amplitude-style webhook pushes to POST /cohorts (users
 * entering and leaving, and one batch repeated), and what was added and removed printed at the end.
 */
import { request } from 'undici';
import { startAmplitudeCohortStandIn, type AmplitudeCohortStandIn, type StandInCohortMember } from './standins/amplitude-cohorts.js';
import type { BrazeStandIn } from './standins/braze.js';

export const DEMO_COHORT = 'demo7rb';
const SECRET = 'demo-amplitude-secret';
const TOKEN = 'demo-cohort-webhook-token';

export interface CohortDemo {
  /** settings the gateway needs for the cohort sync (merged into the demo's config) */
  env: Record<string, string>;
  /** waits for the first pull, pushes webhook batches, prints what Braze got */
  run(gateway: { address: string | undefined; adminAddress: string | undefined }, braze: BrazeStandIn, out: (s: string) => void): Promise<void>;
  close(): Promise<void>;
}

function demoMember(i: number): StandInCohortMember {
  // one in twenty never logged in: no user id, which the default identifiers cannot place (counted)
  return { amplitudeId: String(700_000_000 + i), userId: i % 20 === 19 ? '' : `user-${i}` };
}

export async function startCohortDemo(apiKey: string, members = 2_000): Promise<CohortDemo> {
  const amp: AmplitudeCohortStandIn = await startAmplitudeCohortStandIn({ apiKey, secretKey: SECRET });
  amp.setCohort({ id: DEMO_COHORT, name: 'Repeat buyers (30d)', members: Array.from({ length: members }, (_, i) => demoMember(i)), lastComputed: Math.floor(Date.now() / 1000) });
  return {
    env: {
      AMPLITUDE_SECRET_KEY: SECRET,
      AMPLITUDE_API_URL: amp.url,
      COHORT_SYNCS: `${DEMO_COHORT}:daily`,
      COHORT_WEBHOOK_TOKEN: TOKEN,
      COHORT_POLL_BASE_MS: '200',
      COHORT_POLL_MAX_MS: '1000',
    },
    async run(gateway, braze, out) {
      const admin = gateway.adminAddress ?? gateway.address;
      const status = async (): Promise<{ syncs: Array<Record<string, unknown>>; budget: { left: number; limit: number } }> => {
        const r = await request(`${admin}/cohorts`);
        return (await r.body.json()) as { syncs: Array<Record<string, unknown>>; budget: { left: number; limit: number } };
      };
      const sync = async (): Promise<Record<string, unknown>> => (await status()).syncs[0] ?? {};
      const deadline = Date.now() + 60_000;
      for (;;) {
        const s = await sync();
        const last = s.last_run as Record<string, unknown> | null;
        if ((last && last.finished_at) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const pulled = ((await sync()).last_run ?? {}) as Record<string, unknown>;
      const count = (op: 'add' | 'remove'): number => braze.received.attributes.filter((a) => (a.amplitude_cohorts as Record<string, unknown> | undefined)?.[op] !== undefined).length;
      const pulledAdds = count('add');

      // Amplitude's webhook destination: 50 users enter, 20 leave, and one batch arrives twice
      const post = async (messageId: string, inCohort: boolean, ids: number[]): Promise<number> => {
        const r = await request(`${gateway.address}/cohorts`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ cohort_name: 'Repeat buyers (30d)', cohort_id: DEMO_COHORT, in_cohort: inCohort, computed_time: String(Math.floor(Date.now() / 1000)), message_id: messageId, users: ids.map((i) => ({ user_id: `user-${i}` })) }),
        });
        await r.body.dump();
        return r.statusCode;
      };
      const enter = Array.from({ length: 50 }, (_, i) => members + i);
      const exit = Array.from({ length: 21 }, (_, i) => i).filter((i) => demoMember(i).userId !== '');
      const codes = [await post('demo-1::enter::0', true, enter), await post('demo-2::exit::0', false, exit), await post('demo-1::enter::0', true, enter)];
      const until = Date.now() + 30_000;
      while (count('add') < pulledAdds + 50 || count('remove') < 20) {
        if (Date.now() > until) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // Braze has them; the snapshot moves a moment later, once each batch is recorded as applied
      let s = await sync();
      while (Number(s.pending_pushes ?? 0) > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 100));
        s = await sync();
      }
      const b = (await status()).budget;
      const skipped = ((pulled.skipped ?? {}) as { unidentified?: Record<string, number> }).unidentified ?? {};
      out('cohort sync (Amplitude cohort -> Braze attribute amplitude_cohorts):');
      out(`  pull at start: cohort ${DEMO_COHORT} "${String(s.cohort_name)}" exported (202 -> polled -> 302 to a pre-signed URL, gzip CSV), ${pulled.result === 'success' ? 'delivered' : String(pulled.result)}: ${pulledAdds} added, ${String(pulled.removes ?? 0)} removed; skipped without an identifier: ${Object.entries(skipped).map(([k, v]) => `${k}=${v}`).join(', ') || 'none'}`);
      out(`  webhook pushes (POST /cohorts answered ${codes.join(', ')}): ${count('add') - pulledAdds} added, ${count('remove')} removed; the repeated message_id applied once`);
      out(`  snapshot: ${String(s.members)} members in Braze's view, state ${String(s.state)}; downloads left this month: ${b.left} of ${b.limit} (${admin}/cohorts)`);
    },
    close: () => amp.close(),
  };
}
