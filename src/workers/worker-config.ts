/**
 * The configuration each process of a multi-process gateway (GATEWAY_WORKERS > 1) runs with.
 * Pure: the supervisor sends the result to the child over IPC.
 *
 * - Braze's request limit is per workspace, so each process takes an equal share of it.
 * - The HTTP surfaces, `POST /currents` and the cohort sync stay in the primary: a child serves no
 *   port and would otherwise run every cohort sync a second time.
 * - Each child has its own instance id (`<id>.w<n>`), so its health records in the state topic,
 *   its consumer-group member and its co-partitioned assignment are its own, and a restarted child
 *   restores its own record.
 */
import type { GatewayConfig } from '../config/config.js';

/** an equal share of a workspace-wide request budget, never 0 */
export function budgetShare(total: number, processes: number): number {
  return Math.max(1, Math.floor(total / processes));
}

/** what the primary itself runs with: the whole config, but only its share of Braze's budget */
export function primaryConfig(config: GatewayConfig): GatewayConfig {
  if (config.workers <= 1 || !config.braze) return config;
  return { ...config, braze: { ...config.braze, rateLimitRequests: budgetShare(config.braze.rateLimitRequests, config.workers) } };
}

/** what child `index` (1 … workers - 1) runs with: the consuming legs only */
export function workerConfig(config: GatewayConfig, index: number): GatewayConfig {
  const { currents: _currents, cohorts: _cohorts, ...rest } = primaryConfig(config);
  return {
    ...rest,
    workers: 1,
    kafka: { ...config.kafka, clientId: `${config.kafka.clientId}-w${index}` },
    health: { ...config.health, instanceId: workerInstanceId(config.health.instanceId, index) },
  };
}

export function workerInstanceId(instanceId: string, index: number): string {
  return `${instanceId}.w${index}`;
}
