import path from 'node:path';
import { type EtcdMember, getFreePort, spawnEtcdMember } from '../../src/store/etcd-process.js';
import { tempDir } from './tmp.js';

export interface EtcdCluster {
  readonly members: EtcdMember[];
  /** Client URLs of all members. */
  readonly endpoints: string[];
  readonly dir: string;
  /** Restarts a stopped or killed member on its old ports and data. */
  restart(index: number): Promise<EtcdMember>;
  /** Stops every member and removes the data. */
  stop(): Promise<void>;
}

/**
 * A real etcd (1 or 3 members) on free loopback ports with a temporary data
 * dir and short raft timers. Always call stop() (afterAll); the members also
 * die with the test process (pdeathsig).
 */
export async function startEtcd(opts: { members?: 1 | 3 } = {}): Promise<EtcdCluster> {
  const n = opts.members ?? 1;
  const tmp = tempDir('mailshare-etcd-');
  const specs: Array<{ name: string; clientPort: number; peerPort: number }> = [];
  const used = new Set<number>();
  const freshPort = async (): Promise<number> => {
    let p = await getFreePort();
    while (used.has(p)) p = await getFreePort();
    used.add(p);
    return p;
  };
  for (let i = 0; i < n; i++) specs.push({ name: `m${i}`, clientPort: await freshPort(), peerPort: await freshPort() });
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(',');
  const token = `test-${path.basename(tmp.path)}`;

  const spawn = (i: number, state: 'new' | 'existing'): Promise<EtcdMember> =>
    spawnEtcdMember({
      name: specs[i]!.name,
      dataDir: path.join(tmp.path, specs[i]!.name),
      logFile: path.join(tmp.path, `${specs[i]!.name}.log`),
      clientPort: specs[i]!.clientPort,
      peerPort: specs[i]!.peerPort,
      initialCluster,
      initialClusterState: state,
      initialClusterToken: token,
      fastElections: true,
    });

  let members: EtcdMember[];
  try {
    members = await Promise.all(specs.map((_, i) => spawn(i, 'new')));
  } catch (err) {
    tmp.remove();
    throw err;
  }
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    dir: tmp.path,
    restart: async (i) => {
      const m = await spawn(i, 'existing');
      members[i] = m;
      return m;
    },
    stop: async () => {
      await Promise.all(members.map((m) => m.stop(5000)));
      tmp.remove();
    },
  };
  return cluster;
}
