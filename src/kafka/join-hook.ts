import type { PartitionAssigner } from 'kafkajs';

/**
 * `assigner`, calling `onJoin` whenever the member (re)joins its group. kafkajs has no revocation
 * callback; it asks each of a member's assigners for its protocol as it sends JoinGroup, the first
 * step of every rebalance on every member, whatever made it rejoin (its REBALANCING event fires
 * only when a fetch finds the group rebalancing). That is the moment to save state of partitions
 * another member may be given. The assignment itself is the wrapped assigner's.
 */
export function callingOnJoin(assigner: PartitionAssigner, onJoin: () => void): PartitionAssigner {
  return (config) => {
    const inner = assigner(config);
    return {
      name: inner.name,
      version: inner.version,
      assign: (group) => inner.assign(group),
      protocol: (subscription) => {
        onJoin();
        return inner.protocol(subscription);
      },
    };
  };
}
