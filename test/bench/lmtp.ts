import { spawn } from 'node:child_process';
import path from 'node:path';
import { createGateway } from '../../src/gateway/gateway.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

const USERS = 20;

function load(address: string, senders: number, messages: number, size: number, rcpts: string[]): Promise<{ secs: number; deliveries: number; p50: number; p99: number; failed: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/lmtp-worker.ts'), address, String(senders), String(messages), String(size), rcpts.join(',')], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as never) : reject(new Error(`lmtp-worker exited ${code}`))));
  });
}

/**
 * lmtp: mail delivery through the gateway's LMTP against the same Dovecot
 * LMTP directly, same run, alternating twice: 1 and 20 concurrent senders,
 * 10 kB and 1 MB messages, each sender one connection delivering message
 * after message (20 users, their assignments already made, so the hop and
 * not first-time placement is measured). Goal: ≥ 0.9× direct throughput
 * and p99 ≤ 1.3× direct in every case. The ratio is the worst
 * throughput ratio.
 */
export async function lmtpBench(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const root = mailRoot();
  const users = Object.fromEntries(Array.from({ length: USERS }, (_, i) => [`u${i}`, 'bench-pw']));
  let backend: DovecotInstance | undefined;
  try {
    backend = await startDovecot({ name: 'lmtp-bench', mailRoot: root.path, users, master: { user: 'gateway', password: 'm' }, protocols: ['lmtp'] });
    const gateway = createGateway({
      listen: '127.0.0.1:0',
      coordinators: [c.addr],
      token: c.nodeToken,
      node: { name: 'bench', backend: backend.address },
      tenant: 'bench',
      ttlSeconds: 10,
      lmtp: { backend: backend.lmtpAddress!, listen: '127.0.0.1:0' },
    });
    await gateway.start();
    const targets = { direct: backend.lmtpAddress!, gateway: gateway.lmtpAddress()! };
    const rcpts = Object.keys(users);
    // Warm up: assignments, Dovecot's indexes, the gateway's upstream connections.
    for (const t of Object.values(targets)) await load(t, 4, 80, 2000, rcpts);
    const cases = [
      { senders: 1, size: 10_000, messages: 300 },
      { senders: 20, size: 10_000, messages: 1000 },
      { senders: 1, size: 1 << 20, messages: 30 },
      { senders: 20, size: 1 << 20, messages: 100 },
    ];
    const figures: Record<string, number | string> = {};
    let worst = Infinity;
    let met = true;
    for (const k of cases) {
      const label = `${k.senders} sender${k.senders > 1 ? 's' : ''}, ${k.size >= 1 << 20 ? '1 MB' : '10 kB'}`;
      const runs: Record<string, Array<{ rate: number; p50: number; p99: number }>> = { direct: [], gateway: [] };
      for (let round = 0; round < 2; round++) {
        for (const [name, address] of Object.entries(targets)) {
          process.stderr.write(`lmtp: ${label}, ${name}, round ${round + 1}\n`);
          const r = await load(address, k.senders, k.messages, k.size, rcpts);
          if (r.failed > 0) throw new Error(`${r.failed} deliveries failed (${name}, ${label})`);
          runs[name]!.push({ rate: r.deliveries / r.secs, p50: r.p50, p99: r.p99 });
        }
      }
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
      const dRate = mean(runs.direct!.map((r) => r.rate));
      const gRate = mean(runs.gateway!.map((r) => r.rate));
      const dP99 = mean(runs.direct!.map((r) => r.p99));
      const gP99 = mean(runs.gateway!.map((r) => r.p99));
      figures[`${label}: direct msg/s`] = +dRate.toFixed(1);
      figures[`${label}: gateway msg/s`] = +gRate.toFixed(1);
      figures[`${label}: direct p50 ms`] = +mean(runs.direct!.map((r) => r.p50)).toFixed(2);
      figures[`${label}: gateway p50 ms`] = +mean(runs.gateway!.map((r) => r.p50)).toFixed(2);
      figures[`${label}: direct p99 ms`] = +dP99.toFixed(1);
      figures[`${label}: gateway p99 ms`] = +gP99.toFixed(1);
      worst = Math.min(worst, gRate / dRate);
      if (gRate < 0.9 * dRate || gP99 > 1.3 * dP99) met = false;
    }
    await gateway.close();
    return { name: 'lmtp', ratio: worst, goal: 'gateway >= 0.9x direct deliveries/s and p99 <= 1.3x direct, 1 and 20 senders, 10 kB and 1 MB', met, figures };
  } finally {
    await backend?.stop().catch(() => undefined);
    root.remove();
    await c.stop();
  }
}
