import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type EtcdCluster, startEtcd } from '../harness/etcd.js';
import { BIN, REPO_ROOT, cleanEnv } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { workerOutput } from './worker-output.js';

/** etcd + a coordinator in its own process, with admin and node tokens. */
export interface BenchCluster {
  etcd: EtcdCluster;
  addr: string;
  adminToken: string;
  /** Token of node "bench" (a node token acts for its own node only). */
  nodeToken: string;
  /** The token of another node. */
  tokenFor(node: string): Promise<string>;
  /** The coordinator's process id (for memory figures). */
  serverPid: number;
  stop(): Promise<void>;
}

/** A coordinator process on `etcd` (its default prefix), with extra flags; `dir` holds its data. */
export async function startCoordinator(etcd: EtcdCluster, dir: string, extra: string[] = []): Promise<{ addr: string; pid: number; stop(): Promise<void> }> {
  const prof = process.env.MAILSHARE_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.MAILSHARE_BENCH_PROF] : [];
  const server: ChildProcess = spawn(process.execPath, [...prof, BIN, 'server', '--etcd', etcd.endpoints.join(','), '--listen', '127.0.0.1:0', '--data-dir', dir, '--log-level', 'warn', ...extra], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const addr = await new Promise<string>((resolve, reject) => {
    let out = '';
    server.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    server.on('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  return {
    addr,
    pid: server.pid!,
    stop: async () => {
      if (server.exitCode !== null) return;
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    },
  };
}

export async function startBenchCluster(): Promise<BenchCluster> {
  const etcd = await startEtcd();
  const dir = tempDir('mailshare-bench-');
  const server = await startCoordinator(etcd, dir.path);
  const addr = server.addr;
  const adminToken = (JSON.parse(readFileSync(path.join(dir.path, 'credentials.json'), 'utf8')) as { token: string }).token;
  const admin = connectApi(addr, adminToken);
  const tokenFor = nodeTokens(admin);
  const nodeToken = await tokenFor('bench');
  return {
    etcd,
    addr,
    adminToken,
    nodeToken,
    tokenFor,
    serverPid: server.pid,
    stop: async () => {
      admin.close();
      await server.stop();
      await etcd.stop();
      dir.remove();
    },
  };
}

/** Runs the load worker in its own process and returns what it measured. */
export function runWorker(args: string[]): Promise<{ ops: number; p50: number; p99: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/load-worker.ts'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return workerOutput(child, 'load worker');
}
