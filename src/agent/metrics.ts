import { Gauge, type Registry } from '../metrics/registry.js';
import type { Agent } from './agent.js';

/**
 * What every process that holds a node's lease exports (a gateway, `mailshare
 * agent`): how long the lease can still be proven, whether the node may
 * serve, how long the event stream has been silent, the caches' revision.
 */
export function addAgentGauges(registry: Registry, agent: Agent): void {
  const gauge = (name: string, help: string, value: () => number): void => {
    const g: Gauge = new Gauge({ name, help, registers: [registry], collect: () => g.set(value()) });
  };
  gauge('mailshare_lease_remaining_seconds', 'How long this node can still prove its lease without another renewal (0: none).', () => agent.leaseRemainingMs / 1000);
  gauge('mailshare_lease_ttl_seconds', "The node's lease TTL: renewals keep the remaining time above two thirds of it.", () => agent.leaseTtlSeconds);
  gauge('mailshare_serving', '1 while this node may serve (provable lease, fresh view of the cluster), else 0.', () => (agent.serving ? 1 : 0));
  gauge('mailshare_event_stream_silence_seconds', 'Seconds since the event stream last spoke (events or heartbeat); past the lease TTL the node stops serving.', () => agent.lastHeardAgoMs / 1000);
  gauge('mailshare_cache_revision', "The etcd revision this node's caches are valid at.", () => agent.revision);
  gauge('mailshare_cached_assignments', "Assignments this node keeps in memory: its own node's and its followed users' (--assignment-view followed), or every user's (all).", () => agent.cachedAssignments);
  gauge('mailshare_followed_users', 'Users this node follows: with a session here now, or within a minute after the last (--assignment-view followed; 0 with all).', () => agent.followedUsers);
}
