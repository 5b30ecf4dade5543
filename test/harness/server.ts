import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadServerConfig } from '../../src/config/server-config.js';
import { startServer, type RunningServer } from '../../src/services/app.js';
import { tempDir } from './tmp.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The built CLI (npm test builds first). */
export const BIN = path.join(REPO_ROOT, 'dist', 'bin', 'mailshare.js');

export interface InProcessServer extends RunningServer {
  /** Bootstrap admin token. */
  readonly adminToken: string;
  readonly prefix: string;
  stop(): Promise<void>;
}

/**
 * A real coordinator in this process on 127.0.0.1:0 against the given etcd,
 * under a fresh key prefix so tests sharing one etcd never see each other.
 */
export async function startInProcessServer(opts: {
  endpoints: readonly string[];
  flags?: Record<string, unknown>;
  /** Share a prefix (and so all state) with another coordinator; default: a fresh one. */
  prefix?: string;
}): Promise<InProcessServer> {
  const tmp = tempDir('mailshare-srv-');
  const prefix = opts.prefix ?? `/t-${randomBytes(4).toString('hex')}/`;
  const config = loadServerConfig({
    flags: { listen: '127.0.0.1:0', etcd: opts.endpoints.join(','), etcdPrefix: prefix, dataDir: tmp.path, ...opts.flags },
    env: {},
    cwd: tmp.path,
  });
  const server = await startServer(config, pino({ level: 'silent' }), '0.0.0-test');
  const creds = server.credentialsFile ? (JSON.parse(readFileSync(server.credentialsFile, 'utf8')) as { token: string }) : { token: '' };
  return {
    ...server,
    adminToken: creds.token,
    prefix,
    stop: async () => {
      await server.shutdown();
      tmp.remove();
    },
  };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `mailshare` binary to completion. */
export function runCli(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? REPO_ROOT,
      env: cleanEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The environment without any MAILSHARE_* variables from the caller's shell. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MAILSHARE_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Address from the "listening on" line. */
  readonly addr: string;
  /** pid of the embedded etcd, from the JSON log; undefined with --etcd. */
  readonly etcdPid: number | undefined;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code/signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM and wait; SIGKILL after timeoutMs. */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `mailshare server` and waits until it prints where it listens. */
export async function spawnServer(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number } = {}): Promise<ServerProcess> {
  const child = spawn(process.execPath, [BIN, 'server', '--log-format', 'json', ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    void exited.then(({ code, signal }) => reject(new Error(`server exited (${code ?? signal}) before listening: ${err.trim()}`)));
    setTimeout(() => reject(new Error(`server not listening after ${opts.timeoutMs ?? 30_000} ms: ${err}`)), opts.timeoutMs ?? 30_000).unref();
  });
  let addr: string;
  try {
    addr = await ready;
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const etcdPidMatch = /"etcdPid":(\d+)/.exec(err);
  return {
    child,
    pid: child.pid!,
    addr,
    etcdPid: etcdPidMatch ? Number(etcdPidMatch[1]) : undefined,
    stdout: () => out,
    stderr: () => err,
    exited,
    stop: async (timeoutMs = 15_000) => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const r = await exited;
        clearTimeout(t);
        return r;
      }
      return exited;
    },
  };
}
