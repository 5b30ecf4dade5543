import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let imap1: TestNode;
const dir = tempDir('mailshare-cli-placement-');
let env: Record<string, string>;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path };
  const api = connectApi(server.address, server.adminToken);
  const nodeToken = (await api.auth.createToken({ role: 'node:imap1', description: '' })).token;
  api.close();
  imap1 = await startTestNode(server.address, nodeToken, { name: 'imap1', ttlSeconds: 5 });
});
afterAll(async () => {
  imap1?.stop();
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

const ok = async (...args: string[]) => {
  const r = await runCli(args, { env, cwd: dir.path });
  expect(r.stderr, args.join(' ')).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
};

describe('node and user commands', () => {
  it('lists, drains, undrains, locates and removes', async () => {
    await waitFor(async () => /^imap1\s+active\s/m.test(await ok('node', 'list')), 5000, 'imap1 listed');
    expect(await ok('user', 'locate', 'acme', 'alice')).toBe('alice: not assigned\n');
    const assigned = JSON.parse(await ok('user', 'locate', 'acme', 'alice', '--assign', '-o', 'json'));
    expect(assigned).toMatchObject({ user: 'alice', node: 'imap1', assigned: true });
    expect(await ok('user', 'locate', 'acme', 'alice/Projects')).toBe(`alice: imap1 (${assigned.imapAddress}) epoch ${assigned.epoch}\n`);
    // With no other node, a drain cannot move alice: it says so and fails.
    const drain = await runCli(['node', 'drain', 'imap1'], { env, cwd: dir.path });
    expect(drain.stdout).toBe('drained imap1: 0 of 1 users moved, 1 failed\n');
    expect(drain.stderr).toBe('mailshare: 1 users could not be moved; run the drain again\n');
    expect(drain.code).toBe(1);
    await waitFor(async () => /^imap1\s+draining\s.*\s1\s+\d+\s+-$/m.test(await ok('node', 'list')), 5000, 'draining with 1 user');
    const bob = await runCli(['user', 'locate', 'acme', 'bob', '--assign'], { env, cwd: dir.path });
    expect(bob.code).toBe(1);
    expect(bob.stderr).toBe('mailshare: UNAVAILABLE: no active node is registered\n');
    expect(JSON.parse(await ok('node', 'undrain', 'imap1', '-o', 'json')).state).toBe('active');
    const kicked = JSON.parse(await ok('user', 'kick', 'acme', 'alice', '--release-timeout', '300', '-o', 'json'));
    expect(kicked).toMatchObject({ releasedByNode: false, fromNode: 'imap1' }); // this test node does not listen for kicks
    expect(await ok('user', 'locate', 'acme', 'alice')).toBe('alice: not assigned\n');
    expect(await ok('user', 'move', 'acme', 'alice', '--to', 'imap1')).toMatch(/^alice: \(unassigned\) -> imap1 epoch \d+\n$/);
    // The call's deadline covers the server's wait for the release: a --timeout below it is no error.
    const waited = JSON.parse(await ok('user', 'kick', 'acme', 'alice', '--release-timeout', '1500', '--timeout', '1s', '-o', 'json'));
    expect(waited).toMatchObject({ releasedByNode: false, fromNode: 'imap1' });
    expect(await ok('user', 'move', 'acme', 'alice', '--to', 'imap1')).toMatch(/^alice: \(unassigned\) -> imap1 epoch \d+\n$/);
    const refused = await runCli(['node', 'remove', 'imap1'], { env, cwd: dir.path });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^mailshare: FAILED_PRECONDITION: name: node "imap1" is live/);
    expect(await ok('node', 'remove', 'imap1', '--force')).toBe('removed imap1\n');
    expect(await ok('user', 'locate', 'acme', 'alice')).toBe('alice: not assigned\n');
  });
});

describe('mailshare events', () => {
  it('tails changes as text and as JSON lines', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN, cleanEnv } = await import('../harness/server.js');
    const start = (args: string[]) => {
      const child = spawn(process.execPath, [BIN, 'events', ...args], { env: cleanEnv(env), cwd: dir.path, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      return { child, out: () => out, err: () => err };
    };
    const text = start(['--kind', 'group', 'mailbox', '--tenant', 'evt']);
    const json = start(['-o', 'json', '--kind', 'group']);
    await waitFor(() => text.err() === 'watching; Ctrl-C to stop\n' && json.err() !== '', 10_000, 'watches established');
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'evt', domains: [] });
      await api.directory.setGroupMembers({ tenant: 'evt', name: 'sales', members: ['bob', 'carol'], expectedRevision: 0 });
      await api.mailbox.createMailbox({ tenant: 'evt', owner: 'alice', name: 'P', actor: '' });
    } finally {
      api.close();
    }
    await waitFor(() => text.out().split('\n').length >= 3 && json.out().length > 0, 5000, 'event lines');
    text.child.kill('SIGINT');
    json.child.kill('SIGINT');
    expect(text.out()).toMatch(/^\d+ group evt group:sales members bob carol\n\d+ mailbox evt alice\/P acl alice=lrswipkxteacd\n$/);
    const line = JSON.parse(json.out().split('\n')[0]!);
    expect(line).toMatchObject({ kind: 'group', tenant: 'evt', group: { name: 'sales', members: ['bob', 'carol'] } });
  });

  it('events: a kind that does not exist is a usage error before anything starts; --help lists every kind', async () => {
    const bad = await runCli(['events', '--kind', 'group', 'bogus'], { env, cwd: dir.path });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('mailshare: kind: "bogus" is not one of tenant, group, mailbox, assignment, node, move\n');
    expect(bad.stdout).toBe('');
    const help = await runCli(['events', '--help'], { env, cwd: dir.path });
    expect(help.stdout.replace(/\s+/g, ' ')).toMatch(/only these kinds: tenant group mailbox assignment node move/);
  });
});
