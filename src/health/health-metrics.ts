import { Counter, Gauge } from 'prom-client';
import type { Metrics } from '../observability/metrics.js';
import { CONNECTOR_STATES, type ConnectorSnapshot, type HealthRegistry } from './connector-health.js';

export interface HealthMetrics {
  /** events moved to the dead-letter topic by the drop window, per connector */
  dropWindowExpired: Counter<'connector'>;
  /** makes the connector's expired counter exist at 0, so `increase()` sees its first real step */
  initConnector(name: string): void;
}

const STATES = CONNECTOR_STATES;

/**
 * Connector health as Prometheus series (the names are a contract with grafana/dashboards and
 * grafana/alerts.yml). The gauges are filled from `registry.snapshots()` at scrape time, so they
 * can never lag behind the connectors they describe. They describe this instance only (each
 * instance is scraped on its own; sum or max over `instance` in PromQL), where /connectors merges
 * every instance.
 *
 * `gateway_connector_seconds_since_last_success` is never absent or NaN, because the alert rules
 * compare it with a threshold and a missing series would silently never fire. For a connector that
 * has never succeeded it is the age of its oldest pending event (the same span the drop window
 * measures, so the 24/36/44 h alerts track the window); with nothing pending either, it is the time
 * since these metrics were registered, i.e. since the gateway started watching.
 */
export function registerHealthMetrics(metrics: Metrics, registry: HealthRegistry): HealthMetrics {
  const registers = [metrics.registry];
  const startedMs = registry.clock.now();

  // Each gauge's collect runs on every scrape; one scrape calls them all synchronously in a row,
  // so one set of snapshots (whose pending probes may walk large maps) serves the whole scrape.
  let cached: ConnectorSnapshot[] | undefined;
  const snapshots = (): ConnectorSnapshot[] => {
    if (cached === undefined) {
      cached = registry.snapshots();
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };

  new Gauge({
    name: 'gateway_connector_state',
    help: 'connector state: 1 for the current one (healthy, idle, degraded, failing, expired), 0 for the others',
    labelNames: ['connector', 'state'] as const,
    registers,
    collect(this: Gauge<'connector' | 'state'>) {
      this.reset();
      for (const s of snapshots()) for (const state of STATES) this.set({ connector: s.name, state }, s.state === state ? 1 : 0);
    },
  });

  new Gauge({
    name: 'gateway_connector_seconds_since_last_success',
    help: 'seconds since the connector last delivered; if it never has, the age of its oldest pending event, else seconds since the gateway started watching',
    labelNames: ['connector'] as const,
    registers,
    collect(this: Gauge<'connector'>) {
      this.reset();
      const now = registry.clock.now();
      for (const s of snapshots()) {
        const ms = s.lastSuccessMs !== undefined ? now - s.lastSuccessMs : s.oldestPendingAgeMs ?? now - startedMs;
        this.set({ connector: s.name }, Math.max(0, ms) / 1000);
      }
    },
  });

  new Gauge({
    name: 'gateway_connector_pending_events',
    help: 'events read for the connector and not yet delivered or dead-lettered',
    labelNames: ['connector'] as const,
    registers,
    collect(this: Gauge<'connector'>) {
      this.reset();
      for (const s of snapshots()) this.set({ connector: s.name }, s.pending);
    },
  });

  new Gauge({
    name: 'gateway_connector_oldest_pending_age_seconds',
    help: 'age of the connector\'s oldest undelivered event (0 when nothing is pending)',
    labelNames: ['connector'] as const,
    registers,
    collect(this: Gauge<'connector'>) {
      this.reset();
      for (const s of snapshots()) this.set({ connector: s.name }, (s.oldestPendingAgeMs ?? 0) / 1000);
    },
  });

  new Gauge({
    name: 'gateway_connector_rejection_ratio',
    help: 'share of the events this instance finished for the connector over the recent window (HEALTH_REJECTION_WINDOW_MS) that the destination rejected (dead-lettered); 0 when none finished',
    labelNames: ['connector'] as const,
    registers,
    collect(this: Gauge<'connector'>) {
      this.reset();
      for (const s of snapshots()) this.set({ connector: s.name }, s.recent.rejectionRatio);
    },
  });

  new Gauge({
    name: 'gateway_connector_recent_events',
    help: 'events this instance finished for the connector over the recent window (HEALTH_REJECTION_WINDOW_MS), by outcome: delivered, or rejected by the destination',
    labelNames: ['connector', 'outcome'] as const,
    registers,
    collect(this: Gauge<'connector' | 'outcome'>) {
      this.reset();
      for (const s of snapshots()) {
        this.set({ connector: s.name, outcome: 'delivered' }, s.recent.delivered);
        this.set({ connector: s.name, outcome: 'rejected' }, s.recent.rejected);
      }
    },
  });

  const dropWindowExpired = new Counter({
    name: 'gateway_drop_window_expired_total',
    help: 'events moved to the dead-letter topic (reason drop_window_expired) after the connector went the whole drop window without a success',
    labelNames: ['connector'] as const,
    registers,
    // connectors registered after this function ran still get their 0 before their first increment
    collect() {
      for (const c of registry.all()) initConnector(c.name);
    },
  });
  // adding 0 is idempotent, and unlike a "done" set it also survives a reset() of the counter
  const initConnector = (name: string): void => {
    dropWindowExpired.inc({ connector: name }, 0);
  };
  for (const c of registry.all()) initConnector(c.name);

  return { dropWindowExpired, initConnector };
}
