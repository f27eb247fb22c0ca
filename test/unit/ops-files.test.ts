/**
 * The operations files (Dockerfile, docker-compose.yml, .env.example, Prometheus config and alert
 * rules, Grafana provisioning and dashboard) checked against each other and against the code:
 * every metric a query names exists, every env var the gateway reads is in .env.example, the
 * compose topics match the gateway's defaults. No Docker or Prometheus needed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/config.js';
import { Metrics } from '../../src/observability/metrics.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (rel: string): string => readFileSync(join(root, rel), 'utf8');
const yamlFile = (rel: string): unknown => parseYaml(read(rel));

type Obj = Record<string, unknown>;
function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function obj(v: unknown, what: string): Obj {
  if (!isObj(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}
function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a list, got ${JSON.stringify(v)}`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

// ------------------------------------------------------------------------------------------
// The metric contract (src/observability/metrics.ts and the modules that add to it).

const COUNTERS = [
  'gateway_events_consumed_total',
  'gateway_events_delivered_total',
  'gateway_events_skipped_total',
  'gateway_events_dead_lettered_total',
  'gateway_mapping_adjustments_total',
  'gateway_destination_requests_total',
  'gateway_destination_retries_total',
  'gateway_offset_commits_total',
  'gateway_drop_window_expired_total',
  'gateway_limiter_decisions_total',
  'gateway_limiter_parked_total',
  'gateway_currents_requests_total',
  'gateway_currents_events_total',
  'gateway_worker_restarts_total',
];
const HISTOGRAMS = ['gateway_destination_request_duration_seconds', 'gateway_batch_size'];
const GAUGES = [
  'gateway_destination_backoff_seconds',
  'gateway_in_flight_events',
  'gateway_connector_last_success_timestamp_seconds',
  'gateway_connector_state',
  'gateway_connector_seconds_since_last_success',
  'gateway_connector_pending_events',
  'gateway_connector_oldest_pending_age_seconds',
  'gateway_limiter_tracked_identities',
  'gateway_limiter_identities_above_quota_threshold',
  'gateway_workers_up',
];
const EXPECTED_TYPE = new Map<string, string>([
  ...COUNTERS.map((n) => [n, 'counter'] as [string, string]),
  ...HISTOGRAMS.map((n) => [n, 'histogram'] as [string, string]),
  ...GAUGES.map((n) => [n, 'gauge'] as [string, string]),
]);

/**
 * The process metrics are whatever prom-client's default collectors register under the prefix the
 * gateway gives them, so they are read from a live registry rather than listed here (with the
 * prefix `gateway_process_` the CPU counter is `gateway_process_process_cpu_seconds_total`).
 */
async function registryMetrics(): Promise<Array<{ name: string; type: string }>> {
  const metrics = new Metrics();
  const json = await metrics.registry.getMetricsAsJSON();
  return json.map((m) => ({ name: m.name, type: String(m.type) }));
}

async function knownMetrics(): Promise<{ names: Set<string>; histograms: Set<string> }> {
  const names = new Set<string>(EXPECTED_TYPE.keys());
  const histograms = new Set<string>(HISTOGRAMS);
  for (const m of await registryMetrics()) {
    if (!m.name.startsWith('gateway_process_')) continue;
    names.add(m.name);
    if (m.type === 'histogram') histograms.add(m.name);
  }
  return { names, histograms };
}

function metricNamesIn(expr: string): string[] {
  return [...new Set(expr.match(/gateway_[a-z0-9_]+/g) ?? [])];
}

function unknownMetrics(expr: string, known: { names: Set<string>; histograms: Set<string> }): string[] {
  return metricNamesIn(expr).filter((name) => {
    if (known.names.has(name)) return false;
    const m = /^(.*)_(bucket|sum|count)$/.exec(name);
    return !(m?.[1] !== undefined && known.histograms.has(m[1]));
  });
}

// ------------------------------------------------------------------------------------------
// The settings contract.

const ENV_VARS = [
  'KAFKA_BROKERS', 'KAFKA_CLIENT_ID', 'KAFKA_GROUP_ID', 'KAFKA_SSL', 'KAFKA_SSL_CA_FILE',
  'KAFKA_SSL_REJECT_UNAUTHORIZED', 'KAFKA_SASL_MECHANISM', 'KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD',
  'KAFKA_FETCH_MAX_WAIT_MS', 'KAFKA_SESSION_TIMEOUT_MS', 'KAFKA_COMMIT_INTERVAL_MS',
  'TOPIC_AMPLITUDE_EVENTS', 'TOPIC_BRAZE_CURRENTS', 'TOPIC_DEAD_LETTER', 'TOPIC_RETRY', 'TOPIC_STATE',
  'BRAZE_REST_ENDPOINT', 'BRAZE_API_KEY', 'BRAZE_APP_ID', 'BRAZE_UPDATE_EXISTING_ONLY', 'BRAZE_MAX_PER_ARRAY',
  'BRAZE_MAX_OBJECTS_PER_REQUEST', 'BRAZE_MAX_REQUEST_BYTES', 'BRAZE_LINGER_MS', 'BRAZE_RATE_LIMIT_REQUESTS',
  'BRAZE_RATE_LIMIT_WINDOW_MS', 'BRAZE_CONCURRENCY', 'BRAZE_REQUEST_TIMEOUT_MS', 'BRAZE_RETRY_BASE_MS',
  'BRAZE_RETRY_MAX_MS', 'BRAZE_AUTH_RETRY_MS', 'BRAZE_MAX_IN_FLIGHT_EVENTS',
  'OUTBOUND_IDENTIFIERS', 'OUTBOUND_EVENTS_ALLOW', 'OUTBOUND_EVENTS_DENY', 'OUTBOUND_LOOP_PREVENTION',
  'OUTBOUND_LOOP_LIBRARIES', 'OUTBOUND_LOOP_EVENT_PREFIXES', 'OUTBOUND_SEND_USER_PROPERTIES',
  'OUTBOUND_REVENUE_AS', 'OUTBOUND_DEFAULT_CURRENCY',
  'AMPLITUDE_API_KEY', 'AMPLITUDE_SECRET_KEY', 'AMPLITUDE_REGION', 'AMPLITUDE_HTTP_API_URL', 'AMPLITUDE_API_URL',
  'CURRENTS_TOKEN', 'HTTP_PORT', 'HTTP_HOST', 'LOG_LEVEL', 'GATEWAY_CONFIG',
  'ADMIN_HTTP_PORT', 'ADMIN_HTTP_HOST', 'HTTPS_CERT_FILE', 'HTTPS_KEY_FILE',
];
const SECRETS = ['KAFKA_SASL_PASSWORD', 'BRAZE_API_KEY', 'AMPLITUDE_API_KEY', 'AMPLITUDE_SECRET_KEY', 'CURRENTS_TOKEN'];

/** KEY=value lines of a dotenv file (comments and blank lines skipped; no quoting used there). */
function parseDotenv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m?.[1] !== undefined) out.set(m[1], (m[2] ?? '').trim());
  }
  return out;
}

const SERVICE_NAMES = ['kafka', 'kafka-init', 'gateway', 'prometheus', 'grafana'];
const TOPICS: Array<{ env: string; name: string; partitions: number; compact: boolean }> = [
  { env: 'TOPIC_AMPLITUDE_EVENTS', name: 'amplitude.events', partitions: 6, compact: false },
  { env: 'TOPIC_BRAZE_CURRENTS', name: 'braze.currents', partitions: 6, compact: false },
  { env: 'TOPIC_DEAD_LETTER', name: 'gateway.dead-letter', partitions: 3, compact: false },
  { env: 'TOPIC_RETRY', name: 'gateway.retry', partitions: 6, compact: false },
  { env: 'TOPIC_STATE', name: 'gateway.state', partitions: 1, compact: true },
  { env: 'TOPIC_COHORTS', name: 'gateway.cohorts', partitions: 3, compact: true },
  { env: 'TOPIC_RETRY_QUOTA', name: 'gateway.retry.quota', partitions: 6, compact: false },
  { env: 'TOPIC_LIMITS', name: 'gateway.limits', partitions: 6, compact: true },
  { env: 'TOPIC_ATTRIBUTE_STATE', name: 'gateway.attribute-state', partitions: 6, compact: true },
];

function composeServices(): Obj {
  return obj(obj(yamlFile('docker-compose.yml'), 'docker-compose.yml').services, 'services');
}
function service(name: string): Obj {
  return obj(composeServices()[name], `service ${name}`);
}
/** short-syntax volume strings of a service, as [host, container] pairs */
function binds(svc: Obj, what: string): Array<[string, string]> {
  return arr(svc.volumes ?? [], `${what}.volumes`).map((v) => {
    const [host, container] = str(v, `${what}.volumes[]`).split(':');
    return [host ?? '', container ?? ''];
  });
}
function envOf(svc: Obj, what: string): Obj {
  const env = svc.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e) => {
      const s = str(e, `${what}.environment[]`);
      const i = s.indexOf('=');
      return [s.slice(0, i), s.slice(i + 1)];
    }));
  }
  return obj(env ?? {}, `${what}.environment`);
}
function portsOf(svc: Obj, what: string): string[] {
  return arr(svc.ports ?? [], `${what}.ports`).map((p) => String(p));
}

// ------------------------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('defines the five services', () => {
    expect(Object.keys(composeServices())).toEqual(expect.arrayContaining(SERVICE_NAMES));
  });

  it('runs Kafka in KRaft mode with a listener for the compose network and one for the host', () => {
    const kafka = service('kafka');
    expect(kafka.image).toBe('apache/kafka:3.8.0');
    const env = envOf(kafka, 'kafka');
    expect(String(env.KAFKA_PROCESS_ROLES).split(',').map((s) => s.trim()).sort()).toEqual(['broker', 'controller']);
    expect(env.CLUSTER_ID).toBeTruthy();
    const advertised = String(env.KAFKA_ADVERTISED_LISTENERS);
    expect(advertised).toContain('//kafka:9092');
    expect(advertised).toContain('//localhost:29092');
    expect(portsOf(kafka, 'kafka')).toContain('127.0.0.1:29092:29092');
    expect(kafka.healthcheck).toBeDefined();
  });

  it('creates every topic the gateway uses, under its default names, with their partitions and policies', () => {
    const init = service('kafka-init');
    expect(init.image).toBe(service('kafka').image);
    const script = [...arr(init.entrypoint ?? [], 'entrypoint'), ...arr(init.command, 'command')].map(String).join('\n');
    expect(script).toContain('/opt/kafka/bin/kafka-topics.sh');
    const created = new Map<string, { name: string; args: string }>();
    for (const m of script.matchAll(/^\s*create\s+"\$\{(TOPIC_[A-Z_]+):-([^}]+)\}"\s+(.*)$/gm)) {
      created.set(m[1] ?? '', { name: m[2] ?? '', args: m[3] ?? '' });
    }
    const defaults = loadConfig({ KAFKA_BROKERS: 'localhost:9092' }).topics;
    const defaultNames = new Set(Object.values(defaults));
    expect([...created.keys()].sort()).toEqual(TOPICS.map((t) => t.env).sort());
    // a topic the gateway gains must be created here too
    expect([...defaultNames].sort()).toEqual(TOPICS.map((t) => t.name).sort());
    for (const t of TOPICS) {
      const c = created.get(t.env);
      expect(c, t.env).toBeDefined();
      expect(c?.name, t.env).toBe(t.name);
      expect(defaultNames.has(t.name), `${t.name} is a gateway default`).toBe(true);
      expect(c?.args, t.env).toMatch(new RegExp(`--partitions\\s+${t.partitions}(\\s|$)`));
      expect(/--config\s+cleanup\.policy=compact/.test(c?.args ?? ''), `${t.env} compacted`).toBe(t.compact);
    }
    expect(script).toContain('--if-not-exists');
  });

  it('builds the gateway from the Dockerfile, with .env optional, the compose broker and the admin port apart', () => {
    const gw = service('gateway');
    const build = gw.build;
    const context = typeof build === 'string' ? build : obj(build, 'gateway.build').context;
    expect(context).toBe('.');
    const envFiles = arr(gw.env_file, 'gateway.env_file');
    expect(envFiles).toContainEqual({ path: '.env', required: false });
    expect(envOf(gw, 'gateway').KAFKA_BROKERS).toBe('kafka:9092');
    expect(portsOf(gw, 'gateway')).toContain('0.0.0.0:8080:8080');
    expect(String(envOf(gw, 'gateway').ADMIN_HTTP_PORT)).toBe('8081');
    expect(envOf(gw, 'gateway').ADMIN_HTTP_HOST).toBe('0.0.0.0');
    expect(portsOf(gw, 'gateway')).toContain('127.0.0.1:8081:8081');
    const deps = obj(gw.depends_on, 'gateway.depends_on');
    expect(obj(deps['kafka-init'], 'depends_on.kafka-init').condition).toBe('service_completed_successfully');
  });

  it('mounts the Prometheus config next to its rule file and exposes 9090 on loopback', () => {
    const prom = service('prometheus');
    expect(str(prom.image, 'prometheus.image')).toMatch(/^prom\/prometheus(:|$)/);
    const mounts = new Map(binds(prom, 'prometheus').map(([h, c]) => [h, c]));
    expect(mounts.get('./grafana/prometheus.yml')).toBe('/etc/prometheus/prometheus.yml');
    expect(mounts.get('./grafana/alerts.yml')).toBe('/etc/prometheus/alerts.yml');
    expect(portsOf(prom, 'prometheus')).toContain('127.0.0.1:9090:9090');
  });

  it('provisions Grafana with the dashboards folder, anonymous viewers only when asked for, and no default password', () => {
    const g = service('grafana');
    expect(str(g.image, 'grafana.image')).toMatch(/^grafana\/grafana(:|$)/);
    const env = envOf(g, 'grafana');
    expect(String(env.GF_AUTH_ANONYMOUS_ENABLED)).toBe('${GRAFANA_ANONYMOUS_ENABLED:-false}');
    expect(env.GF_AUTH_ANONYMOUS_ORG_ROLE).toBe('Viewer');
    expect(String(env.GF_SECURITY_ADMIN_PASSWORD)).toMatch(/^\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}$/);
    const mounts = new Map(binds(g, 'grafana').map(([h, c]) => [h, c]));
    expect(mounts.get('./grafana/provisioning')).toBe('/etc/grafana/provisioning');
    expect(mounts.get('./grafana/dashboards')).toBe('/var/lib/grafana/dashboards');
    expect(portsOf(g, 'grafana')).toContain('127.0.0.1:3000:3000');
  });

  it('bind-mounts only paths that exist in the repository', () => {
    for (const [name, svc] of Object.entries(composeServices())) {
      for (const [host] of binds(obj(svc, name), name)) {
        if (!host.startsWith('.')) continue; // named volume
        expect(existsSync(join(root, host)), `${name}: ${host}`).toBe(true);
      }
    }
  });
});

describe('Dockerfile and .dockerignore', () => {
  const dockerfile = read('Dockerfile');

  it('builds on node:20-bookworm-slim in two stages and runs the built CLI as `node`', () => {
    const froms = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    expect(dockerfile).toMatch(/npm ci\b[^\n]*\n(?:.*\n)*?RUN npm run build/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^EXPOSE 8080$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK [\s\S]*\/healthz/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", ?"dist\/src\/cli\.js"\]$/m);
    expect(dockerfile).toMatch(/^CMD \["run"\]$/m);
    const pkg = JSON.parse(read('package.json')) as { main?: string };
    expect(pkg.main).toBe('dist/src/cli.js');
  });

  it('keeps secrets and host artefacts out of the build context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const p of ['.env', 'node_modules', 'dist', '.git']) expect(ignored, p).toContain(p);
    for (const p of ['src', 'schemas', 'package.json', 'package-lock.json']) expect(ignored, p).not.toContain(p);
  });
});

describe('.env.example', () => {
  const env = parseDotenv(read('.env.example'));

  it('lists every setting the gateway reads', () => {
    const missing = ENV_VARS.filter((v) => !env.has(v));
    expect(missing).toEqual([]);
  });

  it('holds no secret values', () => {
    for (const s of SECRETS) expect(env.get(s), s).toBe('');
  });

  it('is a valid configuration as it stands', () => {
    expect(() => loadConfig(Object.fromEntries(env))).not.toThrow();
  });
});

describe('grafana/prometheus.yml', () => {
  const cfg = obj(yamlFile('grafana/prometheus.yml'), 'prometheus.yml');

  it('scrapes the gateway\'s admin port (gateway:8081/metrics) every 15 s and loads alerts.yml', () => {
    expect(arr(cfg.rule_files, 'rule_files')).toContain('alerts.yml');
    const jobs = arr(cfg.scrape_configs, 'scrape_configs').map((j) => obj(j, 'scrape_config'));
    const job = jobs.find((j) => j.job_name === 'amplitude-braze-gateway');
    expect(job).toBeDefined();
    if (!job) return;
    const interval = job.scrape_interval ?? obj(cfg.global ?? {}, 'global').scrape_interval;
    expect(interval).toBe('15s');
    expect(job.metrics_path ?? '/metrics').toBe('/metrics');
    const targets = arr(job.static_configs, 'static_configs').flatMap((s) => arr(obj(s, 'static_config').targets, 'targets'));
    expect(targets).toContain('gateway:8081');
  });
});

describe('grafana/alerts.yml', () => {
  const groups = arr(obj(yamlFile('grafana/alerts.yml'), 'alerts.yml').groups, 'groups').map((g) => obj(g, 'group'));
  const group = groups.find((g) => g.name === 'amplitude-braze-gateway');
  const rules = arr(group?.rules ?? [], 'rules').map((r) => obj(r, 'rule'));
  const byName = new Map(rules.map((r) => [String(r.alert), r]));
  const rule = (name: string): Obj => obj(byName.get(name), `alert ${name}`);
  const flat = (s: unknown): string => String(s).replace(/\s+/g, ' ').trim();
  const severity = (name: string): unknown => obj(rule(name).labels, `${name}.labels`).severity;

  it('has the group and every alert', () => {
    expect(group).toBeDefined();
    for (const name of [
      'ConnectorFailing', 'ConnectorNoSuccess24h', 'ConnectorNoSuccess36h', 'ConnectorNoSuccess44h',
      'DropWindowExpired', 'DeadLettersRising', 'IdentityNearDailyQuota', 'DestinationBackingOff', 'GatewayNotReady', 'WorkerRestarting',
    ]) {
      expect(byName.has(name), name).toBe(true);
    }
  });

  it('gives every rule an expression, a severity, a summary and a description', () => {
    for (const r of rules) {
      const name = String(r.alert);
      expect(typeof r.expr, name).toBe('string');
      expect(['warning', 'critical', 'page'], name).toContain(obj(r.labels, `${name}.labels`).severity);
      const ann = obj(r.annotations, `${name}.annotations`);
      expect(typeof ann.summary, name).toBe('string');
      expect(typeof ann.description, name).toBe('string');
    }
  });

  it('names only metrics the gateway exports', async () => {
    const known = await knownMetrics();
    for (const r of rules) expect(unknownMetrics(String(r.expr), known), String(r.alert)).toEqual([]);
  });

  it('warns at 24 h, 36 h and 44 h without success while events are pending', () => {
    const tiers: Array<[string, number, string]> = [
      ['ConnectorNoSuccess24h', 24 * 3600, 'warning'],
      ['ConnectorNoSuccess36h', 36 * 3600, 'critical'],
      ['ConnectorNoSuccess44h', 44 * 3600, 'page'],
    ];
    for (const [name, seconds, sev] of tiers) {
      const m = /^gateway_connector_seconds_since_last_success > ([\d\s*]+?) and on\s?\(connector\) gateway_connector_pending_events > 0$/.exec(flat(rule(name).expr));
      expect(m, name).not.toBeNull();
      const threshold = (m?.[1] ?? '').split('*').reduce((acc, f) => acc * Number(f.trim()), 1);
      expect(threshold, name).toBe(seconds);
      expect(severity(name), name).toBe(sev);
      const description = String(obj(rule(name).annotations, name).description);
      expect(description, name).toContain('48 h');
      expect(description, name).toContain('replay --reason drop_window_expired');
    }
  });

  it('sets the documented expressions, durations and severities', () => {
    expect(flat(rule('ConnectorFailing').expr)).toBe('gateway_connector_state{state="failing"} == 1');
    expect(rule('ConnectorFailing').for).toBe('2m');
    expect(severity('ConnectorFailing')).toBe('critical');

    expect(flat(rule('DropWindowExpired').expr)).toContain('increase(gateway_drop_window_expired_total[10m]) > 0');
    expect(severity('DropWindowExpired')).toBe('critical');

    expect(flat(rule('DeadLettersRising').expr)).toBe('sum by (leg, reason) (rate(gateway_events_dead_lettered_total[10m])) > 0');
    expect(rule('DeadLettersRising').for).toBe('10m');

    expect(flat(rule('IdentityNearDailyQuota').expr)).toBe('gateway_limiter_identities_above_quota_threshold > 0');

    expect(flat(rule('DestinationBackingOff').expr)).toBe('gateway_destination_backoff_seconds > 30');
    expect(rule('DestinationBackingOff').for).toBe('5m');

    expect(flat(rule('GatewayNotReady').expr)).toBe('up{job="amplitude-braze-gateway"} == 0');
    expect(rule('GatewayNotReady').for).toBe('2m');
  });

  it('compares dead letters against the previous hour in a sharper rule', () => {
    const sharper = rules.filter((r) => /offset 1h/.test(String(r.expr)) && /gateway_events_dead_lettered_total/.test(String(r.expr)));
    expect(sharper.length).toBeGreaterThan(0);
  });
});

describe('Grafana provisioning', () => {
  it('provides the Prometheus datasource under uid `prometheus`', () => {
    const f = obj(yamlFile('grafana/provisioning/datasources/prometheus.yml'), 'datasources file');
    const sources = arr(f.datasources, 'datasources').map((d) => obj(d, 'datasource'));
    const prom = sources.find((d) => d.uid === 'prometheus');
    expect(prom?.type).toBe('prometheus');
    expect(prom?.url).toBe('http://prometheus:9090');
  });

  it('loads dashboards from /var/lib/grafana/dashboards', () => {
    const f = obj(yamlFile('grafana/provisioning/dashboards/dashboards.yml'), 'dashboards file');
    const providers = arr(f.providers, 'providers').map((p) => obj(p, 'provider'));
    const fileProvider = providers.find((p) => p.type === 'file');
    expect(obj(fileProvider?.options, 'provider.options').path).toBe('/var/lib/grafana/dashboards');
  });
});

describe('grafana/dashboards/gateway.json', () => {
  const dash = obj(JSON.parse(read('grafana/dashboards/gateway.json')), 'dashboard');
  const panels = arr(dash.panels, 'panels').map((p) => obj(p, 'panel'));
  const targets = panels.flatMap((p) => arr(p.targets ?? [], `panel ${String(p.title)} targets`).map((t) => obj(t, 'target')));
  const exprs = targets.map((t) => str(t.expr, 'target.expr'));
  const referenced = new Set(exprs.flatMap(metricNamesIn));

  it('is schema version 39 with a stable uid', () => {
    expect(dash.schemaVersion).toBe(39);
    expect(dash.uid).toBe('amplitude-braze-gateway');
    expect(typeof dash.title).toBe('string');
  });

  it('has the six rows in order, each with panels', () => {
    const rows = panels.map((p, i) => ({ p, i })).filter(({ p }) => p.type === 'row');
    expect(rows.map(({ p }) => p.title)).toEqual(['Throughput', 'Destinations', 'Connectors', 'Limits', 'Process', 'Inbound ingestion']);
    rows.forEach(({ i }, k) => {
      const next = rows[k + 1]?.i ?? panels.length;
      expect(next - i - 1, `panels under row ${k}`).toBeGreaterThan(0);
    });
  });

  it('gives panels unique ids and a layout without overlaps', () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const boxes = panels.map((p) => {
      const g = obj(p.gridPos, `gridPos of ${String(p.title)}`);
      return { title: String(p.title), x: Number(g.x), y: Number(g.y), w: Number(g.w), h: Number(g.h) };
    });
    for (const b of boxes) expect(b.x + b.w, b.title).toBeLessThanOrEqual(24);
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i];
        const b = boxes[j];
        if (!a || !b) continue;
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `${a.title} / ${b.title}`).toBe(false);
      }
    }
  });

  it('queries the `prometheus` datasource everywhere', () => {
    for (const p of panels.filter((p) => p.type !== 'row')) {
      expect(obj(p.datasource, `datasource of ${String(p.title)}`).uid, String(p.title)).toBe('prometheus');
    }
    for (const t of targets) expect(obj(t.datasource, 'target.datasource').uid).toBe('prometheus');
  });

  it('names only metrics the gateway exports', async () => {
    const known = await knownMetrics();
    for (const e of exprs) expect(unknownMetrics(e, known), e).toEqual([]);
  });

  it('shows every application metric', () => {
    const notShown = [...EXPECTED_TYPE.keys()].filter((name) => {
      if (referenced.has(name)) return false;
      return !(EXPECTED_TYPE.get(name) === 'histogram' && referenced.has(`${name}_bucket`));
    });
    // the last-success timestamp is shown as seconds since last success, which the gateway also exports
    expect(notShown).toEqual(['gateway_connector_last_success_timestamp_seconds']);
  });

  it('shows the process metrics', () => {
    for (const name of [
      'gateway_in_flight_events',
      'gateway_process_nodejs_eventloop_lag_p99_seconds',
      'gateway_process_nodejs_heap_size_used_bytes',
    ]) {
      expect(referenced.has(name), name).toBe(true);
    }
    expect([...referenced].some((n) => n.endsWith('resident_memory_bytes'))).toBe(true);
    expect([...referenced].some((n) => n.endsWith('cpu_seconds_total'))).toBe(true);
  });

  it('marks 24 h, 36 h, 44 h and 48 h on the seconds-since-last-success panels', () => {
    const panelsSince = panels.filter((p) =>
      arr(p.targets ?? [], 'targets').some((t) => String(obj(t, 'target').expr).includes('gateway_connector_seconds_since_last_success')),
    );
    expect(panelsSince.length).toBeGreaterThan(0);
    for (const p of panelsSince) {
      const defaults = obj(obj(p.fieldConfig, 'fieldConfig').defaults, 'defaults');
      const steps = arr(obj(defaults.thresholds, 'thresholds').steps, 'steps').map((s) => obj(s, 'step').value);
      expect(steps, String(p.title)).toEqual(expect.arrayContaining([24 * 3600, 36 * 3600, 44 * 3600, 48 * 3600]));
      expect(defaults.unit, String(p.title)).toBe('s');
    }
  });
});

describe('the metric contract against the registry', () => {
  it('gives every metric the gateway registers under a listed name the listed type', async () => {
    for (const m of await registryMetrics()) {
      const want = EXPECTED_TYPE.get(m.name);
      if (want !== undefined) expect(m.type, m.name).toBe(want);
    }
  });
});
