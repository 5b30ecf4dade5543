import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from './etcd-client.js';

export interface EndpointStatus {
  endpoint: string;
  healthy: boolean;
  error: string;
  memberId: string;
  memberName: string;
  version: string;
  dbSizeBytes: number;
  isLeader: boolean;
  raftTerm: number;
  raftIndex: number;
}

export interface ClusterStatus {
  clusterId: string;
  leaderId: string;
  leaderName: string;
  endpoints: EndpointStatus[];
}

/**
 * Asks every configured etcd endpoint for its own status (one client per
 * endpoint, so each answer really comes from that member, without retries
 * that would hide a dead one).
 */
export class ClusterStatusReader {
  private readonly perEndpoint = new Map<string, Etcd3>();

  constructor(
    private readonly client: Etcd3,
    private readonly endpoints: readonly string[],
    private readonly timeoutMs = 1500,
  ) {}

  async read(): Promise<ClusterStatus> {
    const members = await this.client.cluster
      .memberList({}, { deadline: Date.now() + this.timeoutMs })
      .catch(() => undefined);
    const names = new Map<string, string>();
    for (const m of members?.members ?? []) names.set(m.ID, m.name);

    const probes = await Promise.all(this.endpoints.map((endpoint) => this.probe(endpoint, names)));
    const first = probes.find((p) => p.leader !== undefined && p.leader !== '0');
    const leaderId = first?.leader ?? '';
    return {
      clusterId: first?.clusterId ? hex(first.clusterId) : '',
      leaderId: leaderId ? hex(leaderId) : '',
      leaderName: leaderId ? (names.get(leaderId) ?? '') : '',
      endpoints: probes.map((p) => p.status),
    };
  }

  private async probe(
    endpoint: string,
    names: Map<string, string>,
  ): Promise<{ status: EndpointStatus; leader?: string; clusterId?: string }> {
    try {
      const st = await this.clientFor(endpoint).maintenance.status({ deadline: Date.now() + this.timeoutMs });
      const memberId = st.header.member_id;
      const alarms = st.errors ?? [];
      const noLeader = st.leader === '0';
      return {
        leader: st.leader,
        clusterId: st.header.cluster_id,
        status: {
          endpoint,
          healthy: alarms.length === 0 && !noLeader,
          error: alarms.length > 0 ? alarms.join('; ') : noLeader ? 'no leader' : '',
          memberId: hex(memberId),
          memberName: names.get(memberId) ?? '',
          version: st.version,
          dbSizeBytes: Number(st.dbSize),
          isLeader: st.leader === memberId,
          raftTerm: Number(st.raftTerm),
          raftIndex: Number(st.raftIndex),
        },
      };
    } catch (err) {
      return {
        status: {
          endpoint,
          healthy: false,
          error: shortError(err),
          memberId: '',
          memberName: '',
          version: '',
          dbSizeBytes: 0,
          isLeader: false,
          raftTerm: 0,
          raftIndex: 0,
        },
      };
    }
  }

  private clientFor(endpoint: string): Etcd3 {
    let c = this.perEndpoint.get(endpoint);
    if (!c) {
      c = createEtcdClient({ endpoints: [endpoint], callTimeoutMs: this.timeoutMs, retries: 1 });
      this.perEndpoint.set(endpoint, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.perEndpoint.values()) c.close();
    this.perEndpoint.clear();
  }
}

function hex(decimal: string): string {
  try {
    return BigInt(decimal).toString(16);
  } catch {
    return decimal;
  }
}

function shortError(err: unknown): string {
  const msg = (err as Error)?.message ?? String(err);
  return msg.split('\n')[0]!.slice(0, 200);
}
