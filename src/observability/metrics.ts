import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** one process's series, as `registry.getMetricsAsJSON()` gives them */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export type Leg = 'outbound' | 'inbound' | 'cohorts';

/**
 * All metrics live on one registry per gateway instance (not prom-client's global one), so tests
 * can run several gateways in one process and read each one's figures. Label values are always
 * from closed sets (legs, reasons, status codes): never keys, ids or URLs.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly consumed = new Counter({ name: 'gateway_events_consumed_total', help: 'events read from Kafka', labelNames: ['leg'] as const, registers: [this.registry] });
  readonly delivered = new Counter({ name: 'gateway_events_delivered_total', help: 'events accepted by the destination', labelNames: ['leg'] as const, registers: [this.registry] });
  readonly skipped = new Counter({ name: 'gateway_events_skipped_total', help: 'events deliberately not sent (filters, loop prevention)', labelNames: ['leg', 'reason'] as const, registers: [this.registry] });
  readonly deadLettered = new Counter({ name: 'gateway_events_dead_lettered_total', help: 'events written to the dead-letter topic', labelNames: ['leg', 'reason'] as const, registers: [this.registry] });
  readonly adjustments = new Counter({ name: 'gateway_mapping_adjustments_total', help: 'values cut or dropped to meet the destination\'s constraints', labelNames: ['leg', 'kind', 'rule'] as const, registers: [this.registry] });
  readonly attributeWritesSaved = new Counter({ name: 'gateway_attribute_writes_saved_total', help: 'Braze attribute writes not sent: the value is unchanged since last sent, the event is older than the one it was last sent from, or a $setOnce attribute the user already has', registers: [this.registry] });
  readonly requests = new Counter({ name: 'gateway_destination_requests_total', help: 'HTTP requests to a destination, by status (0: network error or timeout)', labelNames: ['destination', 'status'] as const, registers: [this.registry] });
  readonly requestDuration = new Histogram({
    name: 'gateway_destination_request_duration_seconds',
    help: 'destination request latency',
    labelNames: ['destination'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: 'gateway_batch_size',
    help: 'objects per destination request',
    labelNames: ['destination'] as const,
    buckets: [1, 5, 10, 25, 50, 75, 100, 150, 225, 500, 1000, 2000],
    registers: [this.registry],
  });
  readonly retries = new Counter({ name: 'gateway_destination_retries_total', help: 'requests retried, by failure class', labelNames: ['destination', 'class'] as const, registers: [this.registry] });
  readonly backoffSeconds = new Gauge({ name: 'gateway_destination_backoff_seconds', help: 'current destination-wide back-off', labelNames: ['destination'] as const, registers: [this.registry] });
  private readonly collectors: Array<() => void> = [];
  /** gauges below are refreshed from live state at scrape time, so they are never stale */
  private readonly refresh = (): void => {
    for (const c of this.collectors) c();
  };
  readonly inFlight = new Gauge({ name: 'gateway_in_flight_events', help: 'events read but not yet delivered or dead-lettered', labelNames: ['leg'] as const, registers: [this.registry], collect: this.refresh });
  readonly lastSuccess = new Gauge({ name: 'gateway_connector_last_success_timestamp_seconds', help: 'time of the connector\'s last successful delivery', labelNames: ['connector'] as const, registers: [this.registry], collect: this.refresh });
  readonly currentsRequests = new Counter({ name: 'gateway_currents_requests_total', help: 'POST /currents requests by answer status', labelNames: ['status'] as const, registers: [this.registry] });
  readonly currentsEvents = new Counter({ name: 'gateway_currents_events_total', help: 'Currents events received, by outcome (stored, dead_lettered)', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly limiterDecisions = new Counter({ name: 'gateway_limiter_decisions_total', help: 'per-id rate and quota decisions on the Amplitude leg (allow, wait, quota)', labelNames: ['decision'] as const, registers: [this.registry] });
  readonly limiterParked = new Counter({ name: 'gateway_limiter_parked_total', help: 'events parked in the retry topic, by reason (rate_limit, daily_quota)', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly limiterTracked = new Gauge({ name: 'gateway_limiter_tracked_identities', help: 'ids with live rate state', registers: [this.registry], collect: this.refresh });
  readonly limiterAboveQuota = new Gauge({ name: 'gateway_limiter_identities_above_quota_threshold', help: 'ids above 80% of their daily quota', registers: [this.registry], collect: this.refresh });
  readonly commits = new Counter({ name: 'gateway_offset_commits_total', help: 'offset commits', labelNames: ['leg'] as const, registers: [this.registry] });
  readonly consumerRestarts = new Counter({ name: 'gateway_consumer_restarts_total', help: 'consumers the gateway restarted after a crash kafkajs does not recover from', labelNames: ['leg'] as const, registers: [this.registry] });

  /** registers a function that sets gauges from live state before each scrape */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  private others: (() => Promise<Array<{ worker: string; metrics: MetricsJson }>>) | undefined;

  /**
   * With GATEWAY_WORKERS > 1, /metrics is served by the primary alone: it adds each child's
   * series to its own, every series labelled `worker` ("0" for the primary), so nothing is summed
   * that should not be and each process can be told apart.
   */
  includeWorkers(source: () => Promise<Array<{ worker: string; metrics: MetricsJson }>>): void {
    this.others = source;
  }

  /** the text /metrics answers */
  async exposition(): Promise<string> {
    if (!this.others) return this.registry.metrics();
    const [own, children] = await Promise.all([this.registry.getMetricsAsJSON(), this.others()]);
    const all = [{ worker: '0', metrics: own }, ...children].map(({ worker, metrics }) =>
      // every label set is unique once it has its worker (a series that names a worker itself, like
      // the primary's per-child restarts, keeps its own), so 'sum' merges nothing: it only
      // overrides aggregators such as 'omit' that prom-client sets on some default metrics
      metrics.map((m) => ({ ...m, aggregator: 'sum', values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker: v.labels.worker ?? worker } })) })),
    );
    return AggregatorRegistry.aggregate(all).metrics();
  }

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'gateway_process_' });
  }

  /** current value of a counter or gauge (summed over label sets matching `labels`), for tests and the demo summary */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const data = await metric.get();
    let sum = 0;
    for (const v of data.values) {
      const l = v.labels as Record<string, string | number>;
      if (Object.entries(labels).every(([k, want]) => String(l[k]) === want)) sum += v.value;
    }
    return sum;
  }
}
