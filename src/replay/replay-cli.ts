import { loadConfig } from '../config/config.js';
import { createLogger } from '../observability/logger.js';
import { ReplayFailedError, replayDeadLetters, type ReplayFilter, type ReplayOptions, type ReplayReport } from './replay.js';

export const REPLAY_USAGE = `usage: amplitude-braze-gateway replay [options]

Sends dead letters from the dead-letter topic back to their leg's input topic (the source-topic
header; a parked copy from the retry topic goes to the leg's main input), up to the end of the
dead-letter topic as it is when the command starts.
A dead letter that is one Braze object (header payload: braze-object, written when Braze refused
just that object of an event) is sent straight to Braze /users/track as exactly that object, not
back to the events topic; refused again, it is written back to the dead-letter topic.

options (each list option repeatable or comma-separated):
  --reason R      only these reasons (e.g. drop_window_expired,daily_quota)
  --connector C   only these connectors (braze, amplitude, currents)
  --leg L         only these legs (outbound, inbound)
  --from ISO      first failure at or after this time (ISO-8601; no offset means UTC)
  --to ISO        first failure before this time
  --limit N       stop after N matching dead letters
  --dry-run       write nothing; report what would be sent
  -h, --help      this text

The dead letters are not removed (Kafka cannot delete single records): replaying twice sends
twice. Amplitude drops duplicates by insert_id; Braze does not, so replay the outbound leg once.
`;

const LEGS = ['outbound', 'inbound', 'cohorts'];
const LIST_FLAGS = { '--reason': 'reasons', '--connector': 'connectors', '--leg': 'legs' } as const;
type ListFlag = keyof typeof LIST_FLAGS;

class UsageError extends Error {}

/** Parses the arguments; a UsageError names what is wrong. */
export function parseReplayArgs(argv: string[]): { help: true } | { help: false; options: ReplayOptions } {
  const filter: ReplayFilter = {};
  let dryRun = false;
  let limit: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${flag} needs a value`);
      i++;
      return v;
    };
    const noValue = (): void => {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
    };
    switch (flag) {
      case '-h':
      case '--help':
        return { help: true };
      case '--dry-run':
        noValue();
        dryRun = true;
        break;
      case '--reason':
      case '--connector':
      case '--leg': {
        const items = value()
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
        if (items.length === 0) throw new UsageError(`${flag} needs a value`);
        if (flag === '--leg') {
          const bad = items.filter((l) => !LEGS.includes(l));
          if (bad.length > 0) throw new UsageError(`--leg must be one of ${LEGS.join(', ')}, not ${bad.map((b) => JSON.stringify(b)).join(', ')}`);
        }
        const key = LIST_FLAGS[flag as ListFlag];
        filter[key] = [...(filter[key] ?? []), ...items];
        break;
      }
      case '--from':
      case '--to': {
        const d = parseIsoDate(value(), flag);
        if (flag === '--from') filter.from = d;
        else filter.to = d;
        break;
      }
      case '--limit': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) throw new UsageError(`--limit must be a positive integer, not ${JSON.stringify(v)}`);
        limit = Number(v);
        break;
      }
      default:
        throw new UsageError(arg.startsWith('-') ? `unknown option ${JSON.stringify(flag)}` : `unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  if (filter.from && filter.to && filter.from.getTime() >= filter.to.getTime()) {
    throw new UsageError(`--from (${filter.from.toISOString()}) must be before --to (${filter.to.toISOString()})`);
  }
  return { help: false, options: { filter, dryRun, ...(limit !== undefined ? { limit } : {}) } };
}

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * Only ISO-8601: Date.parse takes "03/04/2025" and "yesterday 5pm"-like strings in ways that
 * differ between engines. Without an offset the time is UTC, like the first-failure-time headers,
 * rather than whatever zone the operator's shell runs in.
 */
function parseIsoDate(text: string, flag: string): Date {
  const iso = text.trim().replace(' ', 'T').toUpperCase();
  const m = ISO_DATE.exec(iso);
  const fail = (): never => {
    throw new UsageError(`${flag} must be an ISO-8601 date or time (e.g. 2025-03-14 or 2025-03-14T09:30:00Z), not ${JSON.stringify(text)}`);
  };
  if (!m) return fail();
  const [, y, mo, d, h, mi, s] = m;
  const t = Date.parse(m[7] === undefined && h !== undefined ? `${iso}Z` : iso);
  if (Number.isNaN(t)) return fail();
  // Date.parse rolls 2025-02-30 over to March; a typo should not silently move the range.
  if (Number(mo) > 12 || Number(d) > daysIn(Number(y), Number(mo)) || Number(h ?? 0) > 23 || Number(mi ?? 0) > 59 || Number(s ?? 0) > 59) return fail();
  return new Date(t);
}

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function describeFilter(f: ReplayFilter): string {
  const parts: string[] = [];
  if (f.reasons?.length) parts.push(`reason ${f.reasons.join('|')}`);
  if (f.connectors?.length) parts.push(`connector ${f.connectors.join('|')}`);
  if (f.legs?.length) parts.push(`leg ${f.legs.join('|')}`);
  if (f.from) parts.push(`first failure >= ${f.from.toISOString()}`);
  if (f.to) parts.push(`first failure < ${f.to.toISOString()}`);
  return parts.length > 0 ? parts.join(', ') : 'every dead letter';
}

function summary(report: ReplayReport, opts: ReplayOptions, topic: string): string {
  const lines: string[] = [];
  const verb = opts.dryRun ? 'would replay' : 'replayed';
  lines.push(`${opts.dryRun ? 'DRY RUN, nothing written. ' : ''}dead-letter topic ${topic}: ${report.scanned} scanned, ${report.matched} matched (${describeFilter(opts.filter)})${opts.limit !== undefined && report.matched >= opts.limit ? `, stopped at --limit ${opts.limit}` : ''}`);
  lines.push(`${verb} ${report.replayed}; ${report.skippedNoTarget} skipped (no value or no topic to send them to)`);
  if (report.brazeRejected > 0) lines.push(`  ${report.brazeRejected} single Braze objects refused again by Braze: written back to the dead-letter topic`);
  if (report.skippedNewer > 0) lines.push(`  ${report.skippedNewer} attributes objects not sent: Braze has every attribute of them as new or newer (the attribute state)`);
  for (const [reason, n] of Object.entries(report.byReason).sort()) lines.push(`  reason ${reason}: ${n}`);
  for (const [target, n] of Object.entries(report.byTarget).sort()) lines.push(`  -> ${target}: ${n}`);
  lines.push(
    'The dead letters stay in the topic (Kafka cannot delete records): replaying them again sends them again. ' +
      'Amplitude drops duplicates by insert_id; Braze does not.',
  );
  return `${lines.join('\n')}\n`;
}

/** `replay`: exit code 0 when done, 2 on bad arguments, 1 when the replay stopped part-way. */
export async function runReplayCli(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseReplayArgs>;
  try {
    parsed = parseReplayArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`replay: ${err.message}\n\n${REPLAY_USAGE}`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(REPLAY_USAGE);
    return 0;
  }
  const config = loadConfig(process.env);
  // Logs go to stderr so stdout holds only the summary and its JSON line.
  const logger = createLogger(config.logLevel, process.stderr);
  const { options } = parsed;
  try {
    const report = await replayDeadLetters(config, options, logger);
    process.stdout.write(summary(report, options, config.topics.deadLetter));
    process.stdout.write(`${JSON.stringify({ dryRun: options.dryRun, ...report })}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ReplayFailedError)) throw err;
    process.stdout.write(summary(err.report, options, config.topics.deadLetter));
    process.stdout.write(`${JSON.stringify({ dryRun: options.dryRun, ...err.report, error: err.message })}\n`);
    process.stderr.write(`replay: ${err.message}\nThe ${err.report.replayed} records above were written; running again resends them.\n`);
    return 1;
  }
}
