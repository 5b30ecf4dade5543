import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { DOVEADM_BIN, type DovecotInstance } from './dovecot.js';
import { waitFor } from './process.js';
import { BIN, cleanEnv } from './server.js';

/** `mailshare agent` beside a test Dovecot, as its own process (so it can be killed with -9). */
export interface AgentProcess {
  readonly child: ChildProcess;
  /** What it printed on stdout so far. */
  out(): string;
  /** Its /metrics address. */
  readonly metrics: string;
  /** Its login check's address (with `check`). */
  readonly check: string | undefined;
  /** Its stderr so far (the watchdog's lines too). */
  err(): string;
  readonly exited: Promise<number | null>;
}

/**
 * Starts `mailshare agent` for node `node` beside Dovecot `d` (IMAP, and POP3/LMTP where `d`
 * and the others serve them), with a 3 s lease, and waits for it to register. `check`: also serve
 * the login check on this host:port. `extra`: more flags.
 */
export async function spawnAgent(opts: { node: string; dovecot: DovecotInstance; token: string; coordinators: string; tenant?: string; check?: string; extra?: string[] }): Promise<AgentProcess> {
  const d = opts.dovecot;
  const args = [BIN, 'agent', '--node', opts.node, '--imap', d.address];
  if (d.pop3Address) args.push('--pop3', d.pop3Address);
  if (d.lmtpAddress) args.push('--lmtp', d.lmtpAddress);
  if (d.sieveAddress) args.push('--sieve', d.sieveAddress);
  if (d.submissionAddress) args.push('--submission', d.submissionAddress);
  args.push('--doveadm', DOVEADM_BIN, '--dovecot-config', path.join(d.dir, 'dovecot.conf'), '--coordinators', opts.coordinators, '--ttl', '3', '--metrics-listen', '127.0.0.1:0', '--log-level', 'warn');
  if (opts.tenant) args.push('--tenant', opts.tenant);
  if (opts.check) args.push('--check-listen', opts.check);
  args.push(...(opts.extra ?? []));
  const child = spawn(process.execPath, args, { env: cleanEnv({ MAILSHARE_TOKEN: opts.token }), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await waitFor(() => /registered/.test(out) || child.exitCode !== null, 20_000, `agent ${opts.node} registered`);
  if (!/registered/.test(out)) throw new Error(`agent ${opts.node} exited: ${err.trim()}`);
  return {
    child,
    out: () => out,
    err: () => err,
    metrics: /metrics on (\S+?)(;|$)/m.exec(out)![1]!,
    check: /login check on (\S+)/.exec(out)?.[1],
    exited,
  };
}
