import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { scrape } from '../harness/metrics.js';
import { findProcesses, waitFor } from '../harness/process.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { type AgentProcess, spawnAgent } from '../harness/sidecar-process.js';

/**
 * `mailshare agent` beside two real Dovecots (no gateway in front): it
 * registers each node with every protocol's address, keeps the lease, and
 * enforces the assignment on its Dovecot with doveadm: a user moved away
 * is kicked before the node lets go, a session of a user the node does not
 * hold is kicked, idle users expire, and a node cut off from the
 * coordinators kicks everyone.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw' };
let etcd: EtcdCluster;
let server: InProcessServer;
let root: ReturnType<typeof mailRoot>;
const dovecots: DovecotInstance[] = [];
const agents = new Map<string, AgentProcess>();
let placement: PlacementServiceClient;

async function startAgent(node: string, d: DovecotInstance, token: string, extra: string[] = []): Promise<void> {
  const a = await spawnAgent({ node, dovecot: d, token, coordinators: server.address, tenant: 'acme', extra: ['--user-expire', '3s', '--who-interval', '300ms', ...extra] });
  expect(a.out()).toMatch(new RegExp(`^mailshare agent ${node} registered \\(IMAP ${d.address}, POP3 ${d.pop3Address}, LMTP ${d.lmtpAddress}\\); metrics on 127\\.0\\.0\\.1:\\d+\\n$`));
  agents.set(node, a);
}

const locate = async (user: string): Promise<string> => (await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign: false }, server.adminToken)).node;
const moveTo = (user: string, node: string) => unaryCall(placement.move.bind(placement), { tenant: 'acme', user, toNode: node, timeoutMs: 5000 }, server.adminToken);
const closed = (c: RawImap): Promise<void> => waitFor(() => c.closed, 10_000, 'connection closed by the server');

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  const tokens = nodeTokens(admin);
  await admin.directory.createTenant({ id: 'acme', domains: [] });
  const t1 = await tokens('b1');
  const t2 = await tokens('b2');
  admin.close();
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  root = mailRoot();
  for (const name of ['b1', 'b2']) dovecots.push(await startDovecot({ name, mailRoot: root.path, users: USERS, master: { user: 'gateway', password: 'm' }, protocols: ['pop3', 'lmtp'] }));
  await startAgent('b1', dovecots[0]!, t1);
  await startAgent('b2', dovecots[1]!, t2, ['--no-watchdog']);
}, 90_000);
afterAll(async () => {
  for (const a of agents.values()) a.child.kill('SIGKILL');
  placement?.close();
  for (const d of dovecots) await d.stop();
  await server?.stop();
  await etcd?.stop();
  root?.remove();
});

describe('mailshare agent (beside a stock Dovecot)', () => {
  it('registers each node with its IMAP, POP3 and LMTP addresses', async () => {
    const nodes = (await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken)).nodes;
    const b1 = nodes.find((n) => n.name === 'b1')!;
    expect(b1.state).toBe('active');
    expect(b1.imapAddress).toBe(dovecots[0]!.address);
    expect(b1.addresses).toEqual({ pop3: dovecots[0]!.pop3Address, lmtp: dovecots[0]!.lmtpAddress });
    // Each agent has its watchdog process (told which Dovecot to kick), unless --no-watchdog.
    const watchdogs = (d: DovecotInstance): number[] => findProcesses('sidecar/watchdog.js', path.join(d.dir, 'dovecot.conf'));
    expect(watchdogs(dovecots[0]!)).toHaveLength(1);
    expect(watchdogs(dovecots[1]!)).toHaveLength(0);
  });

  it('kicks a moved user from the old Dovecot before the node lets go, and counts the session while it lasts', async () => {
    await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'alice', mailbox: '', assign: true }, server.adminToken);
    if ((await locate('alice')) !== 'b1') await moveTo('alice', 'b1');
    const alice = await RawImap.login(dovecots[0]!.address, 'alice', USERS.alice);
    await waitFor(async () => (await scrape(agents.get('b1')!.metrics)).value('mailshare_agent_dovecot_sessions', { protocol: 'imap' }) === 1, 5000, 'session seen');
    const moved = await moveTo('alice', 'b2');
    // The node released alice itself, after the kick (not the coordinator after a timeout).
    expect(moved.releasedByNode).toBe(true);
    await closed(alice);
    expect(alice.pending()).toMatch(/\* BYE /);
    expect(await locate('alice')).toBe('b2');
    const m = await scrape(agents.get('b1')!.metrics);
    expect(m.value('mailshare_agent_kicks_total', { reason: 'moved', result: 'ok' })).toBe(1);
    expect(m.value('mailshare_serving')).toBe(1);
  });

  it('kicks a session of a user the node does not hold (logged in past the proxies)', async () => {
    if ((await locate('bob').catch(() => '')) !== 'b2') {
      await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'bob', mailbox: '', assign: true }, server.adminToken);
      if ((await locate('bob')) !== 'b2') await moveTo('bob', 'b2');
    }
    const bob = await RawImap.login(dovecots[0]!.address, 'bob', USERS.bob);
    await closed(bob);
    expect((await scrape(agents.get('b1')!.metrics)).value('mailshare_agent_kicks_total', { reason: 'stray', result: 'ok' })).toBeGreaterThanOrEqual(1);
    // On its own node the session stays.
    const home = await RawImap.login(dovecots[1]!.address, 'bob', USERS.bob);
    await new Promise((r) => setTimeout(r, 1500));
    expect(home.closed).toBe(false);
    expect(await home.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    home.close();
  });

  it('holds a user while they have a session, and releases them after --user-expire without one', async () => {
    await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'carol', mailbox: '', assign: true }, server.adminToken);
    const at = await locate('carol');
    const d = dovecots[at === 'b1' ? 0 : 1]!;
    const carol = await RawImap.login(d.address, 'carol', USERS.carol);
    await new Promise((r) => setTimeout(r, 4000));
    expect(await locate('carol')).toBe(at);
    carol.close();
    await waitFor(async () => (await locate('carol')) === '', 10_000, 'carol released');
  });

  it('kicks everyone when the node cannot reach the coordinators (it cannot prove its lease)', async () => {
    await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'dave', mailbox: '', assign: true }, server.adminToken);
    const at = await locate('dave');
    const dave = await RawImap.login(dovecots[at === 'b1' ? 0 : 1]!.address, 'dave', USERS.dave);
    await new Promise((r) => setTimeout(r, 700));
    // SIGTERM the other agent first: it kicks its users, deregisters, exits 0.
    const other = at === 'b1' ? 'b2' : 'b1';
    agents.get(other)!.child.kill('SIGTERM');
    expect(await agents.get(other)!.exited).toBe(0);
    // A graceful exit tells the watchdog (where there is one) there is nothing to kick.
    expect(agents.get(other)!.err()).not.toMatch(/kicking every Dovecot session/);
    expect((await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken)).nodes.find((n) => n.name === other)?.state).toBe('down');
    await server.stop();
    // Within the TTL (3 s) the node stops serving and kicks every session.
    const t0 = Date.now();
    await closed(dave);
    expect(Date.now() - t0).toBeLessThan(6000);
    // The client can see its session end before doveadm's kick has answered the agent, which counts it then.
    await waitFor(async () => ((await scrape(agents.get(at)!.metrics)).value('mailshare_agent_kicks_total', { reason: 'lease', result: 'ok' }) ?? 0) >= 1, 5000, 'the kick counted');
    expect((await scrape(agents.get(at)!.metrics)).value('mailshare_serving')).toBe(0);
    // A login while the node cannot prove its lease does not last either.
    const late = await RawImap.login(dovecots[at === 'b1' ? 0 : 1]!.address, 'dave', USERS.dave);
    await closed(late);
  }, 30_000);

  it('refuses bad flags in one line', async () => {
    const noToken = await runCli(['agent', '--node', 'b9', '--imap', '127.0.0.1:1']);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toBe('mailshare: token: set MAILSHARE_TOKEN to a token with role node\n');
    const bad = await runCli(['agent', '--node', 'b9', '--imap', 'nowhere'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^mailshare: option '--imap <host:port>' argument 'nowhere' is invalid/);
  });
});
