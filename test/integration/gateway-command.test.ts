import { spawn } from 'node:child_process';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { BIN, cleanEnv, runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let dovecot: DovecotInstance;
let root: ReturnType<typeof mailRoot>;
let nodeToken: string;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  nodeToken = (await admin.auth.createToken({ role: 'node', description: '' })).token;
  admin.close();
  root = mailRoot();
  dovecot = await startDovecot({ name: 'gw', mailRoot: root.path, users: { alice: 'alice-pw' }, master: { user: 'gateway', password: 'm' } });
}, 60_000);
afterAll(async () => {
  await dovecot?.stop();
  await server?.stop();
  await etcd?.stop();
  root?.remove();
});

describe('mailshare gateway (real binary)', () => {
  it('serves IMAP logins for its node and deregisters on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'gateway', '--node', 'imap1', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.address, '--ttl', '30', '--log-level', 'warn', '--master-user', 'gateway', '--shared-prefix', 'Other/'], {
      env: cleanEnv({ MAILSHARE_TOKEN: nodeToken, MAILSHARE_MASTER_PASSWORD: 'm' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor(() => /listening on (\S+)/.test(out), 20_000, `gateway listening (${err})`);
      expect(out).toMatch(/^mailshare gateway imap1 listening on 127\.0\.0\.1:\d+ \(backend 127\.0\.0\.1:\d+, tenant acme\)\n$/);
      const [host, port] = /listening on (\S+)/.exec(out)![1]!.split(':');
      const s = net.connect(Number(port), host);
      let imap = '';
      s.on('data', (c: Buffer) => (imap += c.toString()));
      s.write('a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nn NAMESPACE\r\nc LOGOUT\r\n');
      await waitFor(() => /c OK/.test(imap), 10_000, 'IMAP conversation');
      s.destroy();
      expect(imap).toMatch(/a OK .*Logged in/);
      expect(imap).toMatch(/b OK \[READ-WRITE\]/);
      expect(imap).toMatch(/^\* NAMESPACE .* \(\("Other\/" "\/"\)\)\r$/m);
      expect(imap).toMatch(/a OK \[CAPABILITY [^\]]*\bACL RIGHTS=texk\b/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
      try {
        const nodes = await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken);
        expect(nodes.nodes.find((n) => n.name === 'imap1')?.state).toBe('down');
      } finally {
        placement.close();
      }
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);

  it('refuses to start without a token or with bad flags, in one line', async () => {
    const noToken = await runCli(['gateway', '--node', 'imap1', '--backend', '127.0.0.1:1', '--tenant', 'acme']);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toBe('mailshare: token: set MAILSHARE_TOKEN to a token with role node\n');
    const badBackend = await runCli(['gateway', '--node', 'imap1', '--backend', 'nowhere', '--tenant', 'acme'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(badBackend.code).toBe(2);
    expect(badBackend.stderr).toMatch(/^mailshare: option '--backend <host:port>' argument 'nowhere' is invalid/);
    const base = ['gateway', '--node', 'imap1', '--backend', '127.0.0.1:1', '--tenant', 'acme'];
    const noPassword = await runCli([...base, '--master-user', 'gateway'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(noPassword.code).toBe(2);
    expect(noPassword.stderr).toBe('mailshare: master-user: set MAILSHARE_MASTER_PASSWORD to its password\n');
    const badPrefix = await runCli([...base, '--shared-prefix', 'Shared'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(badPrefix.code).toBe(2);
    expect(badPrefix.stderr).toBe('mailshare: shared-prefix: "Shared" must be printable ASCII without * % " \\ and end with "/"\n');
  });
});
