/**
 * Which events leave for Braze: the allow/deny filter on event_type, and loop prevention (events
 * that came from Braze through the inbound leg must not be sent back to Braze).
 *
 * Both are compiled once per configuration: the predicates run on every message.
 */
import type { EventFilter, LoopPrevention } from './mapping-config.js';
import type { AmplitudeInEvent } from './amplitude-event.js';

export type EventTypePredicate = (eventType: string) => boolean;

const REGEXP_SPECIALS = /[.+^${}()|[\]\\]/g;

/** `*` matches any run of characters (including none), `?` exactly one; everything else is literal. */
export function wildcardToRegExpSource(pattern: string): string {
  return pattern.replace(REGEXP_SPECIALS, '\\$&').replace(/\*/g, '[\\s\\S]*').replace(/\?/g, '[\\s\\S]');
}

interface CompiledPatterns {
  exact: Set<string>;
  wildcard: RegExp | undefined;
  empty: boolean;
}

function compilePatterns(patterns: readonly string[]): CompiledPatterns {
  const exact = new Set<string>();
  const sources: string[] = [];
  for (const p of patterns) {
    if (p.includes('*') || p.includes('?')) sources.push(wildcardToRegExpSource(p));
    else exact.add(p);
  }
  // One alternation instead of a RegExp per pattern: a single scan per event type.
  const wildcard = sources.length > 0 ? new RegExp(`^(?:${sources.join('|')})$`) : undefined;
  return { exact, wildcard, empty: patterns.length === 0 };
}

function matches(c: CompiledPatterns, eventType: string): boolean {
  return c.exact.has(eventType) || (c.wildcard !== undefined && c.wildcard.test(eventType));
}

/**
 * Event types are matched case-sensitively, as Amplitude treats them. Deny wins over allow; an
 * empty allow list lets every event type through.
 */
export function compileEventFilter(filter: EventFilter): EventTypePredicate {
  const allow = compilePatterns(filter.allow);
  const deny = compilePatterns(filter.deny);
  if (allow.empty && deny.empty) return () => true;
  if (allow.empty) return (t) => !matches(deny, t);
  if (deny.empty) return (t) => matches(allow, t);
  return (t) => !matches(deny, t) && matches(allow, t);
}

export type BrazeOriginDetector = (ev: Pick<AmplitudeInEvent, 'eventType' | 'library'>) => boolean;

/**
 * Classifies only; whether loop prevention is switched on (`enabled`) is the caller's decision.
 */
export function compileBrazeOriginDetector(lp: LoopPrevention): BrazeOriginDetector {
  const libraries = new Set<string>();
  const libraryLengths = new Set<number>();
  for (const l of lp.libraries) {
    if (l.length === 0) continue;
    libraries.add(l.toLowerCase());
    libraryLengths.add(l.length);
  }
  // An empty prefix would match every event and silently stop the whole leg.
  const prefixes = lp.eventTypePrefixes.filter((p) => p.length > 0);
  return (ev) => {
    const lib = ev.library;
    // The length check spares a toLowerCase allocation for the usual non-Braze library string.
    if (lib !== undefined && libraryLengths.has(lib.length) && libraries.has(lib.toLowerCase())) return true;
    for (let i = 0; i < prefixes.length; i++) {
      if (ev.eventType.startsWith(prefixes[i]!)) return true;
    }
    return false;
  };
}

const detectorCache = new WeakMap<LoopPrevention, BrazeOriginDetector>();

/**
 * True when the event came from Braze: its `library` equals one of `lp.libraries`
 * (case-insensitively) or its event_type starts with one of `lp.eventTypePrefixes`.
 * Ignores `lp.enabled`. The compiled form is cached per settings object.
 */
export function isBrazeOriginated(ev: Pick<AmplitudeInEvent, 'eventType' | 'library'>, lp: LoopPrevention): boolean {
  let detect = detectorCache.get(lp);
  if (detect === undefined) {
    detect = compileBrazeOriginDetector(lp);
    detectorCache.set(lp, detect);
  }
  return detect(ev);
}
