import { AssignerProtocol, type Assigner, type GroupMemberAssignment, type PartitionAssigner } from 'kafkajs';

export const CO_PARTITIONED_ASSIGNER = 'CoPartitionedAssigner';

/**
 * A kafkajs partition assigner that gives partition p of every topic to the same *instance*, in
 * every consumer group whose members use it with the same instance ids. The inbound leg reads the
 * Currents topic, the short retry tier and the long retry tier with three consumers (three
 * groups); with this assigner, the process that owns Currents partition p also reads partition p
 * of both retry topics, so a parked event comes back to the process that counts its key (the
 * pacer's daily counts and parked-key marks are per partition) rather than to whichever member
 * the retry group happened to give it to.
 *
 * Each member announces its instance id in the subscription's userData. The distinct instance ids
 * are sorted; with P partitions and M instances, instance k gets partitions floor(kP/M) to
 * floor((k+1)P/M) - 1 of each topic (contiguous ranges, as Kafka's RangeAssigner). Groups with the
 * same instances therefore agree; while instances come and go, groups converge as each rebalances.
 * Several members of one instance in one group (not how the gateway runs) share its ranges
 * round-robin. The topics must have the same partition count, which the README already requires.
 */
export function coPartitionedAssigner(instanceId: string): PartitionAssigner {
  return ({ cluster }) => {
    const assigner: Assigner = {
      name: CO_PARTITIONED_ASSIGNER,
      version: 0,
      async assign({ members, topics }): Promise<GroupMemberAssignment[]> {
        const byInstance = new Map<string, string[]>();
        for (const m of members) {
          let inst = m.memberId;
          try {
            const meta = AssignerProtocol.MemberMetadata.decode(m.memberMetadata);
            const ud = meta?.userData?.toString('utf8');
            if (ud) inst = ud;
          } catch {
            // a member without our metadata stands for itself
          }
          const list = byInstance.get(inst) ?? [];
          list.push(m.memberId);
          byInstance.set(inst, list);
        }
        const instances = [...byInstance.keys()].sort();
        for (const list of byInstance.values()) list.sort();
        const assignment = new Map<string, Record<string, number[]>>();
        for (const m of members) assignment.set(m.memberId, {});
        for (const topic of topics) {
          const partitions = cluster
            .findTopicPartitionMetadata(topic)
            .map((p) => p.partitionId)
            .sort((a, b) => a - b);
          const pc = partitions.length;
          const mc = instances.length;
          for (let k = 0; k < mc; k++) {
            const owners = byInstance.get(instances[k] as string) ?? [];
            const from = Math.floor((k * pc) / mc);
            const to = Math.floor(((k + 1) * pc) / mc);
            for (let i = from; i < to; i++) {
              const member = owners[(i - from) % owners.length] as string;
              const a = assignment.get(member) as Record<string, number[]>;
              (a[topic] ??= []).push(partitions[i] as number);
            }
          }
        }
        return [...assignment].map(([memberId, a]) => ({
          memberId,
          memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: a, userData: Buffer.alloc(0) }),
        }));
      },
      protocol({ topics }) {
        return {
          name: CO_PARTITIONED_ASSIGNER,
          metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.from(instanceId, 'utf8') }),
        };
      },
    };
    return assigner;
  };
}
