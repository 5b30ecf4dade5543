import { execFileSync, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createGateway } from '../../src/gateway/gateway.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { REPO_ROOT } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

const USERS = 20;
const PASSWORD = 'bench-pw';
const IMAPTEST_TOOL = process.env.IMAPTEST_DIR ?? path.resolve(REPO_ROOT, '..', 'shared', 'tools', 'imaptest');

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${path.basename(cmd)} exited ${code}: ${err.trim().split('\n').pop() ?? ''}`));
    });
  });
}

/** Python imaplib (Nagle on, literal and CRLF in separate writes): medians in ms. */
async function imaplib(address: string): Promise<{ login: number; select: number; append: number }> {
  const [host, port] = address.split(':');
  const out = await run('python3', [path.join(REPO_ROOT, 'test/bench/imaplib-latency.py'), host!, port!, 'u1', PASSWORD, '15'], 120_000);
  return JSON.parse(out) as { login: number; select: number; append: number };
}

/** imaptest's stress mode, 10 clients over 20 users: its "ms/cmd avg" per command. */
async function imaptest(bin: string, address: string, mbox: string): Promise<Record<string, number>> {
  const [host, port] = address.split(':');
  const out = await run(bin, [`host=${host}`, `port=${port}`, 'user=u%d', `users=${USERS}`, `pass=${PASSWORD}`, `mbox=${mbox}`, 'clients=10', 'secs=8'], 60_000);
  const header = /^(Logi .*)$/m.exec(out)?.[1]?.trim().split(/\s+/);
  const avg = /^(.*)ms\/cmd avg$/m.exec(out)?.[1]?.trim().split(/\s+/).map(Number);
  if (!header || !avg) throw new Error(`imaptest printed no "ms/cmd avg" line:\n${out.slice(-500)}`);
  return Object.fromEntries(header.map((h, i) => [h, avg[i]!]));
}

/** imaptest's binary (built once, cached), or undefined where the tool is not around. */
function imaptestBinary(): string | undefined {
  if (!existsSync(path.join(IMAPTEST_TOOL, 'build.sh'))) return undefined;
  return execFileSync('bash', [path.join(IMAPTEST_TOOL, 'build.sh')], { stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim().split('\n').pop();
}

/** Messages with unique Message-IDs: imaptest's state tracking needs them. */
function writeMbox(file: string): void {
  let s = '';
  for (let i = 0; i < 50; i++) s += `From bench@example.com Mon Jan  1 00:00:00 2024\nFrom: bench@example.com\nMessage-ID: <m${i}@bench>\nSubject: m${i}\n\n${'line\n'.repeat(20)}\n`;
  writeFileSync(file, s);
}

const within = (gateway: number, direct: number): boolean => gateway <= 1.3 * direct + 2;

/**
 * imap-latency: what one proxy hop costs per command, with clients that
 * time commands one by one. Python's imaplib (Nagle on: each APPEND's CRLF
 * waits for the ACK of its literal) and imaptest's stress mode (10 clients,
 * 20 users), each directly against Dovecot and through a gateway, twice in
 * alternation in one run. Goal: LOGIN and APPEND through the gateway
 * ≤ 1.3× direct + 2 ms. The ratio is direct / gateway imaplib LOGIN
 * latency (1.0: the hop costs nothing).
 */
export async function imapLatency(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const root = mailRoot();
  const dir = tempDir('mailshare-bench-latency-');
  const users = Object.fromEntries(Array.from({ length: USERS + 1 }, (_, i) => [`u${i}`, PASSWORD]));
  const master = { user: 'gateway', password: 'bench-master' };
  let backend: DovecotInstance | undefined;
  try {
    backend = await startDovecot({ name: 'latency', mailRoot: root.path, users, master });
    const gateway = createGateway({ listen: '127.0.0.1:0', coordinators: [c.addr], token: c.nodeToken, node: { name: 'bench', backend: backend.address }, tenant: 'bench', master, ttlSeconds: 10 });
    await gateway.start();
    const targets = { direct: backend.address, gateway: gateway.address() };
    const bin = imaptestBinary();
    const mbox = path.join(dir.path, 'stress.mbox');
    writeMbox(mbox);
    const py: Record<string, Array<{ login: number; select: number; append: number }>> = { direct: [], gateway: [] };
    const stress: Record<string, Array<Record<string, number>>> = { direct: [], gateway: [] };
    // Warm up both paths (Dovecot's indexes, the gateway's assignments).
    for (const t of Object.values(targets)) await imaplib(t);
    for (let round = 0; round < 2; round++) {
      for (const [name, address] of Object.entries(targets)) {
        process.stderr.write(`imap-latency: imaplib, ${name}, round ${round + 1}\n`);
        py[name]!.push(await imaplib(address));
        if (bin) {
          process.stderr.write(`imap-latency: imaptest stress, ${name}, round ${round + 1}\n`);
          stress[name]!.push(await imaptest(bin, address, mbox));
        }
      }
    }
    await gateway.close();
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const figures: Record<string, number | string> = {};
    const checks: boolean[] = [];
    for (const cmd of ['login', 'select', 'append'] as const) {
      const d = mean(py.direct!.map((r) => r[cmd]));
      const g = mean(py.gateway!.map((r) => r[cmd]));
      figures[`imaplib ${cmd.toUpperCase()} direct ms`] = +d.toFixed(2);
      figures[`imaplib ${cmd.toUpperCase()} gateway ms`] = +g.toFixed(2);
      if (cmd !== 'select') checks.push(within(g, d));
    }
    if (bin) {
      for (const [col, cmd] of [['Logi', 'LOGIN'], ['Sele', 'SELECT'], ['Appe', 'APPEND']] as const) {
        const d = mean(stress.direct!.map((r) => r[col]!));
        const g = mean(stress.gateway!.map((r) => r[col]!));
        figures[`imaptest ${cmd} direct ms`] = +d.toFixed(1);
        figures[`imaptest ${cmd} gateway ms`] = +g.toFixed(1);
        if (cmd !== 'SELECT') checks.push(within(g, d));
      }
    } else {
      figures['imaptest stress'] = `not run (no imaptest tools at ${IMAPTEST_TOOL}; set IMAPTEST_DIR)`;
    }
    const ratio = mean(py.direct!.map((r) => r.login)) / mean(py.gateway!.map((r) => r.login));
    return { name: 'imap-latency', ratio, goal: 'LOGIN and APPEND through the gateway <= 1.3x direct + 2 ms (imaplib and imaptest)', met: checks.every(Boolean), figures };
  } finally {
    await backend?.stop().catch(() => undefined);
    root.remove();
    dir.remove();
    await c.stop();
  }
}
