import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createAgent } from '../../src/agent/agent.js';
import { connectApi } from '../harness/api.js';
import { startEtcd } from '../harness/etcd.js';
import { BIN, REPO_ROOT, cleanEnv } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import type { BenchResult } from './run.js';

const USERS = 1000;
const RATE = 1000;
const CONNECTIONS = 50;
const SECONDS = 10;

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

/**
 * route: POST /v1/route (a Dovecot proxy asking where a user lives) at a
 * fixed 1,000 requests/s spread over 50 keep-alive connections, open loop
 * (each request leaves on its schedule whether or not the earlier ones are
 * answered), against the same lookups from the agent SDK's memory. The
 * coordinator and the load generator each run as their own process; the
 * users are assigned beforehand.
 */
export async function routeBench(): Promise<BenchResult> {
  const etcd = await startEtcd();
  const dir = tempDir('mailshare-bench-');
  const server = spawn(process.execPath, [BIN, 'server', '--etcd', etcd.endpoints.join(','), '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--data-dir', dir.path, '--log-level', 'warn'], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const { addr, httpAddr } = await new Promise<{ addr: string; httpAddr: string }>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (\S+) .*; http on (\S+);/.exec(out);
        if (m) resolve({ addr: m[1]!, httpAddr: m[2]! });
      });
      server.on('exit', (code) => reject(new Error(`server exited ${code}`)));
    });
    const adminToken = (JSON.parse(readFileSync(path.join(dir.path, 'credentials.json'), 'utf8')) as { token: string }).token;
    const admin = connectApi(addr, adminToken);
    await admin.directory.createTenant({ id: 'acme', domains: ['acme.test'] });
    const nodeToken = (await admin.auth.createToken({ role: 'node:bench', description: 'bench' })).token;
    const proxyToken = (await admin.auth.createToken({ role: 'proxy', description: 'bench' })).token;
    admin.close();
    const agent = createAgent({ coordinators: [addr], token: nodeToken, node: { name: 'bench', imapAddress: '127.0.0.1:143', addresses: { pop3: '127.0.0.1:110' } }, ttlSeconds: 10 });
    await agent.ready;
    let last = 0;
    for (let i = 0; i < USERS; i += 50) {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, j) => agent.assign('acme', `u${i + j}`)));
      last = Math.max(last, ...rs.map((r) => r.epoch));
    }
    await agent.waitForRevision(last);

    // Baseline: the agent SDK's answer for the same users, from memory.
    const local: number[] = [];
    for (let i = 0; i < RATE * 2; i++) {
      const s = performance.now();
      const a = agent.locate('acme', `u${i % USERS}`);
      if (!a || agent.nodeAddress(a.node) === undefined) throw new Error('agent cache miss');
      local.push(performance.now() - s);
    }
    local.sort((a, b) => a - b);

    // Subject: the route endpoint, open loop, from a load generator in its own process.
    const run = await new Promise<{ lat: number[]; fromSend: number[]; failed: number; secs: number }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/route-worker.ts'), httpAddr, proxyToken, String(RATE), String(CONNECTIONS), String(SECONDS), String(USERS)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as never) : reject(new Error(`route-worker exited ${code}`))));
    });
    const { lat, fromSend, failed } = run;
    const elapsed = run.secs;
    await agent.close();
    lat.sort((a, b) => a - b);
    fromSend.sort((a, b) => a - b);
    const p99 = quantile(lat, 0.99);
    const achieved = lat.length / elapsed;
    return {
      name: 'route',
      ratio: quantile(local, 0.99) / p99,
      goal: 'p99 <= 2 ms at 1,000 requests/s from 50 connections',
      met: p99 <= 2 && achieved >= RATE * 0.95 && failed === 0,
      figures: {
        'requests': lat.length,
        'failed': failed,
        'achieved requests/s': Math.round(achieved),
        'route p50 ms': +quantile(lat, 0.5).toFixed(3),
        'route p99 ms': +p99.toFixed(3),
        'route max ms': +(lat[lat.length - 1] ?? NaN).toFixed(3),
        'route p99 from send ms': +quantile(fromSend, 0.99).toFixed(3),
        'agent SDK p50 ms': +quantile(local, 0.5).toFixed(4),
        'agent SDK p99 ms': +quantile(local, 0.99).toFixed(4),
      },
    };
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await etcd.stop();
    dir.remove();
  }
}
