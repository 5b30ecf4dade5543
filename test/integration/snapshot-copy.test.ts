import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPackedMailboxes } from '../../src/domain/mailbox-pack.js';
import { formatRightsForResponse, type Rights } from '../../src/domain/rights.js';
import { type Event, EventServiceClient, type SnapshotResponse, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { type Api, connectApi, nodeTokens } from '../harness/api.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
/** A second coordinator on the same state, without the copy: every snapshot from etcd. */
let plain: InProcessServer;
let admin: Api;
let events: EventServiceClient;
let plainEvents: EventServiceClient;
let node: TestNode;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  plain = await startInProcessServer({ endpoints: etcd.endpoints, prefix: server.prefix, flags: { eventsSnapshotCopy: 'off' } });
  admin = connectApi(server.address, server.adminToken);
  events = new EventServiceClient(server.address, grpc.credentials.createInsecure());
  plainEvents = new EventServiceClient(plain.address, grpc.credentials.createInsecure());
  for (const id of ['acme', 'globex']) await admin.directory.createTenant({ id, domains: [`${id}.test`] });
  await admin.directory.setGroupMembers({ tenant: 'acme', name: 'sales', members: ['bob', 'carol'], expectedRevision: 0 });
  // A live node holding users of both tenants: nodes and assignments are in snapshots too.
  const nodeToken = await nodeTokens(admin)('n1');
  node = await startTestNode(server.address, nodeToken, { name: 'n1', ttlSeconds: 10 });
  const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  for (const [tenant, user] of [['acme', 'alice'], ['acme', 'bob'], ['globex', 'dave']] as const) {
    await new Promise((resolve, reject) => placement.locate({ tenant, user, mailbox: '', assign: true }, bearer(nodeToken), (e, r) => (e ? reject(e) : resolve(r))));
  }
  placement.close();
  for (let i = 0; i < 30; i++) {
    const tenant = i % 3 === 0 ? 'globex' : 'acme';
    await admin.mailbox.createMailbox({ tenant, owner: `u${i % 7}`, name: i % 2 ? `Projets/Été ${i}` : `Box${i}`, actor: '' });
    await admin.acl.setAcl({ tenant, mailbox: `u${i % 7}/${i % 2 ? `Projets/Été ${i}` : `Box${i}`}`, identifier: i % 4 ? 'group:sales' : 'anyone', rights: i % 5 ? 'lrs' : 'lr', expectedRevision: 0, actor: '' });
  }
});
afterAll(async () => {
  node?.stop();
  events?.close();
  plainEvents?.close();
  admin?.close();
  await plain?.stop();
  await server?.stop();
  await etcd?.stop();
});

interface Snap {
  revision: number;
  /** Mailboxes as "tenant/owner/name id identifier=rights …", sorted. */
  mailboxes: string[];
  /** The other entities' events as JSON, sorted. */
  others: string[];
  /** Mailboxes that came as compact records. */
  packed: number;
}

function snapshot(client: EventServiceClient, token: string, compact: boolean, tenant = '', kinds: string[] = []): Promise<Snap> {
  const s = client.snapshot({ kinds, tenant, compact, ownAssignments: false }, bearer(token));
  const out: Snap = { revision: 0, mailboxes: [], others: [], packed: 0 };
  return new Promise((resolve, reject) => {
    s.on('data', (r: SnapshotResponse) => {
      for (const e of r.events) {
        if (e.kind === 'mailbox') out.mailboxes.push(`${e.tenant}/${e.mailbox!.mailbox} ${e.mailbox!.id} ${e.mailbox!.acl.map((a) => `${a.identifier}=${a.rights}`).join(' ')}`);
        else out.others.push(JSON.stringify({ ...e, revision: 0 }));
      }
      if (r.mailboxes.length > 0) {
        out.packed += readPackedMailboxes(r.mailboxes, (key, _tl, _ol, id, acl) => {
          const entries: string[] = [];
          for (let i = 0; i < acl.length; i += 2) entries.push(`${acl[i] as string}=${formatRightsForResponse(acl[i + 1] as Rights)}`);
          out.mailboxes.push(`${key} ${id} ${entries.join(' ')}`);
        });
      }
      if (r.revision) out.revision = r.revision;
    });
    s.on('end', () => {
      out.mailboxes.sort();
      out.others.sort();
      resolve(out);
    });
    s.on('error', reject);
  });
}

async function headRevision(): Promise<number> {
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  try {
    return Number((await c.get('anything').exec()).header.revision);
  } finally {
    c.close();
  }
}

describe("snapshots from the coordinator's copy (compact mailboxes)", () => {
  it('hold exactly what a snapshot read from etcd holds, every tenant or one, with mailboxes as compact records', async () => {
    await waitFor(async () => (await snapshot(events, server.adminToken, true)).packed > 0, 10_000, 'the copy loaded');
    for (const tenant of ['', 'acme', 'globex']) {
      const fromCopy = await snapshot(events, server.adminToken, true, tenant);
      const fromEtcd = await snapshot(plainEvents, server.adminToken, false, tenant);
      expect(fromEtcd.packed).toBe(0);
      expect(fromCopy.packed).toBe(fromCopy.mailboxes.length);
      expect(fromCopy.mailboxes).toEqual(fromEtcd.mailboxes);
      expect(fromCopy.others).toEqual(fromEtcd.others);
      const users = fromCopy.others.map((o) => JSON.parse(o) as Event).filter((e) => e.kind === 'assignment').map((e) => `${e.tenant}/${e.assignment!.user}@${e.assignment!.node}`);
      expect(users.sort()).toEqual(['acme/alice@n1', 'acme/bob@n1', 'globex/dave@n1'].filter((u) => tenant === '' || u.startsWith(`${tenant}/`)));
      expect(fromCopy.others.some((o) => (JSON.parse(o) as Event).node?.name === 'n1')).toBe(true);
      expect(fromCopy.mailboxes.length).toBe(tenant === '' ? 30 : tenant === 'acme' ? 20 : 10);
      if (tenant !== '') for (const m of fromCopy.mailboxes) expect(m.startsWith(`${tenant}/`)).toBe(true);
    }
    // A coordinator without the copy answers a compact request with events.
    const fallback = await snapshot(plainEvents, server.adminToken, true);
    expect(fallback.packed).toBe(0);
    expect(fallback.mailboxes).toHaveLength(30);
    // Asked for other kinds only, no mailboxes.
    const groups = await snapshot(events, server.adminToken, true, 'acme', ['group']);
    expect(groups.mailboxes).toEqual([]);
    expect(groups.others.map((o) => (JSON.parse(o) as Event).group?.name)).toEqual(['sales']);
  });

  it('a tenant-bound node sees its tenants only, and no lease ids', async () => {
    const { token } = await admin.auth.createToken({ role: 'node:n1:globex', description: 'globex only' });
    const s = await snapshot(events, token, true);
    expect(s.mailboxes).toHaveLength(10);
    for (const m of s.mailboxes) expect(m.startsWith('globex/')).toBe(true);
    expect([...new Set(s.others.map((o) => (JSON.parse(o) as Event).tenant).filter((t) => t !== ''))]).toEqual(['globex']);
    for (const o of s.others) {
      const e = JSON.parse(o) as Event;
      if (e.node) expect(e.node.leaseId).toBe('');
    }
  });

  it('read-your-writes: a change acknowledged before the call is in the snapshot, also when etcd moved on for keys outside mailshare', async () => {
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      for (let i = 0; i < 10; i++) {
        const r = await admin.acl.setAcl({ tenant: 'acme', mailbox: 'u1/Projets/Été 1', identifier: `reader${i}`, rights: 'lr', expectedRevision: 0, actor: '' });
        // Another application's key in the same etcd: the head revision is one mailshare never sees.
        if (i % 2) await c.put(`/elsewhere/${i}`).value('x').exec();
        const head = await headRevision();
        const s = await snapshot(events, server.adminToken, true, 'acme');
        expect(s.packed).toBeGreaterThan(0);
        expect(s.revision).toBeGreaterThanOrEqual(Math.max(r.revision, head));
        expect(s.mailboxes.find((m) => m.startsWith('acme/u1/Projets/Été 1 '))).toContain(`reader${i}=lr`);
      }
      // A deletion too.
      expect((await snapshot(events, server.adminToken, true)).mailboxes.some((m) => m.startsWith('globex/u0/Box0 '))).toBe(true);
      await admin.mailbox.deleteMailbox({ tenant: 'globex', mailbox: 'u0/Box0', expectedRevision: 0, actor: '' });
      const after = await snapshot(events, server.adminToken, true);
      expect(after.mailboxes.some((m) => m.startsWith('globex/u0/Box0 '))).toBe(false);
      expect(after.mailboxes).toEqual((await snapshot(plainEvents, server.adminToken, false)).mailboxes);
    } finally {
      c.close();
    }
  });

  it('watching from its revision + 1 continues exactly after it', async () => {
    const s = await snapshot(events, server.adminToken, true, 'acme');
    const w = events.watch({ fromRevision: s.revision + 1, kinds: ['mailbox'], tenant: 'acme' }, bearer(server.adminToken));
    const got: Event[] = [];
    w.on('data', (r: WatchResponse) => got.push(...r.events));
    w.on('error', () => undefined);
    await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'zed', name: 'After', actor: '' });
    await waitFor(() => got.length >= 1, 5000, 'the event after the snapshot');
    w.cancel();
    expect(got.map((e) => e.mailbox!.mailbox)).toEqual(['zed/After']);
    expect(s.mailboxes.some((m) => m.startsWith('acme/zed/After '))).toBe(false);
  });

  it('a record holds the mailbox as GetMailbox shows it', async () => {
    const m = await admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'u1/Projets/Été 1', actor: '' });
    const s = await snapshot(events, server.adminToken, true, 'acme');
    const line = s.mailboxes.find((x) => x.startsWith('acme/u1/Projets/Été 1 '))!;
    const acl = m.acl.map((a) => [a.identifier, a.rights] as const);
    expect(line).toBe(`acme/u1/Projets/Été 1 ${m.id} ${acl.map(([k, r]) => `${k}=${r}`).join(' ')}`);
  });
});
