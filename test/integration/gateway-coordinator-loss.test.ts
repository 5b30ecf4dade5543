import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getFreePort } from '../../src/store/etcd-process.js';
import { connectApi } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import { BIN, cleanEnv, type ServerProcess, spawnServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * The core promise, with the real binaries: a gateway whose only
 * coordinator is paused (SIGSTOP) or killed past the lease TTL serves
 * nothing (its sessions end with BYE [UNAVAILABLE], new logins get
 * NO [UNAVAILABLE]: another node could be given its users by now), writes a
 * bounded number of log lines while it retries, and serves again once the
 * coordinator is back.
 */
const TTL = 2;
let etcd: EtcdCluster;
let dataDir: { path: string; remove(): void };
let root: { path: string; remove(): void };
let dovecot: DovecotInstance;
let server: ServerProcess;
let listen: string;
let gateway: ChildProcess;
let gatewayAddress = '';
let gatewayOutput = '';

const startServer = (): Promise<ServerProcess> => spawnServer(['--etcd', etcd.endpoints.join(','), '--listen', listen, '--data-dir', dataDir.path, '--log-level', 'warn']);

beforeAll(async () => {
  etcd = await startEtcd();
  dataDir = tempDir('mailshare-coordloss-');
  listen = `127.0.0.1:${await getFreePort()}`;
  server = await startServer();
  const adminToken = (JSON.parse(readFileSync(path.join(dataDir.path, 'credentials.json'), 'utf8')) as { token: string }).token;
  const admin = connectApi(server.addr, adminToken);
  await admin.directory.createTenant({ id: 'acme', domains: [] });
  const token = (await admin.auth.createToken({ role: 'node:n1', description: '' })).token;
  admin.close();
  root = mailRoot();
  dovecot = await startDovecot({ name: 'cl', mailRoot: root.path, users: { alice: 'alice-pw' }, master: { user: 'gateway', password: 'm' } });
  gateway = spawn(process.execPath, [BIN, 'gateway', '--node', 'n1', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.addr, '--ttl', String(TTL), '--log-level', 'info'], {
    env: cleanEnv({ MAILSHARE_TOKEN: token }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gateway.stdout!.on('data', (c: Buffer) => (gatewayOutput += c.toString()));
  gateway.stderr!.on('data', (c: Buffer) => (gatewayOutput += c.toString()));
  await waitFor(() => /listening on (\S+)/.test(gatewayOutput), 20_000, 'gateway listening');
  gatewayAddress = /listening on (\S+)/.exec(gatewayOutput)![1]!;
}, 90_000);
afterAll(async () => {
  if (process.env.SHOW_GATEWAY_LOG) process.stdout.write(gatewayOutput);
  gateway?.kill("SIGKILL");
  server?.child.kill('SIGCONT');
  await server?.stop();
  await dovecot?.stop();
  await etcd?.stop();
  root?.remove();
  dataDir?.remove();
});

const lines = (): number => gatewayOutput.split('\n').filter((l) => l.trim() !== '').length;

async function loginWorks(): Promise<boolean> {
  const c = await RawImap.connect(gatewayAddress);
  try {
    return /^t\d+ OK/m.test(await c.cmd('LOGIN alice alice-pw', 8000));
  } catch {
    return false;
  } finally {
    c.close();
  }
}

/** While the coordinator is gone: the session ends, logins are refused, the log stays short. */
async function expectNothingServed(session: RawImap, linesBefore: number): Promise<void> {
  await waitFor(() => session.closed, (TTL + 3) * 1000, 'session ended');
  expect(session.pending()).toMatch(/^\* BYE \[UNAVAILABLE\]/m);
  const c = await RawImap.connect(gatewayAddress);
  expect(await c.cmd('LOGIN alice alice-pw', 8000)).toMatch(/^t\d+ NO \[UNAVAILABLE\]/m);
  c.close();
  // Keep it down a while longer: retries are paced, failures logged once plus summaries.
  await new Promise((r) => setTimeout(r, 4000));
  expect(lines() - linesBefore).toBeLessThan(25);
}

describe('a gateway whose coordinator is gone serves nothing', () => {
  it('while the coordinator is paused past the lease TTL; serves again after it resumes', async () => {
    expect(await loginWorks()).toBe(true);
    const session = await RawImap.login(gatewayAddress, 'alice', 'alice-pw');
    const before = lines();
    server.child.kill('SIGSTOP');
    try {
      await expectNothingServed(session, before);
    } finally {
      server.child.kill('SIGCONT');
    }
    const resumed = Date.now();
    await waitFor(loginWorks, 20_000, 'logins again');
    process.stdout.write(`coordinator-loss: logins again ${Date.now() - resumed} ms after SIGCONT\n`);
  }, 60_000);

  it('while the coordinator is killed; serves again once it is restarted on its data', async () => {
    const session = await RawImap.login(gatewayAddress, 'alice', 'alice-pw');
    const before = lines();
    server.child.kill('SIGKILL');
    await server.exited;
    await expectNothingServed(session, before);
    const restarting = Date.now();
    server = await startServer();
    const restarted = Date.now();
    if (process.env.SHOW_GATEWAY_LOG) process.stdout.write(`restart began ${new Date(restarting).toISOString()}, listening ${new Date(restarted).toISOString()}\n`);
    await waitFor(loginWorks, 20_000, 'logins again');
    process.stdout.write(`coordinator-loss: logins again ${Date.now() - restarted} ms after the restart\n`);
  }, 60_000);
});
