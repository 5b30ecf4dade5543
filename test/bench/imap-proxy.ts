import { spawn } from 'node:child_process';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createGateway } from '../../src/gateway/gateway.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';
import { workerOutput } from './worker-output.js';

const CLIENTS = 50;
const MESSAGES = 1000;
/** Rounds of every case; each ratio is the median of the rounds' ratios. */
const ROUNDS = 3;

function worker(address: string, users: string[], rounds = 1): Promise<{ secs: number; loginP50: number; bytes: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/imap-worker.ts'), address, users.join(','), String(rounds)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return workerOutput(child, `imap worker for ${address}`, 300_000);
}

/** 1,000 messages of 10 kB per user, written straight into their maildirs (what APPEND would leave). */
function populate(root: string, users: string[]): void {
  const uid = Number(execFileSync('id', ['-u', 'nobody']).toString());
  const gid = Number(execFileSync('getent', ['group', 'nogroup']).toString().split(':')[2]);
  const body = `From: bench@example.com\r\nSubject: bench\r\n\r\n${'y'.repeat(10_000 - 48)}\r\n`;
  for (const u of users) {
    const dirs = ['', 'cur', 'new', 'tmp'].map((d) => path.join(root, u, d));
    for (const d of dirs) {
      mkdirSync(d, { recursive: true });
      chownSync(d, uid, gid);
    }
    for (let i = 0; i < MESSAGES; i++) {
      const f = path.join(root, u, 'cur', `${1_700_000_000 + i}.M${i}P1.bench:2,S`);
      writeFileSync(f, body);
      chownSync(f, uid, gid);
    }
  }
}

/**
 * imap-proxy: the same IMAP workload (login, select, fetch 1,000 messages of
 * 10 kB, append 100, logout) with 1 and 50 concurrent clients, directly
 * against Dovecot, through a mailshare gateway, and through Dovecot's own
 * proxy (a Dovecot whose passdb says proxy=y), all in one run (one client
 * runs five sessions in a row). Goals:
 * gateway ≥ 0.9× direct throughput, login latency ≤ 1.3× direct, ≥ 0.8× the
 * Dovecot proxy. The ratio is gateway / direct throughput at 50 clients.
 */
export async function imapProxy(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const root = mailRoot();
  const users = Array.from({ length: CLIENTS }, (_, i) => `b${i}`);
  const passwords = Object.fromEntries(users.map((u) => [u, `${u}-pw`]));
  const master = { user: 'gateway', password: 'bench-master' };
  const dovecots: DovecotInstance[] = [];
  try {
    populate(root.path, users);
    const backend = await startDovecot({ name: 'bench', mailRoot: root.path, users: passwords, master });
    dovecots.push(backend);
    const proxy = await startDovecot({ name: 'bench-proxy', mailRoot: root.path, users: passwords, master, proxyTo: backend.address });
    dovecots.push(proxy);
    const gateway = createGateway({ listen: '127.0.0.1:0', coordinators: [c.addr], token: c.nodeToken, node: { name: 'bench', backend: backend.address }, tenant: 'bench', master, ttlSeconds: 10 });
    await gateway.start();
    const targets: Record<string, string> = { direct: backend.address, gateway: gateway.address(), 'dovecot-proxy': proxy.address };
    const figures: Record<string, number> = {};
    // Warm up every path once (Dovecot's index files, the gateway's assignments).
    for (const [name, t] of Object.entries(targets)) {
      process.stderr.write(`imap-proxy: warming up ${name}\n`);
      await worker(t, users);
    }
    // Three rounds, the targets back to back in each: each ratio is the median of the rounds' ratios
    // (this machine is noisy; a ratio within one round compares like with like).
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const rounds: Array<Record<string, { secs: number; loginP50: number; bytes: number }>> = [];
    for (let round = 0; round < ROUNDS; round++) {
      const r: Record<string, { secs: number; loginP50: number; bytes: number }> = {};
      for (const conc of [1, CLIENTS]) {
        for (const [name, address] of Object.entries(targets)) {
          process.stderr.write(`imap-proxy: round ${round + 1}, ${name}, ${conc} client(s)\n`);
          // One client: five sessions in a row, so the login median has more than one sample.
          r[`${name}${conc}`] = await worker(address, users.slice(0, conc), conc === 1 ? 5 : 1);
        }
      }
      rounds.push(r);
    }
    await gateway.close();
    for (const conc of [1, CLIENTS]) {
      for (const name of Object.keys(targets)) {
        figures[`${name} c=${conc} MB/s (median)`] = +median(rounds.map((r) => r[`${name}${conc}`]!.bytes / r[`${name}${conc}`]!.secs / 1e6)).toFixed(1);
        figures[`${name} c=${conc} login p50 ms (median)`] = +median(rounds.map((r) => r[`${name}${conc}`]!.loginP50)).toFixed(2);
      }
    }
    const tput = (r: (typeof rounds)[number], k: string) => r[k]!.bytes / r[k]!.secs;
    const perRound = rounds.map((r) => ({
      vsDirect: tput(r, `gateway${CLIENTS}`) / tput(r, `direct${CLIENTS}`),
      vsProxy: tput(r, `gateway${CLIENTS}`) / tput(r, `dovecot-proxy${CLIENTS}`),
      login: r.gateway1!.loginP50 / r.direct1!.loginP50,
    }));
    perRound.forEach((x, i) => (figures[`round ${i + 1} gateway/direct throughput`] = +x.vsDirect.toFixed(2)));
    const vsDirect = median(perRound.map((x) => x.vsDirect));
    const vsProxy = median(perRound.map((x) => x.vsProxy));
    const login = median(perRound.map((x) => x.login));
    figures['gateway/direct throughput (median of rounds)'] = +vsDirect.toFixed(2);
    figures['gateway/dovecot-proxy throughput (median of rounds)'] = +vsProxy.toFixed(2);
    figures['gateway/direct login latency (median of rounds)'] = +login.toFixed(2);
    return {
      name: 'imap-proxy',
      ratio: vsDirect,
      goal: '>= 0.9x direct throughput, login <= 1.3x direct, >= 0.8x the Dovecot proxy (medians of 3 rounds)',
      met: vsDirect >= 0.9 && login <= 1.3 && vsProxy >= 0.8,
      figures,
    };
  } finally {
    for (const d of dovecots) await d.stop().catch(() => undefined);
    root.remove();
    await c.stop();
  }
}
