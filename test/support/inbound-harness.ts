import { startAmplitudeStandIn, type AmplitudeStandIn, type AmplitudeStandInOptions } from '../../src/demo/standins/amplitude.js';
import { Gateway } from '../../src/gateway.js';
import type { GatewayConfig } from '../../src/config/config.js';
import { memoryLogger, testConfig, type useMockCluster } from './harness.js';

export const CURRENTS_TOKEN = 'inbound-test-token';
export const AMPLITUDE_KEY = 'inbound-test-amplitude-key';

export interface InboundHarness {
  topics: { currents: string; dlq: string; retry: string; retryQuota: string; limits: string; state: string };
  amp: AmplitudeStandIn;
  config: GatewayConfig;
  log: ReturnType<typeof memoryLogger>;
  /**
   * starts a gateway on this configuration (stopped after the test); `env` overrides some of its
   * settings, as an operator sets them per copy (GATEWAY_INSTANCE_ID for a second instance)
   */
  start: (env?: Record<string, string>) => Promise<Gateway>;
}

let n = 0;

/**
 * Fresh topics, a strict Amplitude stand-in and a gateway configuration with both inbound parts on
 * (POST /currents and delivery to Amplitude), with short waits so tests run in seconds.
 */
export async function inboundHarness(
  broker: ReturnType<typeof useMockCluster>,
  env: Record<string, string> | ((amp: AmplitudeStandIn) => Record<string, string>) = {},
  ampOpts: Partial<AmplitudeStandInOptions> = {},
): Promise<InboundHarness> {
  const id = `in${++n}-${Date.now()}`;
  const topics = { currents: `braze.currents.${id}`, dlq: `gateway.dead-letter.${id}`, retry: `gateway.retry.${id}`, retryQuota: `gateway.retry.quota.${id}`, limits: `gateway.limits.${id}`, state: `gateway.state.${id}` };
  await broker.cluster.createTopic(topics.currents, 4);
  // the park tiers have the Currents topic's partition count: a key parks to the partition it came from
  await broker.cluster.createTopic(topics.retry, 4);
  await broker.cluster.createTopic(topics.retryQuota, 4);
  await broker.cluster.createTopic(topics.limits, 4);
  await broker.cluster.createTopic(topics.dlq, 1);
  await broker.cluster.createTopic(topics.state, 1);
  const amp = await startAmplitudeStandIn({ apiKey: AMPLITUDE_KEY, ...ampOpts });
  broker.cleanups.push(() => amp.close());
  const baseEnv: Record<string, string> = {
    KAFKA_BROKERS: broker.cluster.bootstrap,
    KAFKA_GROUP_ID: `gw-${id}`,
    TOPIC_BRAZE_CURRENTS: topics.currents,
    TOPIC_DEAD_LETTER: topics.dlq,
    TOPIC_RETRY: topics.retry,
    TOPIC_RETRY_QUOTA: topics.retryQuota,
    TOPIC_LIMITS: topics.limits,
    TOPIC_STATE: topics.state,
    CURRENTS_TOKEN,
    AMPLITUDE_API_KEY: AMPLITUDE_KEY,
    AMPLITUDE_HTTP_API_URL: amp.url,
    AMPLITUDE_LINGER_MS: '20',
    AMPLITUDE_RETRY_BASE_MS: '50',
    AMPLITUDE_RETRY_MAX_MS: '500',
    AMPLITUDE_AUTH_RETRY_MS: '300',
    ...(typeof env === 'function' ? env(amp) : env),
  };
  const config = testConfig(baseEnv);
  const log = memoryLogger('info');
  const start = async (over: Record<string, string> = {}) => {
    // the same topics (testConfig picks a fresh attribute-state topic per call otherwise)
    const own = Object.keys(over).length === 0 ? config : testConfig({ ...baseEnv, TOPIC_ATTRIBUTE_STATE: config.topics.attributeState, ...over });
    const gw = new Gateway({ config: own, logger: log.logger });
    broker.cleanups.push(() => gw.stop(5_000));
    await gw.start();
    return gw;
  };
  return { topics, amp, config, log, start };
}
