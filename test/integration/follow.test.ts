import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { EventServiceClient, type FollowRequest, type SnapshotResponse, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { type Api, connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer, unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';
import { startTcpProxy } from '../harness/tcp-proxy.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';

let etcd: EtcdCluster;
let server: InProcessServer;
/** A second coordinator on the same state whose streams each watch etcd themselves (no shared watch). */
let plain: InProcessServer;
let admin: Api;
let placement: PlacementServiceClient;
const tokens = new Map<string, string>();
const agents: Agent[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  plain = await startInProcessServer({ endpoints: etcd.endpoints, prefix: server.prefix, flags: { eventsSharedWatch: 'off' } });
  admin = connectApi(server.address, server.adminToken);
  const tokenFor = nodeTokens(admin);
  for (const name of ['n1', 'n2', 'n3']) tokens.set(name, await tokenFor(name));
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  for (const a of agents) await a.close().catch(() => undefined);
  placement?.close();
  admin?.close();
  await plain?.stop();
  await server?.stop();
  await etcd?.stop();
});

/** No idle expiry unless asked: a session of another node's user would hold it (HoldUser), and a held user stays followed. */
function agent(name: string, view: 'all' | 'followed', coordinators = [server.address], followLingerMs = 200, userExpireMs = 0): Agent {
  const a = createAgent({ coordinators, token: tokens.get(name)!, node: { name, imapAddress: `127.0.0.1:${2100 + agents.length}` }, ttlSeconds: 3, assignmentView: view, followLingerMs, userExpireMs });
  agents.push(a);
  return a;
}

/** n2, which keeps every assignment: the cluster as it is, to compare with. */
async function allAgent(): Promise<Agent> {
  const a = agents.find((x) => !x.followsUsers) ?? agent('n2', 'all');
  await a.ready;
  await waitFor(async () => (await activeNodes()).includes('n2'), 5000, 'n2 active');
  return a;
}

const assign = (user: string) => unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign: true }, server.adminToken);
const move = (user: string, toNode: string) => unaryCall(placement.move.bind(placement), { tenant: 'acme', user, toNode, timeoutMs: 5000 }, server.adminToken);
const activeNodes = async () => (await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken)).nodes.filter((n) => n.state === 'active').map((n) => n.name);

/** A revision every agent must reach: a fresh assignment's epoch is the revision that wrote it. */
async function mark(): Promise<number> {
  return (await assign(`mark-${Math.random().toString(36).slice(2)}`)).epoch;
}

describe('Follow: a node keeps only its own and its followed users\' assignments', () => {
  it('hears its own node\'s users and those it follows, and forgets a user after the linger', async () => {
    const all = await allAgent();
    // Before n1 exists, every user lands on n2.
    for (let i = 0; i < 50; i++) await assign(`early${i}`);
    const mine = agent('n1', 'followed');
    await mine.ready;
    await waitFor(async () => (await activeNodes()).includes('n1'), 5000, 'n1 active');
    const later: string[] = [];
    for (let i = 0; i < 60; i++) later.push(`later${i}`);
    for (const u of later) await assign(u);
    const head = await mark();
    await Promise.all([mine.waitForRevision(head), all.waitForRevision(head)]);

    // Only n1's own users are in its cache, every one of them.
    const onN1 = later.filter((u) => all.locate('acme', u)?.node === 'n1');
    expect(onN1.length).toBeGreaterThan(0);
    expect(onN1.length).toBeLessThan(later.length);
    for (const u of later) expect(mine.locate('acme', u)?.epoch).toBe(onN1.includes(u) ? all.locate('acme', u)!.epoch : undefined);
    for (let i = 0; i < 50; i++) expect(mine.locate('acme', `early${i}`)).toBeUndefined();
    expect(mine.users().map((a) => a.user).filter((u) => u.startsWith('later')).sort()).toEqual([...onN1].sort());

    // A session makes n1 follow early0 (on n2): its assignment arrives, then its changes.
    const changes: string[] = [];
    mine.on('assignmentChanged', ({ user, after }) => changes.push(`${user}:${after?.node ?? '-'}`));
    mine.sessionOpened('acme', 'early0', 'n2');
    await waitFor(() => mine.locate('acme', 'early0')?.epoch === all.locate('acme', 'early0')?.epoch, 5000, 'early0 answered');
    expect(mine.followedUsers).toBeGreaterThanOrEqual(1);
    await move('early0', 'n1');
    await waitFor(() => mine.locate('acme', 'early0')?.node === 'n1', 5000, 'early0 on n1');
    await move('early0', 'n2');
    await waitFor(() => mine.locate('acme', 'early0')?.node === 'n2', 5000, 'early0 back on n2');
    expect(changes.filter((c) => c.startsWith('early0:'))).toEqual(['early0:n2', 'early0:-', 'early0:n1', 'early0:-', 'early0:n2']);

    // An unfollowed user's moves never reach n1.
    await move('early1', 'n1');
    await move('early1', 'n2');
    const h2 = await mark();
    await mine.waitForRevision(h2);
    expect(changes.filter((c) => c.startsWith('early1:'))).toEqual(['early1:n1', 'early1:-']);
    expect(mine.locate('acme', 'early1')).toBeUndefined();

    // After the last session and the linger, early0 is forgotten and no longer heard.
    mine.sessionClosed('acme', 'early0');
    await waitFor(() => mine.locate('acme', 'early0') === undefined, 5000, 'early0 forgotten');
    const before = changes.length;
    await move('early0', 'n1');
    await move('early0', 'n2');
    await mine.waitForRevision(await mark());
    expect(changes.slice(before).filter((c) => c.startsWith('early0:'))).toEqual(['early0:n1', 'early0:-']);
    expect(mine.locate('acme', 'early0')).toBeUndefined();
  });

  it.each([
    ['the shared watch', () => server.address],
    ['a watch of its own per stream', () => plain.address],
  ])('keeps followed users exact while they move, through broken streams (%s)', async (_what, address) => {
    const all = await allAgent();
    // Node n3 follows, through a proxy that can cut its streams.
    const proxy = await startTcpProxy(address());
    const mine = agent('n3', 'followed', [proxy.address], 0);
    await mine.ready;
    const users = Array.from({ length: 12 }, (_, i) => `churn${i}-${_what.length}`);
    for (const u of users) await assign(u);
    const nodes = ['n1', 'n2'];
    let stop = false;
    let moves = 0;
    const churn = (async () => {
      while (!stop) {
        const u = users[Math.floor(Math.random() * users.length)]!;
        const now = all.locate('acme', u)?.node ?? 'n1';
        await move(u, nodes.find((n) => n !== now)!).then(() => moves++, () => undefined);
      }
    })();
    // Follow and unfollow at random while the users move; cut the stream twice.
    const open = new Map<string, number>();
    const t0 = Date.now();
    let cuts = 0;
    while (Date.now() - t0 < 4000) {
      const u = users[Math.floor(Math.random() * users.length)]!;
      if ((open.get(u) ?? 0) > 0 && Math.random() < 0.5) {
        mine.sessionClosed('acme', u);
        open.set(u, open.get(u)! - 1);
      } else {
        mine.sessionOpened('acme', u);
        open.set(u, (open.get(u) ?? 0) + 1);
      }
      if (cuts < 2 && Date.now() - t0 > 1500 * (cuts + 1)) {
        proxy.reset();
        cuts++;
      }
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 30));
    }
    stop = true;
    await churn;
    expect(moves).toBeGreaterThan(10);
    // Every user followed at the end; each must show exactly what the cluster has.
    for (const u of users) if ((open.get(u) ?? 0) === 0) {
      mine.sessionOpened('acme', u);
      open.set(u, 1);
    }
    const head = await mark();
    await Promise.all([mine.waitForRevision(head), all.waitForRevision(head)]);
    await waitFor(() => users.every((u) => mine.locate('acme', u)?.epoch === all.locate('acme', u)?.epoch), 5000, 'followed users as the cluster has them');
    for (const u of users) expect(mine.locate('acme', u)).toEqual(all.locate('acme', u) && { ...all.locate('acme', u)!, revision: mine.revision });
    expect(cuts).toBe(2);
    await mine.close();
    agents.splice(agents.indexOf(mine), 1);
    await proxy.close();
  });

  it('keeps following a user it holds (HoldUser) after the last session, so that it hears the user move', async () => {
    const all = await allAgent();
    const mine = agent('n3', 'followed', [server.address], 100, 60 * 60_000);
    await mine.ready;
    let user = '';
    for (let i = 0; !user || all.locate('acme', user)?.node === 'n3'; i++) {
      user = `held${i}`;
      await all.waitForRevision((await assign(user)).epoch);
    }
    // With the node the session found for the user, as a gateway says it (the cache has no entry yet).
    mine.sessionOpened('acme', user, all.locate('acme', user)!.node);
    await waitFor(() => mine.locate('acme', user) !== undefined, 5000, 'answered');
    mine.sessionClosed('acme', user);
    // Past the follow's linger the hold still stands (an hour's idle expiry): the user stays followed.
    await new Promise((r) => setTimeout(r, 400));
    expect(mine.locate('acme', user)?.epoch).toBe(all.locate('acme', user)!.epoch);
    const other = all.locate('acme', user)!.node === 'n1' ? 'n2' : 'n1';
    await move(user, other);
    await waitFor(() => mine.locate('acme', user)?.node === other, 5000, 'the move heard');
    await mine.close();
    agents.splice(agents.indexOf(mine), 1);
  });

  it("holds another node's user while a session lasts with idle expiry off too, and lets go after the last", async () => {
    const all = await allAgent();
    // userExpireMs 0: no idle expiry; the hold is what makes a move wait for this node (AckMove).
    const mine = agent('n3', 'followed', [server.address], 100, 0);
    await mine.ready;
    let user = '';
    for (let i = 0; !user || all.locate('acme', user)?.node === 'n3'; i++) {
      user = `noexpire${i}`;
      await all.waitForRevision((await assign(user)).epoch);
    }
    const etcdClient = createEtcdClient({ endpoints: etcd.endpoints });
    const key = createKeys(server.prefix).hold('acme', user, 'n3');
    try {
      mine.sessionOpened('acme', user, all.locate('acme', user)!.node);
      await waitFor(async () => (await etcdClient.get(key).exec()).kvs.length === 1, 5000, 'the hold written');
      mine.sessionClosed('acme', user);
      await waitFor(async () => (await etcdClient.get(key).exec()).kvs.length === 0, 5000, 'the hold ended with the last session');
    } finally {
      etcdClient.close();
      await mine.close();
      agents.splice(agents.indexOf(mine), 1);
    }
  });

  it('asks again for a follow that a broken stream never answered', async () => {
    const all = await allAgent();
    let holding = false;
    const held: Array<() => void> = [];
    // While holding, nothing more reaches the coordinator on the open connections.
    const proxy = await startTcpProxy(server.address, undefined, () => (holding ? new Promise<void>((r) => held.push(r)) : undefined));
    const mine = agent('n3', 'followed', [proxy.address], 0);
    await mine.ready;
    let user = '';
    for (let i = 0; !user || all.locate('acme', user)?.node === 'n3'; i++) {
      user = `steady${i}`;
      await assign(user);
      await all.waitForRevision((await assign(user)).epoch);
    }
    holding = true;
    mine.sessionOpened('acme', user);
    await new Promise((r) => setTimeout(r, 300));
    expect(mine.locate('acme', user)).toBeUndefined();
    holding = false;
    proxy.reset();
    for (const r of held) r();
    await waitFor(() => mine.locate('acme', user)?.epoch === all.locate('acme', user)!.epoch, 8000, 'the follow answered on the next stream');
    mine.sessionClosed('acme', user);
    await mine.close();
    agents.splice(agents.indexOf(mine), 1);
    await proxy.close();
  });

  it('looks up a user it does not follow on the Follow stream, follows them from then on, and assigns nobody', async () => {
    const all = await allAgent();
    const mine = agent('n3', 'followed', [server.address], 60_000);
    await mine.ready;
    await waitFor(async () => (await activeNodes()).includes('n3'), 5000, 'n3 active');
    const rand = Math.random().toString(36).slice(2);
    const users: string[] = [];
    for (let i = 0; users.length < 2; i++) {
      const u = `look-${rand}-${i}`;
      if ((await assign(u)).node !== 'n3') users.push(u);
    }
    const [u, v] = users as [string, string];
    await Promise.all([mine.waitForRevision(await mark()), all.waitForRevision(await mark())]);
    expect(mine.locate('acme', u)).toBeUndefined();
    // The wait for the stream is longer than the test may take: only the stream's answer makes it in time.
    const found = await mine.lookup('acme', u, 60_000);
    expect(found).toMatchObject({ node: all.locate('acme', u)!.node, epoch: all.locate('acme', u)!.epoch });
    expect(mine.followedUsers).toBeGreaterThan(0);
    expect(mine.locate('acme', u)?.epoch).toBe(found!.epoch);
    // Followed (the linger): its next change reaches the cache.
    const moved = await move(u, 'n3');
    await waitFor(() => mine.locate('acme', u)?.epoch === moved.epoch, 5000, 'the move heard');
    // Nobody holds this one: no answer, and the lookup assigned nothing.
    const nobody = `nobody-${rand}`;
    expect(await mine.lookup('acme', nobody, 60_000)).toBeUndefined();
    expect((await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: nobody, mailbox: '', assign: false }, server.adminToken)).node).toBe('');
    // Asked with a unary Locate when the stream does not answer at once: the same answer.
    expect(await mine.lookup('acme', v, 0)).toMatchObject({ node: all.locate('acme', v)!.node, epoch: all.locate('acme', v)!.epoch });
    await mine.close();
    agents.splice(agents.indexOf(mine), 1);
  }, 20_000);

  it('tells a stream that hears nothing of the revisions it passed at most every 100 ms, and of the last one soon after', async () => {
    await allAgent();
    const events = new EventServiceClient(server.address, grpc.credentials.createInsecure());
    const s = events.follow(bearer(tokens.get('n3')!));
    const progress: Array<{ at: number; revision: number }> = [];
    s.on('data', (r: WatchResponse) => {
      if (r.events.length === 0 && r.progressRevision > 0) progress.push({ at: Date.now(), revision: r.progressRevision });
    });
    s.on('error', () => undefined);
    s.write({ watch: { fromRevision: 0, kinds: [], tenant: '' }, follow: [], unfollow: [], following: [] });
    await new Promise<void>((resolve) => s.once('metadata', () => resolve()));
    const t0 = Date.now();
    let last = 0;
    let writes = 0;
    // Users n3 does not follow, assigned one after another: an etcd write each.
    while (Date.now() - t0 < 2000) {
      last = (await assign(`quiet${writes++}`)).epoch;
    }
    const took = Date.now() - t0;
    await waitFor(() => (progress[progress.length - 1]?.revision ?? 0) >= last, 2000, 'the last revision told');
    s.cancel();
    events.close();
    expect(writes).toBeGreaterThan(60);
    // One a write would be `writes` messages; at most one per 100 ms (and the last one after).
    expect(progress.length).toBeLessThanOrEqual(Math.ceil(took / 100) + 3);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.revision).toBeGreaterThan(progress[i - 1]!.revision);
  });

  it('refuses a stream that does not start with watch, users without a name, other tenants, and callers that are not nodes', async () => {
    const events = new EventServiceClient(server.address, grpc.credentials.createInsecure());
    const firstError = (token: string, reqs: FollowRequest[]) =>
      new Promise<grpc.ServiceError>((resolve, reject) => {
        const s = events.follow(bearer(token));
        s.on('data', (r: WatchResponse) => (r.followed.length > 0 ? reject(new Error('answered')) : undefined));
        s.on('error', resolve);
        for (const r of reqs) s.write(r);
      });
    const watch = { fromRevision: 0, kinds: [], tenant: '' };
    const none = { watch: undefined, follow: [], unfollow: [], following: [] };
    let e = await firstError(tokens.get('n1')!, [{ ...none, follow: [{ tenant: 'acme', user: 'x' }] }]);
    expect([e.code, e.details]).toEqual([grpc.status.INVALID_ARGUMENT, 'watch: the first request says where the stream starts']);
    e = await firstError(tokens.get('n1')!, [{ ...none, watch }, { ...none, follow: [{ tenant: 'acme', user: '' }] }]);
    expect([e.code, e.details]).toEqual([grpc.status.INVALID_ARGUMENT, 'follow[0].user: give a user']);
    e = await firstError(tokens.get('n1')!, [{ ...none, watch }, { ...none, watch }]);
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    e = await firstError(server.adminToken, [{ ...none, watch }]);
    expect(e.code).toBe(grpc.status.PERMISSION_DENIED);
    const { token: bound } = await admin.auth.createToken({ role: 'node:n3:globex', description: 'globex only' });
    e = await firstError(bound, [{ ...none, watch, follow: [{ tenant: 'acme', user: 'alice' }] }]);
    expect([e.code, e.details]).toEqual([grpc.status.PERMISSION_DENIED, 'follow[0].tenant: this node serves other tenants than acme']);
    // A snapshot of a node's own assignments is a node's alone.
    const snap = new Promise<grpc.ServiceError>((resolve, reject) => {
      const s = events.snapshot({ kinds: [], tenant: '', compact: false, ownAssignments: true }, bearer(server.adminToken));
      s.on('data', (_r: SnapshotResponse) => undefined);
      s.on('end', () => reject(new Error('served')));
      s.on('error', resolve);
    });
    e = await snap;
    expect([e.code, e.details]).toEqual([grpc.status.INVALID_ARGUMENT, 'own_assignments: only a node has assignments of its own']);
    events.close();
  });
});
