import type { SystemServiceServer } from '../gen/mailshare/v1/system.js';
import type { ClusterStatusReader } from '../store/cluster-status.js';
import { ANY_ROLE, type RpcDeps, unary } from './rpc.js';

export interface SystemServiceDeps extends RpcDeps {
  readonly version: string;
  readonly startedAt: Date;
  readonly embeddedEtcd: boolean;
  readonly cluster: ClusterStatusReader;
  state(): string;
  healthy(): boolean;
}

export function createSystemService(deps: SystemServiceDeps): SystemServiceServer {
  return {
    getStatus: unary(deps, 'GetStatus', ANY_ROLE, async () => {
      const etcd = await deps.cluster.read();
      return {
        version: deps.version,
        state: deps.state(),
        healthy: deps.healthy() && etcd.endpoints.some((e) => e.healthy),
        startedAt: deps.startedAt,
        embeddedEtcd: deps.embeddedEtcd,
        etcd,
      };
    }),
  };
}
