import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AclServiceService } from '../../src/gen/mailshare/v1/acl.js';
import { AuditServiceService } from '../../src/gen/mailshare/v1/audit.js';
import { AuthServiceService } from '../../src/gen/mailshare/v1/auth.js';
import { DirectoryServiceService } from '../../src/gen/mailshare/v1/directory.js';
import { EventServiceService, SnapshotRequest, WatchRequest } from '../../src/gen/mailshare/v1/events.js';
import { MailboxServiceService } from '../../src/gen/mailshare/v1/mailbox.js';
import { PlacementServiceClient, PlacementServiceService } from '../../src/gen/mailshare/v1/placement.js';
import { SystemServiceService } from '../../src/gen/mailshare/v1/system.js';
import { type Api, connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer, unaryCall } from '../harness/grpc.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { REPO_ROOT, startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * Every RPC × every role, against the table in the README: a role the
 * table says "no" for gets PERMISSION_DENIED, any other gets past the role
 * check. Then the constraints of the table, probed with valid requests:
 * a node token acts for its own node and its tenants only, a tenant admin
 * in its tenant only.
 */
const SERVICES = {
  SystemService: SystemServiceService,
  AuthService: AuthServiceService,
  DirectoryService: DirectoryServiceService,
  MailboxService: MailboxServiceService,
  AclService: AclServiceService,
  AuditService: AuditServiceService,
  PlacementService: PlacementServiceService,
  EventService: EventServiceService,
} as const;
type MethodDef = { path: string; requestStream: boolean; responseStream: boolean; responseDeserialize: (b: Buffer) => unknown };

/** RPC → role column → allowed, from the README's table. */
function readmeTable(): Map<string, { admin: boolean; tenantAdmin: boolean; node: boolean }> {
  const text = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const rows = new Map<string, { admin: boolean; tenantAdmin: boolean; node: boolean }>();
  for (const m of text.matchAll(/^\| `(\w+Service\.\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|/gm)) {
    const allowed = (cell: string): boolean => cell.trim() !== 'no';
    rows.set(m[1]!, { admin: allowed(m[2]!), tenantAdmin: allowed(m[3]!), node: allowed(m[4]!) });
  }
  return rows;
}

let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
let tokens: { admin: string; tenantAdmin: string; node: string };
let other: { nodeToken: string; tenantAdmin: string };
let n1: TestNode;
let n2: TestNode;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  admin = connectApi(server.address, server.adminToken);
  for (const id of ['acme', 'globex']) {
    await admin.directory.createTenant({ id, domains: [] });
    await admin.mailbox.createMailbox({ tenant: id, owner: 'alice', name: 'P', actor: '' });
    await admin.directory.setGroupMembers({ tenant: id, name: 'g', members: ['bob'], expectedRevision: 0 });
  }
  const make = async (role: string): Promise<string> => (await admin.auth.createToken({ role, description: 'matrix' })).token;
  tokens = { admin: server.adminToken, tenantAdmin: await make('tenant-admin:acme'), node: await make('node:n1:acme') };
  other = { nodeToken: await make('node:n2'), tenantAdmin: await make('tenant-admin:globex') };
  n1 = await startTestNode(server.address, tokens.node, { name: 'n1', ttlSeconds: 5 });
  n2 = await startTestNode(server.address, other.nodeToken, { name: 'n2', ttlSeconds: 5 });
}, 60_000);
afterAll(async () => {
  n1?.stop();
  n2?.stop();
  admin?.close();
  await server?.stop();
  await etcd?.stop();
});

/**
 * Calls a method with an empty request (every field at its default, as the
 * server decodes it) or `body`; resolves with the status code the call
 * ended with (0 when it got through).
 */
function callWith(def: MethodDef, token: string, body = Buffer.alloc(0)): Promise<number> {
  const client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  const md = bearer(token);
  const ser = (): Buffer => body;
  return new Promise<number>((resolve) => {
    const done = (code: number): void => {
      resolve(code);
      client.close();
    };
    if (!def.requestStream && !def.responseStream) {
      client.makeUnaryRequest(def.path, ser, def.responseDeserialize, {}, md, { deadline: Date.now() + 5000 }, (err) => done(err ? err.code : 0));
      return;
    }
    // A stream the server accepted stays open (or answers): no error within a moment means past the role check.
    const call = def.requestStream
      ? def.responseStream
        ? client.makeBidiStreamRequest(def.path, ser, def.responseDeserialize, md, {})
        : undefined
      : client.makeServerStreamRequest(def.path, ser, def.responseDeserialize, {}, md, {});
    if (!call) throw new Error(`client streaming ${def.path} is not used by mailshare`);
    const timer = setTimeout(() => {
      call.cancel();
      done(0);
    }, 400);
    call.on('data', () => undefined);
    call.on('error', (err: grpc.ServiceError) => {
      clearTimeout(timer);
      done(err.code === grpc.status.CANCELLED ? 0 : err.code);
    });
    call.on('end', () => {
      clearTimeout(timer);
      done(0);
    });
    if (def.requestStream) {
      // An empty lookup or renewal: refused or answered, never past a missing right.
      (call as grpc.ClientDuplexStream<unknown, unknown>).write({});
    }
  });
}

describe('every RPC × every role, as the README table says', () => {
  it('lists every RPC of every service in the README, and nothing else', () => {
    const table = readmeTable();
    const rpcs = Object.entries(SERVICES).flatMap(([svc, def]) => Object.values(def as Record<string, MethodDef>).map((m) => `${svc}.${m.path.split('/').pop()}`));
    expect([...table.keys()].sort()).toEqual(rpcs.sort());
  });

  it('refuses a role the table says "no" for with PERMISSION_DENIED, and lets the others past the role check', async () => {
    const table = readmeTable();
    const wrong: string[] = [];
    for (const [svc, def] of Object.entries(SERVICES)) {
      for (const m of Object.values(def as Record<string, MethodDef>)) {
        const rpc = `${svc}.${m.path.split('/').pop()}`;
        const expected = table.get(rpc)!;
        for (const [role, token, allowed] of [
          ['admin', tokens.admin, expected.admin],
          ['tenant-admin', tokens.tenantAdmin, expected.tenantAdmin],
          ['node', tokens.node, expected.node],
        ] as const) {
          // A tenant admin must name its tenant to watch at all (a constraint, probed below).
          const named = m.path.endsWith('/Watch') ? WatchRequest.encode(WatchRequest.fromPartial({ tenant: 'acme' })) : SnapshotRequest.encode(SnapshotRequest.fromPartial({ tenant: 'acme' }));
          const body = svc === 'EventService' && role === 'tenant-admin' ? Buffer.from(named.finish()) : undefined;
          const code = await callWith(m, token, body);
          const denied = code === grpc.status.PERMISSION_DENIED;
          if (code === grpc.status.UNAUTHENTICATED || denied === allowed) wrong.push(`${rpc} as ${role}: ${allowed ? 'allowed' : 'no'} in the table, got code ${code}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});

describe('the constraints of the table', () => {
  const placement = (): PlacementServiceClient => new PlacementServiceClient(server.address, grpc.credentials.createInsecure());

  it('a tenant admin acts in its tenant only; a node bound to tenants in those only', async () => {
    const probes = (api: Api, tenant: string): Array<[string, () => Promise<unknown>]> => [
      ['GetTenant', () => api.directory.getTenant({ id: tenant })],
      ['GetGroup', () => api.directory.getGroup({ tenant, name: 'g' })],
      ['ListGroups', () => api.directory.listGroups({ tenant, pageSize: 0, pageToken: '' })],
      ['GetMailbox', () => api.mailbox.getMailbox({ tenant, mailbox: 'alice/P', actor: '' })],
      ['ListMailboxes', () => api.mailbox.listMailboxes({ tenant, owner: '', pageSize: 0, pageToken: '' })],
      ['ListSharedWith', () => api.mailbox.listSharedWith({ tenant, user: 'bob', pageSize: 0, pageToken: '' })],
      ['GetAcl', () => api.acl.getAcl({ tenant, mailbox: 'alice/P', actor: 'alice' })],
      ['SetAcl', () => api.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: '+l', expectedRevision: 0, actor: 'alice' })],
      ['MyRights', () => api.acl.myRights({ tenant, mailbox: 'alice/P', user: 'alice' })],
      ['CreateMailbox', () => api.mailbox.createMailbox({ tenant, owner: 'alice', name: `N${Math.random().toString(36).slice(2)}`, actor: 'alice' })],
    ];
    for (const token of [tokens.tenantAdmin, tokens.node]) {
      const api = connectApi(server.address, token);
      try {
        for (const [name, call] of probes(api, 'acme')) await expect(call(), `${name} in acme`).resolves.toBeDefined();
        for (const [name, call] of probes(api, 'globex')) await expect(call(), `${name} in globex`).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      } finally {
        api.close();
      }
    }
    const c = placement();
    try {
      await expect(unaryCall(c.locate.bind(c), { tenant: 'acme', user: 'alice', mailbox: '', assign: true }, tokens.node)).resolves.toMatchObject({ user: 'alice' });
      await expect(unaryCall(c.locate.bind(c), { tenant: 'globex', user: 'alice', mailbox: '', assign: true }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      // The unbound node n2 serves every tenant.
      await expect(unaryCall(c.locate.bind(c), { tenant: 'globex', user: 'alice', mailbox: '', assign: false }, other.nodeToken)).resolves.toMatchObject({ user: 'alice' });
    } finally {
      c.close();
    }
  });

  it('a node registers, renews, deregisters, releases and holds for its own node only, and never sees lease ids', async () => {
    const c = placement();
    try {
      await expect(unaryCall(c.registerNode.bind(c), { name: 'n2', imapAddress: '127.0.0.1:1', weight: 0, zone: '', ttlSeconds: 0, addresses: {} }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(unaryCall(c.deregisterNode.bind(c), { name: 'n2', leaseId: n2.leaseId, reason: '' }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      const ka = c.keepAlive(bearer(tokens.node));
      const refused = new Promise<grpc.ServiceError>((r) => ka.on('error', r));
      ka.on('data', () => undefined);
      ka.write({ node: 'n1', leaseId: n2.leaseId });
      expect(await refused).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      // A user of n2: n1's token cannot release or hold it for n2.
      let a = await unaryCall(c.locate.bind(c), { tenant: 'acme', user: 'carol', mailbox: '', assign: true }, server.adminToken);
      for (let i = 0; a.node !== 'n2' && i < 50; i++) a = await unaryCall(c.locate.bind(c), { tenant: 'acme', user: `carol${i}`, mailbox: '', assign: true }, server.adminToken);
      expect(a.node).toBe('n2');
      await expect(unaryCall(c.release.bind(c), { tenant: 'acme', user: a.user, epoch: a.epoch, ifUnheld: false, waitAcksMs: 0 }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(unaryCall(c.holdUser.bind(c), { tenant: 'acme', user: a.user, node: 'n2', hold: true }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(unaryCall(c.holdUser.bind(c), { tenant: 'globex', user: 'x', node: 'n1', hold: true }, tokens.node)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      expect((await unaryCall(c.locate.bind(c), { tenant: 'acme', user: a.user, mailbox: '', assign: false }, server.adminToken)).epoch).toBe(a.epoch);
      // n2's own token may.
      await expect(unaryCall(c.release.bind(c), { tenant: 'acme', user: a.user, epoch: a.epoch, ifUnheld: false, waitAcksMs: 0 }, other.nodeToken)).resolves.toMatchObject({ released: true });
      const nodes = await unaryCall(c.listNodes.bind(c), {}, tokens.node);
      expect(nodes.nodes.map((n) => n.name).sort()).toEqual(['n1', 'n2']);
      expect(nodes.nodes.every((n) => n.leaseId === '')).toBe(true);
      expect((await unaryCall(c.listNodes.bind(c), {}, server.adminToken)).nodes.every((n) => n.leaseId !== '')).toBe(true);
    } finally {
      c.close();
    }
  });

  it('a node bound to tenants watches theirs only, and sees no lease ids in events', async () => {
    const { EventServiceClient } = await import('../../src/gen/mailshare/v1/events.js');
    const events = new EventServiceClient(server.address, grpc.credentials.createInsecure());
    try {
      const snapshot = (token: string, tenant = ''): Promise<Array<{ tenant: string; kind: string; node?: { leaseId: string } }>> =>
        new Promise((resolve, reject) => {
          const out: Array<{ tenant: string; kind: string; node?: { leaseId: string } }> = [];
          const s = events.snapshot({ kinds: [], tenant, compact: false, ownAssignments: false }, bearer(token));
          s.on('data', (r: { events: typeof out }) => out.push(...r.events));
          s.on('end', () => resolve(out));
          s.on('error', reject);
        });
      const seen = await snapshot(tokens.node);
      expect(seen.some((e) => e.tenant === 'acme')).toBe(true);
      expect(seen.filter((e) => e.kind !== 'node').every((e) => e.tenant === 'acme')).toBe(true);
      expect(seen.filter((e) => e.kind === 'node').every((e) => e.node!.leaseId === '')).toBe(true);
      await expect(snapshot(tokens.node, 'globex')).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      const all = await snapshot(server.adminToken);
      expect(all.some((e) => e.tenant === 'globex')).toBe(true);
      expect(all.some((e) => e.kind === 'node' && e.node!.leaseId !== '')).toBe(true);
      await waitFor(async () => (await snapshot(other.tenantAdmin, 'globex')).length > 0, 2000, 'globex admin snapshot');
    } finally {
      events.close();
    }
  });
});
