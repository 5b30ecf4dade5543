import { spawn } from 'node:child_process';
import path from 'node:path';
import { createAgent } from '../../src/agent/agent.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { connectApi } from '../harness/api.js';
import { startEtcd } from '../harness/etcd.js';
import { BIN, cleanEnv } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import type { BenchResult } from './run.js';

const USERS = 1000;
const WINDOW_MS = 2000;

/**
 * locate-cache: the agent's locate() from its watch-fed cache against a
 * direct etcd3 get of the same assignment key, one at a time, each for a
 * fixed window. The coordinator runs as its own process.
 */
export async function locateCache(): Promise<BenchResult> {
  const etcd = await startEtcd();
  const dir = tempDir('mailshare-bench-');
  const server = spawn(process.execPath, [BIN, 'server', '--etcd', etcd.endpoints.join(','), '--listen', '127.0.0.1:0', '--data-dir', dir.path, '--log-level', 'warn'], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const addr = await new Promise<string>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      server.on('exit', (code) => reject(new Error(`server exited ${code}`)));
    });
    const { readFileSync } = await import('node:fs');
    const adminToken = (JSON.parse(readFileSync(path.join(dir.path, 'credentials.json'), 'utf8')) as { token: string }).token;
    const admin = connectApi(addr, adminToken);
    const nodeToken = (await admin.auth.createToken({ role: 'node:bench', description: 'bench' })).token;
    admin.close();
    const agent = createAgent({ coordinators: [addr], token: nodeToken, node: { name: 'bench', imapAddress: '127.0.0.1:143' }, ttlSeconds: 10 });
    await agent.ready;
    let last = 0;
    for (let i = 0; i < USERS; i += 50) {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, j) => agent.assign('bench', `u${i + j}`)));
      last = Math.max(last, ...rs.map((r) => r.epoch));
    }
    await agent.waitForRevision(last);

    // Subject: locate() from memory.
    let n = 0;
    let t0 = performance.now();
    while (performance.now() - t0 < WINDOW_MS) {
      for (let k = 0; k < 1000; k++) if (!agent.locate('bench', `u${n++ % USERS}`)) throw new Error('cache miss');
    }
    const cacheOps = n / ((performance.now() - t0) / 1000);

    // Baseline: a direct etcd get of the same key.
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    const prefix = await (async () => {
      const keys = await client.getAll().prefix('/mailshare/v1/assign/bench/').limit(1).keys();
      return keys[0]!.slice(0, keys[0]!.lastIndexOf('/') + 1);
    })();
    let m = 0;
    const lat: number[] = [];
    t0 = performance.now();
    while (performance.now() - t0 < WINDOW_MS) {
      const s = performance.now();
      await client.get(`${prefix}u${m++ % USERS}`).string();
      lat.push(performance.now() - s);
    }
    const etcdOps = m / ((performance.now() - t0) / 1000);
    client.close();
    await agent.close();
    lat.sort((a, b) => a - b);
    const ratio = cacheOps / etcdOps;
    return {
      name: 'locate-cache',
      ratio,
      goal: '>= 100x direct etcd get',
      met: ratio >= 100,
      figures: {
        'agent locate() ops/s': Math.round(cacheOps),
        'etcd get ops/s': Math.round(etcdOps),
        'etcd get p50 ms': lat[Math.floor(lat.length / 2)]!,
        'etcd get p99 ms': lat[Math.floor(lat.length * 0.99)]!,
        users: USERS,
      },
    };
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await etcd.stop();
    dir.remove();
  }
}
