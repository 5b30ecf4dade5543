import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type LocateStreamResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { bearer } from '../harness/grpc.js';
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
 * (LocateStream with assign). Goal: assignable within TTL + 1 s; the ratio
 * is (TTL + 1 s) / measured.
 */
export async function failover(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const procs: ChildProcess[] = [];
  const etcd = createEtcdClient({ endpoints: c.etcd.endpoints });
  const client = new PlacementServiceClient(c.addr, grpc.credentials.createInsecure());
  try {
    procs.push(await node(c.addr, c.nodeToken, 'victim'));
    const stream = client.locateStream(bearer(c.nodeToken));
    stream.on('error', () => undefined);
    const waiting = new Map<number, (r: LocateStreamResponse) => void>();
    stream.on('data', (r: LocateStreamResponse) => {
      waiting.get(r.id)?.(r);
      waiting.delete(r.id);
    });
    let id = 0;
    const locate = (user: string): Promise<LocateStreamResponse> =>
      new Promise((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        stream.write({ id: n, request: { tenant: 'bench', user, mailbox: '', assign: true } });
      });
    const users = Array.from({ length: USERS }, (_, i) => `u${i}`);
    for (let i = 0; i < USERS; i += 1000) await Promise.all(users.slice(i, i + 1000).map(locate));
    procs.push(await node(c.addr, c.nodeToken, 'alive-1'), await node(c.addr, c.nodeToken, 'alive-2'));

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
    while (deleted < USERS) await new Promise((r) => setTimeout(r, 5));
    const assignable = lastDelete - t0;
    let moved = 0;
    for (let i = 0; i < USERS; i += 1000) {
      const rs = await Promise.all(users.slice(i, i + 1000).map(locate));
      moved += rs.filter((r) => r.code === 0 && r.response?.node !== 'victim').length;
    }
    const reassigned = performance.now() - t0;
    await w.cancel();
    stream.end();
    const goalMs = (TTL + 1) * 1000;
    return {
      name: 'failover',
      ratio: goalMs / assignable,
      goal: `all ${USERS.toLocaleString('en-US')} users assignable within TTL + 1 s (${goalMs} ms)`,
      met: assignable <= goalMs && moved === USERS,
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
