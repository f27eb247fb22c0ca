/**
 * Watches every connector's derived state and notifies when one turns `failing` (refused
 * credentials, a configuration no retry fixes) or `expired` (the drop window moved its events
 * away), and when it leaves that state again. States are derived at read time
 * (ConnectorHealth.snapshot), so this polls them. A connector first seen failing (a bad key from
 * the start, or a failure restored from the state topic) is notified too: once per process.
 */
import type { ConnectorState, HealthRegistry } from './connector-health.js';
import type { Notifier } from './notify.js';

export interface ConnectorStateWatch {
  /** one pass now (tests; the timer runs it every interval) */
  check(): void;
  stop(): void;
}

export function watchConnectorStates(registry: HealthRegistry, notifier: Notifier, intervalMs: number): ConnectorStateWatch {
  const last = new Map<string, ConnectorState>();
  const check = (): void => {
    for (const s of registry.snapshots()) {
      const prev = last.get(s.name) ?? 'idle';
      last.set(s.name, s.state);
      if (prev === s.state) continue;
      const now = registry.clock.now();
      if (s.state === 'failing' || s.state === 'expired') {
        notifier.notify({
          event: s.state === 'failing' ? 'connector_failing' : 'connector_expired',
          subject: s.name,
          text:
            s.state === 'failing'
              ? `Connector ${s.name} is failing: ${s.lastError ?? s.lastErrorClass ?? 'refused'}. Nothing is dropped; it resumes by itself once the cause is fixed.`
              : `Connector ${s.name} expired: events older than the drop window were moved to the dead-letter topic (replay them with \`replay --reason drop_window_expired\`).`,
          details: { state: s.state, previous: prev, lastError: s.lastError ?? null, pending: s.pending },
          atMs: now,
        });
      } else if (prev === 'failing' || prev === 'expired') {
        notifier.notify({ event: 'sync_recovered', subject: s.name, text: `Connector ${s.name} recovered: ${prev} -> ${s.state}.`, details: { state: s.state, previous: prev }, atMs: now });
      }
    }
  };
  const timer = setInterval(check, intervalMs);
  timer.unref();
  check();
  return { check, stop: () => clearInterval(timer) };
}
