import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { HealthRegistry, type PendingProbe } from '../../src/health/connector-health.js';
import { registerHealthMetrics } from '../../src/health/health-metrics.js';
import { Metrics } from '../../src/observability/metrics.js';

const T0 = Date.UTC(2024, 0, 1);

function setup() {
  const clock = new ManualClock(T0);
  const registry = new HealthRegistry(clock);
  const metrics = new Metrics({ defaultMetrics: false });
  return { clock, registry, metrics };
}

/** the value of one exposition line `name{labels} value`, label order as prom-client writes them */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function lines(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe('registerHealthMetrics', () => {
  it('exposes state, seconds since success, pending and oldest age per connector, from live state at scrape time', async () => {
    const { clock, registry, metrics } = setup();
    const braze = registry.connector('braze', 'braze');
    const amp = registry.connector('amplitude', 'amplitude');
    let ampPending: PendingProbe = { count: 0 };
    amp.setPendingProbe(() => ampPending);
    registerHealthMetrics(metrics, registry);

    braze.recordSuccess(10);
    clock.advance(90_000);
    ampPending = { count: 42, oldestMs: T0 + 30_000 };
    amp.recordFailure('auth', 'Invalid API key');

    let text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_state{connector="braze",state="idle"}')).toBe(1);
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="failing"}')).toBe(1);
    for (const state of ['healthy', 'idle', 'degraded', 'expired']) {
      expect(sample(text, `gateway_connector_state{connector="amplitude",state="${state}"}`)).toBe(0);
    }
    expect(lines(text, 'gateway_connector_state')).toHaveLength(10);
    expect(sample(text, 'gateway_connector_seconds_since_last_success{connector="braze"}')).toBe(90);
    // never succeeded: the age of its oldest pending event
    expect(sample(text, 'gateway_connector_seconds_since_last_success{connector="amplitude"}')).toBe(60);
    expect(sample(text, 'gateway_connector_pending_events{connector="amplitude"}')).toBe(42);
    expect(sample(text, 'gateway_connector_pending_events{connector="braze"}')).toBe(0);
    expect(sample(text, 'gateway_connector_oldest_pending_age_seconds{connector="amplitude"}')).toBe(60);
    expect(sample(text, 'gateway_connector_oldest_pending_age_seconds{connector="braze"}')).toBe(0);
    expect(text).not.toMatch(/NaN/);

    // the next scrape sees the change: the gauges are not left at their old values
    amp.recordSuccess(42);
    ampPending = { count: 0 };
    clock.advance(5_000);
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="failing"}')).toBe(0);
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="idle"}')).toBe(1);
    expect(sample(text, 'gateway_connector_seconds_since_last_success{connector="amplitude"}')).toBe(5);
    expect(sample(text, 'gateway_connector_pending_events{connector="amplitude"}')).toBe(0);
    expect(sample(text, 'gateway_connector_oldest_pending_age_seconds{connector="amplitude"}')).toBe(0);
  });

  it('never succeeded and nothing pending: seconds since the metrics were registered', async () => {
    const { clock, registry, metrics } = setup();
    registry.connector('cohorts', 'cohorts');
    registerHealthMetrics(metrics, registry);
    clock.advance(12_000);
    const text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_seconds_since_last_success{connector="cohorts"}')).toBe(12);
  });

  it('shows the expired state after the drop window', async () => {
    const { registry, metrics } = setup();
    const amp = registry.connector('amplitude', 'amplitude');
    registerHealthMetrics(metrics, registry);
    amp.recordFailure('auth', 'Invalid API key');
    amp.markExpired();
    const text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="expired"}')).toBe(1);
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="failing"}')).toBe(0);
  });

  it('zero-initialises the drop-window counter for connectors present at registration and added later', async () => {
    const { registry, metrics } = setup();
    registry.connector('braze', 'braze');
    const hm = registerHealthMetrics(metrics, registry);

    let text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_drop_window_expired_total{connector="braze"}')).toBe(0);
    expect(text).toMatch(/# TYPE gateway_drop_window_expired_total counter/);

    // registered after the metrics: it still gets its 0 before the first increment
    registry.connector('amplitude', 'amplitude');
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_drop_window_expired_total{connector="amplitude"}')).toBe(0);
    expect(sample(text, 'gateway_connector_state{connector="amplitude",state="idle"}')).toBe(1);

    // and by hand, for a connector the registry does not know (yet)
    hm.initConnector('cohorts');
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_drop_window_expired_total{connector="cohorts"}')).toBe(0);

    hm.dropWindowExpired.inc({ connector: 'amplitude' }, 17);
    hm.initConnector('amplitude'); // idempotent: does not reset
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_drop_window_expired_total{connector="amplitude"}')).toBe(17);
    expect(sample(text, 'gateway_drop_window_expired_total{connector="braze"}')).toBe(0);
    expect(await metrics.value('gateway_drop_window_expired_total', { connector: 'amplitude' })).toBe(17);
  });

  it('with no connectors at all, the metrics are declared but have no series', async () => {
    const { metrics, registry } = setup();
    registerHealthMetrics(metrics, registry);
    const text = await metrics.registry.metrics();
    for (const name of ['gateway_connector_state', 'gateway_connector_seconds_since_last_success', 'gateway_connector_pending_events', 'gateway_connector_oldest_pending_age_seconds', 'gateway_drop_window_expired_total']) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(lines(text, 'gateway_connector_state')).toHaveLength(0);
  });

  it('reads each connector once per scrape', async () => {
    const { registry, metrics } = setup();
    const amp = registry.connector('amplitude', 'amplitude');
    let probes = 0;
    amp.setPendingProbe(() => {
      probes++;
      return { count: 1, oldestMs: T0 };
    });
    registerHealthMetrics(metrics, registry);
    await metrics.registry.metrics();
    expect(probes).toBe(1);
    await metrics.registry.metrics();
    expect(probes).toBe(2);
  });

  it('exposes the recent rejection ratio and recent outcomes, and the state they make', async () => {
    const { registry, metrics, clock } = setup();
    const braze = registry.connector('braze', 'braze');
    registerHealthMetrics(metrics, registry);
    let text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_rejection_ratio{connector="braze"}')).toBe(0);
    braze.recordSuccess(20);
    braze.recordDeadLettered(60, 'rejected_by_destination');
    braze.recordDeadLettered(5, 'no_identifier'); // bad input: not the destination's doing
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_rejection_ratio{connector="braze"}')).toBe(0.75);
    expect(sample(text, 'gateway_connector_recent_events{connector="braze",outcome="delivered"}')).toBe(20);
    expect(sample(text, 'gateway_connector_recent_events{connector="braze",outcome="rejected"}')).toBe(60);
    expect(sample(text, 'gateway_connector_state{connector="braze",state="degraded"}')).toBe(1);
    clock.advance(10 * 60_000);
    text = await metrics.registry.metrics();
    expect(sample(text, 'gateway_connector_rejection_ratio{connector="braze"}')).toBe(0);
    expect(sample(text, 'gateway_connector_state{connector="braze",state="idle"}')).toBe(1);
  });
});
