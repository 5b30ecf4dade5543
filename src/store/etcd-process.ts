import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, openSync, closeSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { DomainError } from '../domain/errors.js';

/**
 * Spawns and supervises an etcd member as a child process. Used by the
 * embedded mode of `mailshare server` and by the test harness.
 *
 * The child is started through `setpriv --pdeathsig TERM` when available, so
 * the kernel terminates etcd even if this process dies by SIGKILL: an
 * embedded etcd never outlives its server.
 */
export interface EtcdMemberOptions {
  /** etcd executable; default "etcd" from PATH. */
  binary?: string;
  /** Member name; default "default". */
  name?: string;
  dataDir: string;
  /** Loopback client port; 0 or undefined picks a free one. */
  clientPort?: number;
  peerPort?: number;
  /**
   * Cluster membership for multi-member clusters: "n1=http://…,n2=http://…".
   * Default: a single-member cluster of this member.
   */
  initialCluster?: string;
  initialClusterState?: 'new' | 'existing';
  initialClusterToken?: string;
  /** Short raft timers (heartbeat 10 ms, election 100 ms) for tests. */
  fastElections?: boolean;
  /** Append etcd's own log here; default <dataDir>/../etcd-<name>.log. */
  logFile?: string;
  /** How long to wait for /health; default 15 s. */
  startTimeoutMs?: number;
}

export interface EtcdMember {
  readonly name: string;
  readonly pid: number;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
  /** SIGTERM, then SIGKILL after timeoutMs; resolves once the process is gone. */
  stop(timeoutMs?: number): Promise<void>;
  /** Sends a signal without waiting (kill -9 in fault tests). */
  kill(signal?: NodeJS.Signals): void;
}

const SETPRIV = '/usr/bin/setpriv';

export async function getFreePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

export async function spawnEtcdMember(opts: EtcdMemberOptions): Promise<EtcdMember> {
  const name = opts.name ?? 'default';
  const clientPort = opts.clientPort || (await getFreePort());
  let peerPort = opts.peerPort || (await getFreePort());
  while (peerPort === clientPort) peerPort = await getFreePort();
  const clientUrl = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });

  const args = [
    '--name', name,
    '--data-dir', opts.dataDir,
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', opts.initialCluster ?? `${name}=${peerUrl}`,
    '--initial-cluster-state', opts.initialClusterState ?? 'new',
    '--initial-cluster-token', opts.initialClusterToken ?? `mailshare-${name}`,
    '--listen-metrics-urls', '',
    // Auto-compaction keeps history bounded; watchers resync on compaction.
    '--auto-compaction-mode', 'periodic',
    '--auto-compaction-retention', '1h',
  ];
  if (opts.fastElections) args.push('--heartbeat-interval', '10', '--election-timeout', '100');

  const binary = resolveExecutable(opts.binary ?? 'etcd');
  const logFile = opts.logFile ?? path.join(path.dirname(opts.dataDir), `etcd-${name}.log`);
  const logFd = openSync(logFile, 'a', 0o600);
  const [cmd, cmdArgs] = existsSync(SETPRIV)
    ? [SETPRIV, ['--pdeathsig', 'TERM', '--', binary, ...args]]
    : [binary, args];
  let child: ChildProcess;
  try {
    child = spawn(cmd, cmdArgs, { stdio: ['ignore', logFd, logFd], detached: false });
  } finally {
    closeSync(logFd);
  }

  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
  });
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err) =>
      reject(new DomainError('unavailable', `cannot start etcd (${binary}): ${err.message}`, { cause: err })),
    );
  });

  const member: EtcdMember = {
    name,
    pid: child.pid ?? -1,
    clientUrl,
    peerUrl,
    clientPort,
    peerPort,
    dataDir: opts.dataDir,
    exited,
    isRunning: () => running,
    kill: (signal = 'SIGKILL') => {
      if (running) child.kill(signal);
    },
    stop: async (timeoutMs = 10_000) => {
      if (!running) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
  };

  const startTimeout = opts.startTimeoutMs ?? 15_000;
  try {
    await Promise.race([
      spawnError,
      exited.then(({ code, signal }) => {
        throw new DomainError(
          'unavailable',
          `etcd exited during startup (code ${code ?? '-'}, signal ${signal ?? '-'}); see ${logFile}`,
        );
      }),
      waitHealthy(clientUrl, startTimeout, () => running),
    ]);
  } catch (err) {
    await member.stop(2000);
    throw err;
  }
  return member;
}

/**
 * Finds an executable like the shell does, so a missing etcd is reported as
 * such instead of as an exit code of the setpriv wrapper.
 */
export function resolveExecutable(name: string): string {
  const candidates = name.includes('/')
    ? [path.resolve(name)]
    : (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter(Boolean).map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      if (statSync(c).isFile()) {
        accessSync(c, constants.X_OK);
        return c;
      }
    } catch {
      // not here; keep looking
    }
  }
  throw new DomainError(
    'unavailable',
    `cannot start etcd (${name}): ${name.includes('/') ? 'no executable file there' : 'not found in PATH'} (install etcd-server or pass --etcd-binary)`,
  );
}

/** Polls etcd's /health until it answers {"health":"true"}. */
export async function waitHealthy(clientUrl: string, timeoutMs: number, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline && alive()) {
    try {
      const body = await httpGet(`${clientUrl}/health`, 1000);
      if (/"health"\s*:\s*"true"/.test(body)) return;
      last = body.trim();
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!alive()) return; // the exit branch of the caller's race reports it
  throw new DomainError('unavailable', `etcd at ${clientUrl} not healthy after ${timeoutMs} ms: ${last}`);
}

function httpGet(url: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}
