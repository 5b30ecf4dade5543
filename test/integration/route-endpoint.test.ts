import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { scrape } from '../harness/metrics.js';
import { type TestNode, startTestNode } from '../harness/node-client.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * POST /v1/route on the coordinator's HTTP listener: where a user lives,
 * for Dovecot's own proxies, answered from the coordinator's caches (and
 * one guarded transaction for a new assignment).
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let placement: PlacementServiceClient;
const nodes: TestNode[] = [];
const tokens: Record<string, string> = {};
const ADDR = {
  n1: { imap: '127.0.0.1:10143', pop3: '127.0.0.1:10110', lmtp: '127.0.0.1:10024' },
  n2: { imap: '127.0.0.1:20143', pop3: '127.0.0.1:20110', lmtp: '127.0.0.1:20024' },
};

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints, flags: { httpListen: '127.0.0.1:0' } });
  const admin = connectApi(server.address, server.adminToken);
  try {
    await admin.directory.createTenant({ id: 'acme', domains: ['acme.test', 'acme.example'] });
    await admin.directory.createTenant({ id: 'globex', domains: ['globex.test'] });
    tokens.proxy = (await admin.auth.createToken({ role: 'proxy', description: 'a Dovecot proxy' })).token;
    tokens.tenantAdmin = (await admin.auth.createToken({ role: 'tenant-admin:acme', description: '' })).token;
    tokens.globexNode = (await admin.auth.createToken({ role: 'node:g1:globex', description: '' })).token;
    const t = nodeTokens(admin);
    for (const n of ['n1', 'n2'] as const) nodes.push(await startTestNode(server.address, await t(n), { name: n, ttlSeconds: 5, imapAddress: ADDR[n].imap, addresses: { pop3: ADDR[n].pop3, lmtp: ADDR[n].lmtp } }));
  } finally {
    admin.close();
  }
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
}, 60_000);
afterAll(async () => {
  placement?.close();
  for (const n of nodes) n.stop();
  await server?.stop();
  await etcd?.stop();
});

async function route(body: unknown, token: string | null = tokens.proxy!): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | null }> {
  const res = await fetch(`http://${server.httpAddress}/v1/route`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, retryAfter: res.headers.get('retry-after') };
}
const locate = async (tenant: string, user: string): Promise<string> => (await unaryCall(placement.locate.bind(placement), { tenant, user, mailbox: '', assign: false }, server.adminToken)).node;

describe('POST /v1/route', () => {
  it('assigns an authenticated user and answers with the node and its server for the protocol', async () => {
    const r = await route({ user: 'alice@acme.test', protocol: 'imap', assign: true, client_ip: '192.0.2.7' });
    expect(r.status).toBe(200);
    const node = r.body.node as 'n1' | 'n2';
    expect(['n1', 'n2']).toContain(node);
    const [host, port] = ADDR[node].imap.split(':');
    expect(r.body).toEqual({ tenant: 'acme', user: 'alice', destuser: 'alice@acme.test', node, host, port: Number(port), epoch: expect.any(Number) });
    expect(await locate('acme', 'alice')).toBe(node);
    // The same user by another domain of the tenant, for another protocol: the same node and epoch.
    const pop = await route({ user: 'alice@ACME.example', protocol: 'pop3', assign: true });
    expect(pop.body).toMatchObject({ node, epoch: r.body.epoch, destuser: 'alice@acme.test', port: Number(ADDR[node].pop3.split(':')[1]) });
    expect((await route({ user: 'alice@acme.test', protocol: 'lmtp' })).body).toMatchObject({ node, port: Number(ADDR[node].lmtp.split(':')[1]) });
  });

  it('assigns nobody without assign, for unknown domains or names, and says which field is wrong', async () => {
    expect(await route({ user: 'bob@acme.test', protocol: 'imap' })).toMatchObject({ status: 404, body: { error: 'user: bob of acme is not assigned to any node', field: 'user' } });
    expect(await locate('acme', 'bob')).toBe('');
    expect(await route({ user: 'bob@nowhere.test', assign: true })).toMatchObject({ status: 404, body: { error: 'user: no tenant has the domain nowhere.test' } });
    expect(await route({ user: 'bob', assign: true })).toMatchObject({ status: 404, body: { field: 'user' } });
    expect((await route({ user: 'bob', tenant: 'acme', assign: true })).status).toBe(200);
    expect(await route({ user: 'Not A User@acme.test', assign: true })).toMatchObject({ status: 400, body: { field: 'user' } });
    expect(await route({ user: 'carol@acme.test', protocol: 'smtp', assign: true })).toMatchObject({ status: 400, body: { field: 'protocol' } });
    expect(await route({ user: 'carol@acme.test', assign: 'yes' })).toMatchObject({ status: 400, body: { field: 'assign' } });
    expect(await route('{not json')).toMatchObject({ status: 400, body: { field: 'body' } });
    expect(await locate('acme', 'carol')).toBe('');
    // A node without a server for the protocol: try later (the user is assigned all the same).
    const sieve = await route({ user: 'carol@acme.test', protocol: 'sieve', assign: true });
    expect(sieve).toMatchObject({ status: 503, retryAfter: '1', body: { retry_after: 1 } });
    expect(sieve.body.error).toMatch(/^node n[12] has no sieve server registered$/);
  });

  it('takes proxy, node and admin tokens only, node tokens for their tenants', async () => {
    expect((await route({ user: 'alice@acme.test' }, null)).status).toBe(401);
    expect((await route({ user: 'alice@acme.test' }, tokens.tenantAdmin)).status).toBe(403);
    expect((await route({ user: 'alice@acme.test' }, tokens.globexNode)).status).toBe(403);
    expect((await route({ user: 'dave@globex.test', assign: true }, tokens.globexNode)).status).toBe(200);
    expect((await route({ user: 'alice@acme.test' }, server.adminToken)).status).toBe(200);
    // A proxy token can do nothing else.
    const err = await unaryCall(placement.listNodes.bind(placement), {}, tokens.proxy).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('holds logins of a user being moved (503, retry_after) and then routes them to the new node', async () => {
    const first = await route({ user: 'frank@acme.test', assign: true });
    const from = first.body.node as string;
    const to = from === 'n1' ? 'n2' : 'n1';
    // The test nodes never release by themselves: the move waits its timeout, then ends the assignment.
    const moving = unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'frank', toNode: to, timeoutMs: 1500 }, server.adminToken);
    let held: Awaited<ReturnType<typeof route>> | undefined;
    for (let i = 0; i < 100 && held?.status !== 503; i++) {
      held = await route({ user: 'frank@acme.test', assign: true });
      if (held.status !== 503) await new Promise((r) => setTimeout(r, 20));
    }
    expect(held).toMatchObject({ status: 503, retryAfter: '1', body: { error: 'user: frank of acme is moving to another node; try again in a moment', retry_after: 1 } });
    expect((await moving).node).toBe(to);
    const after = await route({ user: 'frank@acme.test', assign: true });
    expect(after).toMatchObject({ status: 200, body: { node: to } });
    expect(after.body.epoch).toBeGreaterThan(first.body.epoch as number);
  });

  it('answers 503 with retry_after when no node takes users, and routes to the only active one', async () => {
    await unaryCall(placement.setNodeState.bind(placement), { name: 'n1', state: 'draining' }, server.adminToken);
    await unaryCall(placement.setNodeState.bind(placement), { name: 'n2', state: 'draining' }, server.adminToken);
    try {
      await new Promise((r) => setTimeout(r, 200));
      expect(await route({ user: 'erin@acme.test', assign: true })).toMatchObject({ status: 503, retryAfter: '1', body: { error: 'no active node is registered' } });
      await unaryCall(placement.setNodeState.bind(placement), { name: 'n2', state: 'active' }, server.adminToken);
      await new Promise((r) => setTimeout(r, 200));
      expect((await route({ user: 'erin@acme.test', assign: true })).body).toMatchObject({ node: 'n2' });
    } finally {
      await unaryCall(placement.setNodeState.bind(placement), { name: 'n1', state: 'active' }, server.adminToken);
      await unaryCall(placement.setNodeState.bind(placement), { name: 'n2', state: 'active' }, server.adminToken);
    }
    const m = await scrape(server.httpAddress!);
    expect(m.value('mailshare_route_duration_seconds_count', { status: '200' })).toBeGreaterThanOrEqual(5);
    expect(m.value('mailshare_route_duration_seconds_count', { status: '503' })).toBeGreaterThanOrEqual(2);
  });
});
