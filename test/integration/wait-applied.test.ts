import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { waitFor } from '../harness/process.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { type TcpProxy, startTcpProxy } from '../harness/tcp-proxy.js';
import { tempDir } from '../harness/tmp.js';

/**
 * `--wait-applied`: a write returns only once every live node has applied
 * it. Two coordinators on one etcd, an agent on each (n2's through a proxy
 * the test cuts): the barrier reaches both coordinators through etcd, each
 * tells the agents on its keepalive streams, and a node that cannot answer
 * is named.
 */
let etcd: EtcdCluster;
let c1: InProcessServer;
let c2: InProcessServer;
let proxy: TcpProxy;
const agents: Agent[] = [];
const dir = tempDir('mailshare-wait-applied-');
let env: Record<string, string>;

beforeAll(async () => {
  etcd = await startEtcd();
  c1 = await startInProcessServer({ endpoints: etcd.endpoints });
  c2 = await startInProcessServer({ endpoints: etcd.endpoints, prefix: c1.prefix });
  env = { MAILSHARE_ADDR: c1.address, MAILSHARE_TOKEN: c1.adminToken, XDG_CONFIG_HOME: dir.path };
  const api = connectApi(c1.address, c1.adminToken);
  const tokenOf = nodeTokens(api);
  await api.directory.createTenant({ id: 'w', domains: [] });
  await api.mailbox.createMailbox({ tenant: 'w', owner: 'alice', name: 'P', actor: '' });
  proxy = await startTcpProxy(c2.address);
  agents.push(createAgent({ coordinators: [c1.address], token: await tokenOf('n1'), node: { name: 'n1', imapAddress: '127.0.0.1:2001' }, ttlSeconds: 30 }));
  agents.push(createAgent({ coordinators: [proxy.address], token: await tokenOf('n2'), node: { name: 'n2', imapAddress: '127.0.0.1:2002' }, ttlSeconds: 30 }));
  api.close();
  await Promise.all(agents.map((a) => a.ready));
});
afterAll(async () => {
  await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
  await proxy?.close();
  await c2?.stop();
  await c1?.stop();
  await etcd?.stop();
  dir.remove();
});

const ms = (...args: string[]) => runCli(args, { env, cwd: dir.path, timeoutMs: 60_000 });

describe('--wait-applied', () => {
  it('returns once every live node applied the change, behind either coordinator', async () => {
    await waitFor(async () => (await ms('node', 'list')).stdout.split('\n').filter((l) => /^n[12]\s+active\s/.test(l)).length === 2, 10_000, 'both nodes live');
    const r = await ms('acl', 'set', 'w', 'alice/P', 'bob', 'lr', '--wait-applied=5s');
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toBe('bob lr\napplied on 2 of 2 live nodes: n1, n2\n');
    // Applied means applied: both caches answer with the new rights now, without waiting.
    for (const a of agents) expect(a.rights('w', 'bob', 'alice/P').rights).toBe('lr');

    const g = JSON.parse((await ms('group', 'add', 'w', 'sales', 'carol', '--wait-applied', '-o', 'json')).stdout);
    expect(g).toMatchObject({ name: 'sales', members: ['carol'], applied: { complete: true } });
    expect(g.applied.nodes.map((n: { node: string; revision: number }) => [n.node, n.revision >= g.revision])).toEqual([
      ['n1', true],
      ['n2', true],
    ]);

    // Tenants and nodes too: a login domain is known to every node when the command returns.
    expect((await ms('tenant', 'domain', 'add', 'w', 'w.test', '--wait-applied')).stdout).toMatch(/^applied on 2 of 2 live nodes: n1, n2$/m);
    for (const a of agents) expect(a.tenantOfDomain('w.test')).toBe('w');
    expect((await ms('tenant', 'update', 'w', '--max-shares', '30', '--wait-applied')).stdout).toMatch(/^applied on 2 of 2 live nodes: n1, n2$/m);
    expect((await ms('node', 'undrain', 'n2', '--wait-applied')).stdout).toMatch(/^applied on 2 of 2 live nodes: n1, n2$/m);

    // Mailboxes too: a new one, renamed, deleted, each applied everywhere when the command returns.
    expect((await ms('mailbox', 'create', 'w', 'alice', 'Q', '--wait-applied')).stdout).toMatch(/^applied on 2 of 2 live nodes: n1, n2$/m);
    for (const a of agents) expect(a.rights('w', 'alice', 'alice/Q').rights).toBeTruthy();
    expect((await ms('mailbox', 'rename', 'w', 'alice/Q', 'R', '--wait-applied')).stdout).toBe('renamed to alice/R\napplied on 2 of 2 live nodes: n1, n2\n');
    for (const a of agents) expect([a.rights('w', 'alice', 'alice/Q').rights, a.rights('w', 'alice', 'alice/R').rights !== undefined]).toEqual([undefined, true]);
    const gone = JSON.parse((await ms('mailbox', 'delete', 'w', 'alice/R', '--wait-applied', '-o', 'json')).stdout);
    expect(gone).toMatchObject({ deleted: 'alice/R', applied: { complete: true } });
    for (const a of agents) expect(a.rights('w', 'alice', 'alice/R').rights).toBeUndefined();

    // node list --applied: each node's revision and how far behind etcd it is.
    const nodes = JSON.parse((await ms('node', 'list', '--applied', '-o', 'json')).stdout) as { headRevision: number; nodes: Array<{ name: string; applied: { revision: number; lag: number } | null }> };
    for (const n of nodes.nodes) {
      expect(n.applied, n.name).not.toBeNull();
      expect(n.applied!.revision + n.applied!.lag).toBe(nodes.headRevision);
    }
    expect((await ms('node', 'list', '--applied')).stdout).toMatch(/^NODE\s.*\sAPPLIED\s+LAG$/m);

    const del = await ms('acl', 'delete', 'w', 'alice/P', 'bob', '--wait-applied');
    expect([del.code, del.stdout]).toEqual([0, 'deleted bob\napplied on 2 of 2 live nodes: n1, n2\n']);
    for (const a of agents) expect(a.rights('w', 'bob', 'alice/P').rights).toBe('');
  });

  it('names the node that has not applied it in time (exit 1); the barrier leaves nothing behind', async () => {
    // n2 keeps its lease (TTL 30 s) but hears nothing: its coordinator link is cut.
    proxy.blackhole();
    try {
      const r = await ms('acl', 'set', 'w', 'alice/P', 'bob', 'lrs', '--wait-applied=1500ms');
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('bob lrs\napplied on 1 of 2 live nodes: n1\n');
      expect(r.stderr).toBe('mailshare: not applied in time on 1 of 2 nodes: n2\n');
      expect(agents[0]!.rights('w', 'bob', 'alice/P').rights).toBe('lrs');
      expect(agents[1]!.rights('w', 'bob', 'alice/P').rights).toBe('');
      expect((await ms('node', 'list', '--applied=1s')).stdout).toMatch(/^n2\s.*\sno answer\s+-$/m);
    } finally {
      proxy.restore();
    }
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      await waitFor(async () => (await c.getAll().prefix(`${c1.prefix}v1/barriers/`).keys()).length === 0, 5000, 'barriers gone');
    } finally {
      c.close();
    }
    const bad = await ms('acl', 'set', 'w', 'alice/P', 'bob', 'lr', '--wait-applied=soon');
    expect([bad.code, bad.stderr]).toEqual([2, 'mailshare: --wait-applied: "soon" is not a duration (e.g. 5s, 500ms, 2m)\n']);
  });

  it('placement verbs with --dry-run: where a drain and a move would put users, which node a kick would reach; nothing changes', async () => {
    const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
    for (const u of users) expect((await ms('user', 'locate', 'w', u, '--assign')).code).toBe(0);
    const where = async () => Object.fromEntries(await Promise.all(users.map(async (u) => [u, JSON.parse((await ms('user', 'locate', 'w', u, '-o', 'json')).stdout).node as string])));
    const before = await where();
    const onN1 = users.filter((u) => before[u] === 'n1');
    expect(onN1.length).toBeGreaterThan(0);

    const plan = JSON.parse((await ms('node', 'drain', 'n1', '--dry-run', '-o', 'json')).stdout) as { plan: Array<{ tenant: string; user: string; toNode: string }> };
    expect(plan.plan.map((m) => m.user).sort()).toEqual(onN1.sort());
    expect(plan.plan.every((m) => m.toNode === 'n2' && m.tenant === 'w')).toBe(true);
    expect((await ms('node', 'drain', 'n1', '--dry-run')).stdout).toMatch(new RegExp(`^would move ${onN1.length} users off n1 \\(${onN1.length} to n2\\); nothing changed$`, 'm'));

    const u = onN1[0]!;
    expect((await ms('user', 'move', 'w', u, '--dry-run')).stdout).toBe(`${u}: would move n1 -> n2; nothing changed\n`);
    expect((await ms('user', 'kick', 'w', u, '--dry-run')).stdout).toBe(`${u}: would be kicked off n1; nothing changed\n`);
    const refused = await ms('node', 'remove', 'n1', '--dry-run');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^mailshare: FAILED_PRECONDITION: name: node "n1" is live; [^\n]*\n$/);
    expect((await ms('node', 'remove', 'n1', '--force', '--dry-run')).stdout).toBe(`would remove n1, ending ${onN1.length} users' assignments; nothing changed\n`);

    // Nothing moved, the node is neither draining nor gone.
    expect(await where()).toEqual(before);
    expect((await ms('node', 'list')).stdout).toMatch(/^n1\s+active\s/m);

    // A real move with --wait-applied: when it returns, both nodes' caches place the user on n2.
    const moved = await ms('user', 'move', 'w', u, '--wait-applied');
    expect([moved.code, moved.stderr]).toEqual([0, '']);
    expect(moved.stdout).toMatch(new RegExp(`^${u}: n1 -> n2 epoch \\d+\napplied on 2 of 2 live nodes: n1, n2\n$`));
    for (const a of agents) expect(a.locate('w', u)?.node).toBe('n2');

    // acl explain --applied: whether the owner's node has the mailbox's revision.
    await ms('user', 'locate', 'w', 'alice', '--assign');
    expect((await ms('acl', 'explain', 'w', 'alice/P', 'bob', '--applied')).stdout).toMatch(/^revision \d+ in the caches: n[12] has it \(at \d+\)$/m);

    // Kick, group delete, drain and remove wait the same way.
    const kicked = await ms('user', 'kick', 'w', u, '--wait-applied');
    expect([kicked.code, kicked.stdout]).toEqual([0, `${u}: kicked\napplied on 2 of 2 live nodes: n1, n2\n`]);
    for (const a of agents) expect(a.locate('w', u)).toBeUndefined();
    expect((await ms('group', 'delete', 'w', 'sales', '--wait-applied')).stdout).toBe('deleted group:sales\napplied on 2 of 2 live nodes: n1, n2\n');
    const drained = await ms('node', 'drain', 'n1', '--wait-applied');
    expect([drained.code, drained.stderr]).toEqual([0, '']);
    expect(drained.stdout).toMatch(/^applied on 2 of 2 live nodes: n1, n2$/m);
    for (const a of agents) expect(users.filter((x) => a.locate('w', x)?.node === 'n1')).toEqual([]);
    const removed = await ms('node', 'remove', 'n1', '--force', '--wait-applied');
    expect([removed.code, removed.stdout]).toEqual([0, 'removed n1\napplied on 1 of 1 live nodes: n2\n']);
  });
});
