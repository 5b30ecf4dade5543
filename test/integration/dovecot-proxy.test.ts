import { chmodSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { Sidecar } from '../../src/sidecar/sidecar.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { python } from '../harness/lines.js';
import { waitFor } from '../harness/process.js';
import { REPO_ROOT, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * mailshare as the director of stock Dovecot proxies: a Dovecot 2.3 proxy
 * configured with deploy/dovecot/proxy.conf and mailshare-route.lua as
 * shipped (only their paths changed) asks the coordinator's /v1/route where
 * each user lives; two Dovecot backends each run `mailshare agent` (in
 * process here). IMAP, POP3 and LMTP through the proxy land on the node
 * mailshare assigned; a move kicks the old node's session and the next
 * login lands on the new node; the coordinator down fails logins as
 * temporary, never routes at random.
 */
const USERS = { 'alice@acme.test': 'alice-pw', 'bob@acme.test': 'bob-pw', 'carol@acme.test': 'carol-pw' };
let etcd: EtcdCluster;
let server: InProcessServer;
let root: ReturnType<typeof mailRoot>;
const lua = tempDir('mailshare-lua-');
const backends: DovecotInstance[] = [];
const agents: Sidecar[] = [];
let proxy: DovecotInstance;
let placement: PlacementServiceClient;

const logOf = (d: DovecotInstance): string => readFileSync(path.join(d.dir, 'dovecot.log'), 'utf8');
const nodeIndex = (node: string): number => (node === 'b1' ? 0 : 1);
const locate = async (user: string): Promise<string> => (await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign: false }, server.adminToken)).node;
/** Logins of `user` a backend's Dovecot has seen (its imap-login/pop3-login log lines). */
const logins = (d: DovecotInstance, user: string, service = 'imap'): number => logOf(d).split('\n').filter((l) => l.includes(`${service}-login: Info: Login: user=<${user}>`)).length;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints, flags: { httpListen: '127.0.0.1:0' } });
  const admin = connectApi(server.address, server.adminToken);
  const tokens = nodeTokens(admin);
  await admin.directory.createTenant({ id: 'acme', domains: ['acme.test'] });
  const proxyToken = (await admin.auth.createToken({ role: 'proxy', description: 'test Dovecot proxy' })).token;
  const nodeTokenList = [await tokens('b1'), await tokens('b2')];
  admin.close();
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  root = mailRoot();
  for (const name of ['b1', 'b2']) backends.push(await startDovecot({ name, mailRoot: root.path, users: USERS, master: { user: 'gateway', password: 'm' }, protocols: ['pop3', 'lmtp'] }));
  for (const [i, name] of ['b1', 'b2'].entries()) {
    const d = backends[i]!;
    const a = new Sidecar({ coordinators: [server.address], token: nodeTokenList[i]!, node: { name, imap: d.address, addresses: { pop3: d.pop3Address!, lmtp: d.lmtpAddress! } }, tenant: 'acme', ttlSeconds: 3, doveadm: { config: path.join(d.dir, 'dovecot.conf') }, whoIntervalMs: 300 });
    await a.start();
    agents.push(a);
  }
  // The shipped files, in a directory of the test's: the script, its settings, the token.
  copyFileSync(path.join(REPO_ROOT, 'deploy/dovecot/mailshare-route.lua'), path.join(lua.path, 'mailshare-route.lua'));
  writeFileSync(path.join(lua.path, 'mailshare.token'), `${proxyToken}\n`);
  // Dovecot's auth process (user dovecot) reads the script, its settings and the token.
  chmodSync(lua.path, 0o755);
  for (const f of ['mailshare-route.lua', 'mailshare.token']) chmodSync(path.join(lua.path, f), 0o644);
  const example = readFileSync(path.join(REPO_ROOT, 'deploy/dovecot/mailshare-route.conf.example'), 'utf8');
  writeFileSync(
    path.join(lua.path, 'mailshare-route.conf'),
    example
      .replace(/^url = .*\n(url = .*\n)?/m, `url = http://${server.httpAddress}/v1/route\n`)
      .replace('/etc/dovecot/mailshare.token', path.join(lua.path, 'mailshare.token')),
    { mode: 0o644 },
  );
  const shipped = readFileSync(path.join(REPO_ROOT, 'deploy/dovecot/proxy.conf'), 'utf8');
  proxy = await startDovecot({
    name: 'proxy',
    mailRoot: root.path,
    users: USERS,
    master: { user: 'gateway', password: 'm' },
    protocols: ['pop3', 'lmtp'],
    auth: (dir) => shipped.replaceAll('/etc/dovecot/users', path.join(dir, 'users.passwd')).replaceAll('/etc/dovecot/mailshare/', `${lua.path}/`),
  });
}, 90_000);
afterAll(async () => {
  for (const a of agents) await a.close().catch(() => undefined);
  placement?.close();
  await proxy?.stop();
  for (const d of backends) await d.stop();
  await server?.stop();
  await etcd?.stop();
  root?.remove();
  lua.remove();
});

describe('Dovecot proxies routed by mailshare (deploy/dovecot)', () => {
  it('IMAP: a login through the proxy is assigned a node and lands there, and again after logging out', async () => {
    const c = await RawImap.login(proxy.address, 'alice@acme.test', USERS['alice@acme.test']);
    expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    c.close();
    const at = await locate('alice');
    expect(['b1', 'b2']).toContain(at);
    expect(logins(backends[nodeIndex(at)]!, 'alice@acme.test')).toBe(1);
    expect(logins(backends[1 - nodeIndex(at)]!, 'alice@acme.test')).toBe(0);
    const again = await RawImap.login(proxy.address, 'alice@acme.test', USERS['alice@acme.test']);
    again.close();
    await waitFor(() => logins(backends[nodeIndex(at)]!, 'alice@acme.test') === 2, 5000, 'second login on the same node');
  });

  it('POP3 and LMTP through the proxy reach the same node; a never-seen recipient is assigned and delivered', async () => {
    const popped = await python(
      `
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]))
p.user('alice@acme.test'); p.pass_('alice-pw')
print(p.stat()[0])
p.quit()
`,
      proxy.pop3Address!.split(':'),
    );
    expect(popped.trim()).toMatch(/^\d+$/);
    const at = await locate('alice');
    expect(logins(backends[nodeIndex(at)]!, 'alice@acme.test', 'pop3')).toBe(1);
    expect(await locate('bob')).toBe('');
    const refused = await python(
      `
import smtplib, sys
s = smtplib.LMTP(sys.argv[1], int(sys.argv[2]))
print(s.sendmail('x@example.com', ['bob@acme.test', 'alice@acme.test'], 'Subject: through the proxy\\r\\n\\r\\nhi\\r\\n'))
s.quit()
`,
      proxy.lmtpAddress!.split(':'),
    );
    expect(refused.trim()).toBe('{}');
    const bobAt = await locate('bob');
    expect(['b1', 'b2']).toContain(bobAt);
    const saved = (d: DovecotInstance, user: string): number => logOf(d).split('\n').filter((l) => l.includes(`lmtp(${user})`) && l.includes('saved mail to INBOX')).length;
    await waitFor(() => saved(backends[nodeIndex(bobAt)]!, 'bob@acme.test') === 1 && saved(backends[nodeIndex(at)]!, 'alice@acme.test') === 1, 5000, 'deliveries');
    expect(saved(backends[1 - nodeIndex(bobAt)]!, 'bob@acme.test')).toBe(0);
    expect(saved(backends[1 - nodeIndex(at)]!, 'alice@acme.test')).toBe(0);
  });

  it('a move kicks the session on the old node, and the next login through the proxy lands on the new one', async () => {
    const from = await locate('alice');
    const to = from === 'b1' ? 'b2' : 'b1';
    const c = await RawImap.login(proxy.address, 'alice@acme.test', USERS['alice@acme.test']);
    await new Promise((r) => setTimeout(r, 700));
    const moved = await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: to, timeoutMs: 5000 }, server.adminToken);
    expect(moved.releasedByNode).toBe(true);
    await waitFor(() => c.closed, 10_000, 'the old session ends');
    const before = logins(backends[nodeIndex(to)]!, 'alice@acme.test');
    const again = await RawImap.login(proxy.address, 'alice@acme.test', USERS['alice@acme.test']);
    again.close();
    await waitFor(() => logins(backends[nodeIndex(to)]!, 'alice@acme.test') === before + 1, 5000, 'login on the new node');
  });

  it('assigns nobody for a wrong password or an unknown user', async () => {
    const c = await RawImap.connect(proxy.address);
    expect(await c.cmd('LOGIN carol@acme.test wrong')).toMatch(/^t1 NO /m);
    expect(await c.cmd('LOGIN nobody@acme.test x')).toMatch(/^t2 NO /m);
    c.close();
    expect(await locate('carol')).toBe('');
  });

  it('fails logins as temporary while the coordinator is down, never routing at random', async () => {
    await server.stop();
    const c = await RawImap.connect(proxy.address);
    expect(await c.cmd('LOGIN carol@acme.test carol-pw', 20_000)).toMatch(/^t1 NO \[UNAVAILABLE\] /m);
    c.close();
    expect(logins(backends[0]!, 'carol@acme.test') + logins(backends[1]!, 'carol@acme.test')).toBe(0);
  }, 30_000);
});
