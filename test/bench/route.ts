import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createAgent } from '../../src/agent/agent.js';
import { connectApi } from '../harness/api.js';
import { startEtcd } from '../harness/etcd.js';
import { BIN, REPO_ROOT, cleanEnv } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import type { BenchResult } from './run.js';
import { workerOutput } from './worker-output.js';

const USERS = 1000;
const RATE = 1000;
const CONNECTIONS = 50;
const SECONDS = 8;
const ROUNDS = 3;

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

/** One round's figures: latencies from the scheduled time (and from the send), failures, rate. */
function summary(run: { lat: number[]; fromSend: number[]; failed: number; secs: number }): { p50: number; p99: number; p99FromSend: number; failed: number; rate: number } {
  const lat = [...run.lat].sort((a, b) => a - b);
  const fromSend = [...run.fromSend].sort((a, b) => a - b);
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), p99FromSend: quantile(fromSend, 0.99), failed: run.failed, rate: lat.length / run.secs };
}

/**
 * route: POST /v1/route (a Dovecot proxy asking where a user lives) at a
 * fixed 1,000 requests/s spread over 50 keep-alive connections, open loop
 * (each request leaves on its schedule whether or not the earlier ones are
 * answered), against a bare Node HTTP server answering the same JSON at once
 * (the floor any HTTP service has on this machine; rounds alternate), and
 * the same lookups from the agent SDK's memory. The coordinator, the floor
 * server and the load generator each run as their own process; the users
 * are assigned beforehand.
 */
export async function routeBench(): Promise<BenchResult> {
  const etcd = await startEtcd();
  const dir = tempDir('mailshare-bench-');
  // BENCH_CPU_PROF=DIR: the coordinator writes a CPU profile there (node --cpu-prof) when it exits.
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const server = spawn(process.execPath, [...prof, BIN, 'server', '--etcd', etcd.endpoints.join(','), '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--data-dir', dir.path, '--log-level', 'warn'], {
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

    // Floor: a bare Node HTTP server in its own process that reads the body and answers a JSON
    // object of the same size at once (what any HTTP service costs on this machine).
    const floorServer = spawn(
      process.execPath,
      ['-e', `const b=Buffer.from(JSON.stringify({tenant:'acme',user:'u0',destuser:'u0@acme.test',node:'bench',host:'127.0.0.1',port:143,epoch:1}));require('http').createServer((q,r)=>{q.on('data',()=>{});q.on('end',()=>{r.writeHead(200,{'content-type':'application/json','content-length':b.length});r.end(b)})}).listen(0,'127.0.0.1',function(){console.log(this.address().port)})`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const floorAddr = await new Promise<string>((resolve) => floorServer.stdout!.once('data', (c: Buffer) => resolve(`127.0.0.1:${c.toString().trim()}`)));
    const load = (target: string) =>
      workerOutput<{ lat: number[]; fromSend: number[]; failed: number; secs: number }>(
        spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/route-worker.ts'), target, proxyToken, String(RATE), String(CONNECTIONS), String(SECONDS), String(USERS)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] }),
        'route-worker',
      );
    // Subject: the route endpoint; rounds alternate with the floor, medians are reported.
    const rounds: Array<{ route: ReturnType<typeof summary>; floor: ReturnType<typeof summary> }> = [];
    try {
      for (let r = 0; r < ROUNDS; r++) {
        const floor = summary(await load(floorAddr));
        const route = summary(await load(httpAddr));
        rounds.push({ route, floor });
      }
    } finally {
      floorServer.kill('SIGTERM');
    }
    await agent.close();
    const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const p99 = med(rounds.map((r) => r.route.p99));
    const floorP99 = med(rounds.map((r) => r.floor.p99));
    const failed = rounds.reduce((n, r) => n + r.route.failed, 0);
    const achieved = Math.min(...rounds.map((r) => r.route.rate));
    return {
      name: 'route',
      ratio: floorP99 / p99,
      goal: 'p99 <= 2 ms at 1,000 requests/s from 50 connections (ratio: bare-HTTP floor p99 / route p99)',
      met: p99 <= 2 && achieved >= RATE * 0.95 && failed === 0,
      figures: {
        'rounds': ROUNDS,
        'requests per round': RATE * SECONDS,
        'failed': failed,
        'achieved requests/s (lowest round)': Math.round(achieved),
        'route p50 ms (median)': +med(rounds.map((r) => r.route.p50)).toFixed(3),
        'route p99 ms (median)': +p99.toFixed(3),
        'route p99 ms (each round)': rounds.map((r) => r.route.p99.toFixed(2)).join(' '),
        'route p99 from send ms (median)': +med(rounds.map((r) => r.route.p99FromSend)).toFixed(3),
        'floor p50 ms (median)': +med(rounds.map((r) => r.floor.p50)).toFixed(3),
        'floor p99 ms (median)': +floorP99.toFixed(3),
        'floor p99 ms (each round)': rounds.map((r) => r.floor.p99.toFixed(2)).join(' '),
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
