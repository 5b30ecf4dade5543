import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocateAnswers, type LocateStreamResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens, type Api } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer, codeOf, unaryCall } from '../harness/grpc.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
let nodeToken: string;
let tokenFor: (node: string) => Promise<string>;
let client: PlacementServiceClient;
const nodes: TestNode[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  admin = connectApi(server.address, server.adminToken);
  tokenFor = nodeTokens(admin);
  nodeToken = await tokenFor('imap-a');
  client = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  for (const n of nodes) n.stop();
  client?.close();
  admin?.close();
  await server?.stop();
  await etcd?.stop();
});

const locate = (tenant: string, user: string, assign: boolean, token = nodeToken) =>
  unaryCall(client.locate.bind(client), { tenant, user, mailbox: '', assign }, token);
const listNodes = () => unaryCall(client.listNodes.bind(client), {}, server.adminToken);
const node = async (name: string, weight = 0) => {
  const n = await startTestNode(server.address, await tokenFor(name), { name, weight, ttlSeconds: 2, intervalMs: 400 });
  nodes.push(n);
  return n;
};

describe('placement', () => {
  it('assigns users to live nodes within the bounded-load limit, with increasing epochs', async () => {
    await node('imap-a');
    await node('imap-b');
    await waitFor(async () => (await listNodes()).nodes.filter((n) => n.state === 'active').length === 2, 5000, 'nodes in cache');
    const epochs: number[] = [];
    const counts = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const r = await locate('acme', `user${i}`, true);
      expect(r.assigned).toBe(true);
      expect(['imap-a', 'imap-b']).toContain(r.node);
      expect(r.imapAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      epochs.push(r.epoch);
      counts.set(r.node, (counts.get(r.node) ?? 0) + 1);
    }
    expect([...epochs].sort((a, b) => a - b)).toEqual(epochs);
    expect(new Set(epochs).size).toBe(200);
    for (const c of counts.values()) expect(c).toBeLessThanOrEqual(Math.ceil(1.25 * 200 * 0.5));
    // Locating again returns the same assignment without creating one.
    const again = await locate('acme', 'user7', true);
    expect(again.assigned).toBe(false);
    expect(again.epoch).toBe(epochs[7]);
    await waitFor(async () => (await listNodes()).nodes.reduce((s, n) => s + n.users, 0) === 200, 5000, 'user counts');
  });

  it('fails a dead node over: its assignments vanish with its lease and users come back with higher epochs', async () => {
    const before = new Map<string, { node: string; epoch: number }>();
    for (let i = 0; i < 200; i++) {
      const r = await locate('acme', `user${i}`, false);
      before.set(`user${i}`, { node: r.node, epoch: r.epoch });
    }
    const victim = nodes.find((n) => n.name === 'imap-a')!;
    const held = [...before].filter(([, v]) => v.node === 'imap-a').map(([u]) => u);
    expect(held.length).toBeGreaterThan(0);
    const stoppedAt = Date.now();
    victim.stop();
    // TTL is 2 s: within TTL + 1 s of the last renewal everything it held is unassigned.
    await waitFor(async () => (await locate('acme', held[0]!, false)).node === '', 5000, 'lease expiry');
    expect(Date.now() - stoppedAt).toBeLessThan(5000); // the TTL + 1 s goal is measured from etcd events in failover.test.ts
    for (const u of held) {
      expect((await locate('acme', u, false)).node).toBe('');
      const r = await locate('acme', u, true);
      expect(r.node).toBe('imap-b');
      expect(r.epoch).toBeGreaterThan(before.get(u)!.epoch);
    }
    expect((await listNodes()).nodes.find((n) => n.name === 'imap-a')!.state).toBe('down');
  });

  it('gives draining nodes no new users, and takes them again after undrain', async () => {
    await node('imap-c');
    const drained = await unaryCall(client.setNodeState.bind(client), { name: 'imap-b', state: 'draining' }, server.adminToken);
    expect(drained.state).toBe('draining');
    await waitFor(async () => (await listNodes()).nodes.some((n) => n.name === 'imap-c' && n.state === 'active'), 5000, 'imap-c');
    await waitFor(async () => (await listNodes()).nodes.some((n) => n.name === 'imap-b' && n.state === 'draining'), 5000, 'draining');
    for (let i = 0; i < 30; i++) expect((await locate('acme', `new${i}`, true)).node).toBe('imap-c');
    await unaryCall(client.setNodeState.bind(client), { name: 'imap-b', state: 'active' }, server.adminToken);
    await waitFor(async () => (await listNodes()).nodes.some((n) => n.name === 'imap-b' && n.state === 'active'), 5000, 'active');
    // imap-b still holds more than its share (it took imap-a's users), so
    // bounded loads fill imap-c first; once imap-c reaches its capacity,
    // imap-b takes new users again.
    let toB = -1;
    for (let i = 0; i < 600 && toB < 0; i++) if ((await locate('acme', `later${i}`, true)).node === 'imap-b') toB = i;
    expect(toB).toBeGreaterThanOrEqual(0);
  });

  it('re-registering a node revokes its old lease, with the old assignments', async () => {
    const c = nodes.find((n) => n.name === 'imap-c')!;
    const held = (await locate('acme', 'new0', false));
    expect(held.node).toBe('imap-c');
    const again = await node('imap-c');
    expect(again.leaseId).not.toBe(c.leaseId);
    c.stop();
    expect((await locate('acme', 'new0', false)).node).toBe('');
    await waitFor(() => c.responses.length > 0, 2000, 'keepalive answers');
  });

  it('releases an assignment only at its own epoch, and only by its own node', async () => {
    const r = await locate('acme', 'releaseme', true);
    const own = await tokenFor(r.node);
    const release = (epoch: number, token = own) => unaryCall(client.release.bind(client), { tenant: 'acme', user: 'releaseme', epoch, ifUnheld: false, waitAcksMs: 0 }, token);
    const other = (await listNodes()).nodes.find((n) => n.name !== r.node && n.state === 'active')!;
    expect(await codeOf(release(r.epoch, await tokenFor(other.name)))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'user' });
    expect((await locate('acme', 'releaseme', false)).epoch).toBe(r.epoch);
    expect((await release(r.epoch - 1)).released).toBe(false);
    expect((await release(r.epoch)).released).toBe(true);
    expect((await locate('acme', 'releaseme', false)).node).toBe('');
    expect((await locate('acme', 'releaseme', true)).epoch).toBeGreaterThan(r.epoch);
  });

  it('an idle release (if_unheld) waits while another live node holds the user, until it lets go', async () => {
    const r = await locate('acme', 'heldme', true);
    const other = (await listNodes()).nodes.find((n) => n.name !== r.node && n.state === 'active')!;
    const hold = async (node: string, on: boolean, as = node) => unaryCall(client.holdUser.bind(client), { tenant: 'acme', user: 'heldme', node, hold: on }, await tokenFor(as));
    const release = async () => unaryCall(client.release.bind(client), { tenant: 'acme', user: 'heldme', epoch: r.epoch, ifUnheld: true, waitAcksMs: 0 }, await tokenFor(r.node));
    // A node holds users for itself only.
    expect(await codeOf(hold(other.name, true, r.node))).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await hold(other.name, true);
    expect(await release()).toEqual({ released: false, held: true });
    expect((await locate('acme', 'heldme', false)).epoch).toBe(r.epoch);
    await hold(other.name, false);
    expect(await release()).toEqual({ released: true, held: false });
    expect((await locate('acme', 'heldme', false)).node).toBe('');
    // Bad input changes nothing: invalid names, a node that is not live.
    expect(await codeOf(hold('Not A Node', true, other.name))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'node' });
    expect(await codeOf(unaryCall(client.holdUser.bind(client), { tenant: 'acme', user: 'x y', node: other.name, hold: true }, await tokenFor(other.name)))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'user' });
    expect(await codeOf(hold('never-registered', true))).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, field: 'node' });
    expect((await codeOf(unaryCall(client.holdUser.bind(client), { tenant: 'acme', user: 'heldme', node: other.name, hold: true }, server.adminToken))).code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('locates a mailbox by its owner', async () => {
    const owner = await locate('acme', 'alice', true);
    const viaMailbox = await unaryCall(client.locate.bind(client), { tenant: 'acme', user: '', mailbox: 'alice/Projects', assign: false }, nodeToken);
    expect(viaMailbox).toMatchObject({ user: 'alice', node: owner.node, epoch: owner.epoch });
  });

  it('answers many Locates over one LocateStream, by id, with per-lookup errors that leave the stream open', async () => {
    const owner = await locate('acme', 'alice', true);
    const stream = client.locateStream(bearer(nodeToken));
    const answers = new Map<number, LocateStreamResponse>();
    stream.on('data', (r: LocateStreamResponse) => answers.set(r.id, r));
    stream.write({ id: 1, request: { tenant: 'acme', user: 'alice', mailbox: '', assign: false } });
    stream.write({ id: 2, request: { tenant: 'Not A Tenant', user: 'alice', mailbox: '', assign: false } });
    stream.write({ id: 3, request: { tenant: 'acme', user: '', mailbox: 'alice/Projects', assign: false } });
    stream.write({ id: 4, request: { tenant: 'acme', user: 'streamed', mailbox: '', assign: true } });
    stream.write({ id: 5, request: { tenant: 'acme', user: 'alice', mailbox: '', assign: false } });
    await waitFor(() => answers.size === 5, 5000, 'five answers').catch((e: unknown) => {
      throw new Error(`${String(e)}: ${JSON.stringify([...answers.values()])}`);
    });
    stream.end();
    expect(answers.get(1)).toMatchObject({ code: 0, response: { user: 'alice', node: owner.node, epoch: owner.epoch } });
    expect(answers.get(2)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/^tenant: /) });
    expect(answers.get(3)).toMatchObject({ code: 0, response: { user: 'alice', epoch: owner.epoch } });
    expect(answers.get(4)).toMatchObject({ code: 0, response: { user: 'streamed', assigned: true } });
    expect(answers.get(4)!.response!.epoch).toBeGreaterThan(0);
    // A write is answered once this coordinator's cache shows it: the next lookup reads it.
    expect((await locate('acme', 'streamed', false)).epoch).toBe(answers.get(4)!.response!.epoch);
    expect(answers.get(5)).toMatchObject({ code: 0, response: { user: 'alice' } });
    const noAuth = client.locateStream(bearer(undefined));
    const err = await new Promise<grpc.ServiceError>((resolve) => noAuth.on('error', resolve));
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('answers batches of Locates over one LocateMany, in batched answers, with per-lookup errors and a size limit', async () => {
    const owner = await locate('acme', 'alice', true);
    const stream = client.locateMany(bearer(nodeToken));
    const answers = new Map<number, LocateStreamResponse>();
    let messages = 0;
    stream.on('data', (r: LocateAnswers) => {
      messages++;
      for (const a of r.answers) answers.set(a.id, a);
    });
    const lookups = Array.from({ length: 300 }, (_, i) => ({ id: i + 1, request: { tenant: 'acme', user: 'alice', mailbox: '', assign: false } }));
    lookups[10] = { id: 11, request: { tenant: 'Not A Tenant', user: 'alice', mailbox: '', assign: false } };
    lookups[20] = { id: 21, request: { tenant: 'acme', user: 'many1', mailbox: '', assign: true } };
    stream.write({ lookups });
    await waitFor(() => answers.size === 300, 5000, '300 answers');
    // Answered from memory together: far fewer messages than lookups.
    expect(messages).toBeLessThan(10);
    expect(answers.get(1)).toMatchObject({ code: 0, response: { user: 'alice', node: owner.node, epoch: owner.epoch } });
    expect(answers.get(300)).toMatchObject({ code: 0, response: { user: 'alice', epoch: owner.epoch } });
    expect(answers.get(11)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/^tenant: /) });
    expect(answers.get(21)).toMatchObject({ code: 0, response: { user: 'many1', assigned: true } });
    // Too many in one message: each is refused, the stream goes on.
    answers.clear();
    stream.write({ lookups: Array.from({ length: 1001 }, (_, i) => ({ id: 1000 + i, request: { tenant: 'acme', user: 'alice', mailbox: '', assign: false } })) });
    stream.write({ lookups: [{ id: 5000, request: { tenant: 'acme', user: 'alice', mailbox: '', assign: false } }] });
    await waitFor(() => answers.size === 1002, 5000, '1,002 answers');
    expect(answers.get(1000)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: 'lookups: at most 1000 per message' });
    expect(answers.get(5000)).toMatchObject({ code: 0, response: { user: 'alice' } });
    stream.end();
  });

  it('rejects bad input and wrong roles', async () => {
    const n1 = await tokenFor('n1');
    const reg = (req: Record<string, unknown>) =>
      unaryCall(client.registerNode.bind(client), { name: 'n1', imapAddress: '127.0.0.1:143', weight: 0, zone: '', ttlSeconds: 0, addresses: {}, ...req }, n1);
    for (const [req, field] of [
      [{ name: 'Bad Name' }, 'name'],
      [{ imapAddress: 'nohost' }, 'imap_address'],
      [{ weight: 5000 }, 'weight'],
      [{ ttlSeconds: 1 }, 'ttl_seconds'],
      [{ zone: 'EU West' }, 'zone'],
      [{ addresses: { smtp: '127.0.0.1:25' } }, 'addresses'],
      [{ addresses: { lmtp: 'nohost' } }, 'addresses[lmtp]'],
    ] as const) {
      expect(await codeOf(reg(req))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field });
    }
    expect((await codeOf(unaryCall(client.setNodeState.bind(client), { name: 'imap-b', state: 'sleeping' }, server.adminToken))).field).toBe('state');
    expect((await codeOf(unaryCall(client.setNodeState.bind(client), { name: 'nope', state: 'active' }, server.adminToken))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(unaryCall(client.locate.bind(client), { tenant: 'acme', user: 'a', mailbox: 'a/b', assign: false }, nodeToken))).field).toBe('user');
    expect((await codeOf(unaryCall(client.release.bind(client), { tenant: 'acme', user: 'a', epoch: 0, ifUnheld: false, waitAcksMs: 0 }, nodeToken))).field).toBe('epoch');
    // Roles: only nodes register; only admins change nodes.
    const asAdmin = unaryCall(client.registerNode.bind(client), { name: 'x', imapAddress: '127.0.0.1:143', weight: 0, zone: '', ttlSeconds: 0, addresses: {} }, server.adminToken);
    expect((await codeOf(asAdmin)).code).toBe(grpc.status.PERMISSION_DENIED);
    expect((await codeOf(unaryCall(client.setNodeState.bind(client), { name: 'imap-b', state: 'active' }, nodeToken))).code).toBe(grpc.status.PERMISSION_DENIED);
    expect((await codeOf(unaryCall(client.removeNode.bind(client), { name: 'imap-b', force: false }, server.adminToken))).code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it('binds a node token to its node: no other name, no unvouched address, no other lease', async () => {
    const n1 = await tokenFor('n1');
    const reg = (name: string, imapAddress: string) => unaryCall(client.registerNode.bind(client), { name, imapAddress, weight: 0, zone: '', ttlSeconds: 0, addresses: {} }, n1);
    expect(await codeOf(reg('imap-b', '127.0.0.1:143'))).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    // Gateways would send passwords there: only addresses of placement.allowedAddresses (default: loopback and private).
    expect(await codeOf(reg('n1', '203.0.113.9:143'))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'imap_address' });
    expect(await codeOf(reg('n1', 'mail.example.com:143'))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'imap_address' });
    // The same for the node's other servers: mail is delivered there, passwords sent there.
    const other = unaryCall(client.registerNode.bind(client), { name: 'n1', imapAddress: '127.0.0.1:143', weight: 0, zone: '', ttlSeconds: 0, addresses: { lmtp: '203.0.113.9:24' } }, n1);
    expect(await codeOf(other)).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'addresses' });
    expect((await listNodes()).nodes.some((n) => n.name === 'n1')).toBe(false);
    // Lease ids are shown to admins only; a node cannot renew or end another node's lease.
    const b = (await listNodes()).nodes.find((n) => n.name === 'imap-b')!;
    expect(b.leaseId).not.toBe('');
    const asNode = await unaryCall(client.listNodes.bind(client), {}, n1);
    expect(asNode.nodes.length).toBeGreaterThan(0);
    expect(asNode.nodes.every((n) => n.leaseId === '')).toBe(true);
    expect(await codeOf(unaryCall(client.deregisterNode.bind(client), { name: 'imap-b', leaseId: b.leaseId, reason: '' }, n1))).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    const ka = client.keepAlive(bearer(n1));
    const refused = new Promise<grpc.ServiceError>((resolve) => ka.on('error', resolve));
    ka.on('data', () => undefined);
    ka.write({ node: 'n1', leaseId: b.leaseId });
    expect(await refused).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect((await listNodes()).nodes.find((n) => n.name === 'imap-b')!.state).toBe('active');
  });

  it('removes a live node only with force, which ends its assignments', async () => {
    const u = await locate('acme', 'forced', true);
    await unaryCall(client.removeNode.bind(client), { name: u.node, force: true }, server.adminToken);
    expect((await locate('acme', 'forced', false)).node).toBe('');
    await waitFor(async () => !(await listNodes()).nodes.some((n) => n.name === u.node), 5000, 'node gone from list');
  });
});
