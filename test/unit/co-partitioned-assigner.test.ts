import { AssignerProtocol, type Cluster, type PartitionMetadata } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { coPartitionedAssigner } from '../../src/braze-to-amplitude/co-partitioned-assigner.js';
import { createLogger } from '../../src/observability/logger.js';

const PARTITIONS = 12;
const cluster = {
  findTopicPartitionMetadata: (): PartitionMetadata[] =>
    Array.from({ length: PARTITIONS }, (_, partitionId) => ({ partitionId, leader: 0, replicas: [0], isr: [0], partitionErrorCode: 0, offlineReplicas: [] })),
} as unknown as Cluster;

/** One group's assignment: instance id -> topic -> partitions. */
async function assignGroup(topics: string[], members: Array<{ memberId: string; instance: string }>): Promise<Map<string, Record<string, number[]>>> {
  const byMember = new Map(members.map((m) => [m.memberId, m.instance]));
  const metas = members.map((m) => ({
    memberId: m.memberId,
    memberMetadata: coPartitionedAssigner(m.instance)({ cluster, groupId: 'g', logger: createLogger('silent') as never }).protocol({ topics }).metadata,
  }));
  const out = await coPartitionedAssigner('leader')({ cluster, groupId: 'g', logger: createLogger('silent') as never }).assign({ members: metas, topics });
  const res = new Map<string, Record<string, number[]>>();
  for (const a of out) res.set(byMember.get(a.memberId) as string, AssignerProtocol.MemberAssignment.decode(a.memberAssignment)?.assignment ?? {});
  return res;
}

describe('coPartitionedAssigner', () => {
  it('gives partition p of every topic, in every group, to the same instance', async () => {
    const instances = ['inst-b', 'inst-a', 'inst-c'];
    // member ids are random per group, so their order differs between the groups
    const inbound = await assignGroup(['braze.currents'], instances.map((instance, i) => ({ memberId: `m-${9 - i}`, instance })));
    const retry = await assignGroup(['gateway.retry'], instances.map((instance, i) => ({ memberId: `x-${i}`, instance })));
    const quota = await assignGroup(['gateway.retry.quota'], [...instances].reverse().map((instance, i) => ({ memberId: `q-${i}`, instance })));
    const seen = new Set<number>();
    for (const inst of instances) {
      const mine = inbound.get(inst)?.['braze.currents'] ?? [];
      expect(mine.length).toBe(PARTITIONS / instances.length);
      expect(retry.get(inst)?.['gateway.retry']).toEqual(mine);
      expect(quota.get(inst)?.['gateway.retry.quota']).toEqual(mine);
      for (const p of mine) seen.add(p);
    }
    expect(seen.size).toBe(PARTITIONS);
  });
});
