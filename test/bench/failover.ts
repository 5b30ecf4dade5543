import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { openLocateStream } from '../harness/locate-stream.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

const USERS = 10_000;
const TTL = 2;

function node(addr: string, token: string, name: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/harness/agent-process.ts'), addr, token, name, String(TTL)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('"ev":"ready"')) resolve(child);
    });
  });
}

/**
 * failover: a node holding 10,000 users is killed with SIGKILL; how long
 * until every user is assignable elsewhere (etcd dropped the node's lease
 * with all its assignments), and until all 10,000 are actually reassigned
 * (LocateStream with assign, as a burst of reconnecting clients would).
 * Goals: assignable within TTL + 1 s, and all reassigned within TTL + 3 s;
 * the ratio is (TTL + 3 s) / the time until all were reassigned.
 */
export async function failover(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const procs: ChildProcess[] = [];
  const etcd = createEtcdClient({ endpoints: c.etcd.endpoints });
  const client = new PlacementServiceClient(c.addr, grpc.credentials.createInsecure());
  try {
    procs.push(await node(c.addr, await c.tokenFor('victim'), 'victim'));
    const lookups = openLocateStream(client, c.nodeToken);
    const locate = (user: string) => lookups.locate('bench', user, true);
    const users = Array.from({ length: USERS }, (_, i) => `u${i}`);
    // Everyone onto the victim (the only node yet); lookups that failed are tried again.
    let missing = users;
    for (let round = 0; missing.length > 0 && round < 10; round++) {
      const failed: string[] = [];
      for (let i = 0; i < missing.length; i += 1000) {
        const batch = missing.slice(i, i + 1000);
        const rs = await Promise.all(batch.map(locate));
        rs.forEach((r, j) => r?.code !== 0 && failed.push(batch[j]!));
      }
      missing = failed;
    }
    if (missing.length > 0) throw new Error(`${missing.length} users could not be assigned`);
    procs.push(await node(c.addr, await c.tokenFor('alive-1'), 'alive-1'), await node(c.addr, await c.tokenFor('alive-2'), 'alive-2'));

    const prefix = (await etcd.getAll().prefix('/mailshare/v1/assign/bench/').limit(1).keys())[0]!.replace(/[^/]+$/, '');
    let deleted = 0;
    let lastDelete = 0;
    const w = await etcd.watch().prefix(prefix).create();
    w.on('delete', () => {
      deleted++;
      lastDelete = performance.now();
    });
    const t0 = performance.now();
    procs[0]!.kill('SIGKILL');
    const deadline = Date.now() + 30_000;
    while (deleted < USERS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    if (deleted < USERS) throw new Error(`only ${deleted} of ${USERS} assignments were dropped within 30 s`);
    const assignable = lastDelete - t0;
    let moved = 0;
    for (let i = 0; i < USERS; i += 1000) {
      const rs = await Promise.all(users.slice(i, i + 1000).map(locate));
      moved += rs.filter((r) => r?.code === 0 && r.response?.node !== 'victim').length;
    }
    const reassigned = performance.now() - t0;
    await w.cancel();
    lookups.close();
    const goalMs = (TTL + 1) * 1000;
    const reassignGoalMs = (TTL + 3) * 1000;
    return {
      name: 'failover',
      ratio: reassignGoalMs / reassigned,
      goal: `all ${USERS.toLocaleString('en-US')} users assignable within TTL + 1 s (${goalMs} ms) and reassigned within TTL + 3 s (${reassignGoalMs} ms)`,
      met: assignable <= goalMs && reassigned <= reassignGoalMs && moved === USERS,
      figures: {
        'users on the killed node': USERS,
        'lease TTL ms': TTL * 1000,
        'all assignable after ms': Math.round(assignable),
        'all reassigned after ms': Math.round(reassigned),
        'reassigned elsewhere': moved,
      },
    };
  } finally {
    client.close();
    etcd.close();
    for (const p of procs) p.kill('SIGKILL');
    await c.stop();
  }
}
