import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { type DrainProgress, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer, unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
const nodeTokenOf = new Map<string, string>();
let placement: PlacementServiceClient;
const agents = new Map<string, Agent>();
const log: string[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  const tokenFor = nodeTokens(admin);
  for (const name of ['m-a', 'm-b', 'm-c']) nodeTokenOf.set(name, await tokenFor(name));
  admin.close();
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  for (const name of ['m-a', 'm-b', 'm-c']) {
    const a = createAgent({
      coordinators: [server.address],
      token: nodeTokenOf.get(name)!,
      node: { name, imapAddress: '127.0.0.1:143' },
      ttlSeconds: 3,
      onUserLeaving: async (u) => {
        log.push(`${name} closing ${u.user}@${u.epoch}`);
        await new Promise((r) => setTimeout(r, 50));
        log.push(`${name} closed ${u.user}@${u.epoch}`);
      },
    });
    a.on('userAssigned', (u) => log.push(`${name} assigned ${u.user}@${u.epoch}`));
    a.on('userLost', (u) => log.push(`${name} lost ${u.user}@${u.epoch}`));
    agents.set(name, a);
  }
  await Promise.all([...agents.values()].map((a) => a.ready));
  await waitFor(async () => (await call(placement.listNodes.bind(placement), {})).nodes.filter((n) => n.state === 'active').length === 3, 5000, 'three nodes');
});
afterAll(async () => {
  for (const a of agents.values()) await a.close().catch(() => undefined);
  placement?.close();
  await server?.stop();
  await etcd?.stop();
});

function call<Req, Res>(m: (r: Req, md: grpc.Metadata, o: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: Res) => void) => grpc.ClientUnaryCall, req: Req): Promise<Res> {
  return unaryCall(m, req, server.adminToken, 30_000);
}
const locate = (user: string, assign = false) => call(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign });

describe('moves, kicks and drains', () => {
  it('moves gracefully: the old node closes and releases before the new assignment exists', async () => {
    const before = await locate('mover', true);
    const to = before.node === 'm-a' ? 'm-b' : 'm-a';
    await waitFor(() => log.includes(`${before.node} assigned mover@${before.epoch}`), 5000, 'assigned');
    const r = await call(placement.move.bind(placement), { tenant: 'acme', user: 'mover', toNode: to, timeoutMs: 0 });
    expect(r).toMatchObject({ node: to, fromNode: before.node, releasedByNode: true });
    expect(r.epoch).toBeGreaterThan(before.epoch);
    await waitFor(() => log.includes(`${to} assigned mover@${r.epoch}`), 5000, 'new node told');
    // Fencing: the new holder accepts only the new epoch; the old one accepts nothing.
    await agents.get(before.node)!.waitForRevision(r.epoch);
    expect(agents.get(to)!.isCurrent('acme', 'mover', r.epoch)).toBe(true);
    expect(agents.get(to)!.isCurrent('acme', 'mover', before.epoch)).toBe(false);
    expect(agents.get(before.node)!.isCurrent('acme', 'mover', before.epoch)).toBe(false);
    expect(agents.get(before.node)!.isCurrent('acme', 'mover', r.epoch)).toBe(false);
    const seq = log.filter((l) => l.includes(' mover@'));
    expect(seq.indexOf(`${before.node} closed mover@${before.epoch}`)).toBeGreaterThan(seq.indexOf(`${before.node} lost mover@${before.epoch}`));
    expect(seq.indexOf(`${to} assigned mover@${r.epoch}`)).toBeGreaterThan(seq.indexOf(`${before.node} closed mover@${before.epoch}`));
    // Reported lost exactly once.
    expect(seq.filter((l) => l === `${before.node} lost mover@${before.epoch}`)).toHaveLength(1);
  });

  it('kicks: sessions end and the user is unassigned', async () => {
    const before = await locate('kicked', true);
    await waitFor(() => log.includes(`${before.node} assigned kicked@${before.epoch}`), 5000, 'assigned');
    const r = await call(placement.kick.bind(placement), { tenant: 'acme', user: 'kicked', timeoutMs: 0 });
    expect(r.releasedByNode).toBe(true);
    expect(log).toContain(`${before.node} closed kicked@${before.epoch}`);
    expect((await locate('kicked')).node).toBe('');
    expect((await locate('kicked', true)).epoch).toBeGreaterThan(before.epoch);
  });

  it('drains a node with 1,000 users under load: none left, load within the bounded-load limit, undrain takes users again', async () => {
    const setState = (name: string, state: string) => call(placement.setNodeState.bind(placement), { name, state });
    const nodeList = async () => (await call(placement.listNodes.bind(placement), {})).nodes;
    // Park m-b and m-c so that m-a takes 1,000 users, then let them back.
    await setState('m-b', 'draining');
    await setState('m-c', 'draining');
    await waitFor(async () => (await nodeList()).filter((n) => n.state === 'draining').length === 2, 5000, 'parked');
    for (let i = 0; i < 1000; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => locate(`d${i + j}`, true)));
    await setState('m-b', 'active');
    await setState('m-c', 'active');
    await waitFor(async () => (await nodeList()).filter((n) => n.state === 'active').length === 3, 5000, 'all active');
    await waitFor(async () => (await nodeList()).find((n) => n.name === 'm-a')!.users >= 1000, 5000, '1,000 users on m-a');

    // Load while draining: logins of other users keep locating and assigning.
    let loading = true;
    let served = 0;
    const load = (async () => {
      for (let i = 0; loading; i++) {
        const r = await locate(`load${i % 200}`, true);
        expect(r.node).not.toBe('');
        served++;
      }
    })();
    const progress: DrainProgress[] = [];
    await new Promise<void>((resolve, reject) => {
      const s = placement.drain({ name: 'm-a', parallelism: 16, timeoutMs: 0 }, bearer(server.adminToken));
      s.on('data', (p: DrainProgress) => progress.push(p));
      s.on('end', resolve);
      s.on('error', reject);
    });
    loading = false;
    await load;
    expect(served).toBeGreaterThan(0);
    const last = progress[progress.length - 1]!;
    expect(last).toMatchObject({ done: true, failed: 0 });
    expect(last.moved).toBe(last.total);
    expect(last.total).toBeGreaterThanOrEqual(1000);
    expect(progress.length).toBeGreaterThan(2);
    await waitFor(async () => (await nodeList()).find((n) => n.name === 'm-a')!.users === 0, 5000, 'm-a empty');
    const nodes = await nodeList();
    const total = nodes.reduce((s, n) => s + n.users, 0);
    // Equal weights over the two active nodes: each at most (1+ε)·total/2.
    for (const n of nodes.filter((x) => x.name !== 'm-a')) expect(n.users).toBeLessThanOrEqual(Math.ceil(1.25 * total * 0.5));
    await setState('m-a', 'active');
    await waitFor(async () => (await nodeList()).find((n) => n.name === 'm-a')!.state === 'active', 5000, 'undrained');
    const targets = new Set<string>();
    for (let i = 0; i < 40; i++) targets.add((await locate(`after${i}`, true)).node);
    expect(targets.has('m-a')).toBe(true);
  }, 120_000);

  it('ends the assignment itself when the old node does not answer, still with a higher epoch', async () => {
    const before = await locate('stuck', true);
    const holder = agents.get(before.node)!;
    holder.orphan(); // stops listening and renewing, like a hung process
    const r = await call(placement.move.bind(placement), { tenant: 'acme', user: 'stuck', toNode: '', timeoutMs: 300 });
    expect(r.releasedByNode).toBe(false);
    expect(r.node).not.toBe(before.node);
    expect(r.epoch).toBeGreaterThan(before.epoch);
    agents.delete(before.node);
  });
});
