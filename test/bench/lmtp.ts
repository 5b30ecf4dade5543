import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { createGateway } from '../../src/gateway/gateway.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';
import { workerOutput } from './worker-output.js';

const USERS = 20;
/** Rounds of each case (direct and gateway back to back); the figures are their medians. */
const ROUNDS = 5;

function load(address: string, senders: number, messages: number, size: number, rcpts: string[]): Promise<{ secs: number; deliveries: number; p50: number; p99: number; failed: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/lmtp-worker.ts'), address, String(senders), String(messages), String(size), rcpts.join(',')], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return workerOutput(child, 'lmtp-worker');
}

/**
 * A relay that copies bytes both ways and does nothing else: the floor of
 * what any proxy costs on this machine (its hop and its copies), run in the
 * gateway's process beside it.
 */
async function startBytePipe(to: string): Promise<{ address: string; close(): void }> {
  const [host, port] = to.split(':');
  const server = net.createServer((client) => {
    const up = net.connect(Number(port), host);
    client.setNoDelay(true);
    up.setNoDelay(true);
    client.pipe(up).on('error', () => client.destroy());
    up.pipe(client).on('error', () => up.destroy());
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, close: () => server.close() };
}

/**
 * lmtp: mail delivery through the gateway's LMTP against the same Dovecot
 * LMTP directly, same run: 1 and 20 concurrent senders,
 * 10 kB and 1 MB messages, each sender one connection delivering message
 * after message (20 users, their assignments already made, so the hop and
 * not first-time placement is measured). Goal: ≥ 0.9× direct throughput
 * and p99 ≤ 1.3× direct in every case, each the median over five rounds
 * of the ratio to the direct run beside it. A byte pipe is measured too
 * (the floor of any proxy here). The ratio is the worst throughput ratio.
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
    const pipe = await startBytePipe(backend.lmtpAddress!);
    const targets = { direct: backend.lmtpAddress!, pipe: pipe.address, gateway: gateway.lmtpAddress()! };
    const rcpts = Object.keys(users);
    // Warm up: assignments, Dovecot's indexes, the gateway's upstream connections.
    for (const t of Object.values(targets)) await load(t, 4, 80, 2000, rcpts);
    const cases = [
      { senders: 1, size: 10_000, messages: 300 },
      { senders: 20, size: 10_000, messages: 1000 },
      { senders: 1, size: 1 << 20, messages: 60 },
      { senders: 20, size: 1 << 20, messages: 100 },
    ];
    const figures: Record<string, number | string> = {};
    let worst = Infinity;
    let met = true;
    for (const k of cases) {
      const label = `${k.senders} sender${k.senders > 1 ? 's' : ''}, ${k.size >= 1 << 20 ? '1 MB' : '10 kB'}`;
      const runs: Record<string, Array<{ rate: number; p50: number; p99: number }>> = { direct: [], pipe: [], gateway: [] };
      for (let round = 0; round < ROUNDS; round++) {
        // Back to back in each round, the order rotated every round (the machine's load drifts).
        const all = Object.entries(targets);
        const order = [...all.slice(round % all.length), ...all.slice(0, round % all.length)];
        for (const [name, address] of order) {
          process.stderr.write(`lmtp: ${label}, ${name}, round ${round + 1}\n`);
          const r = await load(address, k.senders, k.messages, k.size, rcpts);
          if (r.failed > 0) throw new Error(`${r.failed} deliveries failed (${name}, ${label})`);
          runs[name]!.push({ rate: r.deliveries / r.secs, p50: r.p50, p99: r.p99 });
        }
      }
      const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const of = (name: string, f: 'rate' | 'p50' | 'p99'): number => median(runs[name]!.map((r) => r[f]));
      // Ratios per round (gateway against the direct run beside it), then their median.
      const rateRatio = median(runs.gateway!.map((g, i) => g.rate / runs.direct![i]!.rate));
      const p99Ratio = median(runs.gateway!.map((g, i) => g.p99 / runs.direct![i]!.p99));
      figures[`${label}: direct msg/s`] = +of('direct', 'rate').toFixed(1);
      figures[`${label}: gateway msg/s`] = +of('gateway', 'rate').toFixed(1);
      figures[`${label}: throughput ratio`] = +rateRatio.toFixed(2);
      figures[`${label}: byte pipe msg/s`] = +of('pipe', 'rate').toFixed(1);
      figures[`${label}: byte pipe ratio`] = +median(runs.pipe!.map((p, i) => p.rate / runs.direct![i]!.rate)).toFixed(2);
      figures[`${label}: direct p50 ms`] = +of('direct', 'p50').toFixed(2);
      figures[`${label}: gateway p50 ms`] = +of('gateway', 'p50').toFixed(2);
      figures[`${label}: direct p99 ms`] = +of('direct', 'p99').toFixed(1);
      figures[`${label}: gateway p99 ms`] = +of('gateway', 'p99').toFixed(1);
      figures[`${label}: p99 ratio`] = +p99Ratio.toFixed(2);
      worst = Math.min(worst, rateRatio);
      if (rateRatio < 0.9 || p99Ratio > 1.3) met = false;
    }
    await gateway.close();
    pipe.close();
    return { name: 'lmtp', ratio: worst, goal: 'gateway >= 0.9x direct deliveries/s and p99 <= 1.3x direct, 1 and 20 senders, 10 kB and 1 MB', met, figures };
  } finally {
    await backend?.stop().catch(() => undefined);
    root.remove();
    await c.stop();
  }
}
