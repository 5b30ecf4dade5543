import { spawn } from 'node:child_process';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Event, EventServiceClient, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type Api, connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer } from '../harness/grpc.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { REPO_ROOT, startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
let events: EventServiceClient;
let node: TestNode;
let nodeToken: string;
/** etcd's revision before the coordinator started: older than anything its shared watch holds. */
let beforeServer = 0;

beforeAll(async () => {
  etcd = await startEtcd();
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  beforeServer = Number((await c.put('before-server').value('x').exec()).header.revision);
  c.close();
  server = await startInProcessServer({ endpoints: etcd.endpoints, flags: { eventsBufferLimit: '65536' } });
  admin = connectApi(server.address, server.adminToken);
  events = new EventServiceClient(server.address, grpc.credentials.createInsecure());
  nodeToken = await nodeTokens(admin)('imap1');
  node = await startTestNode(server.address, nodeToken, { name: 'imap1', ttlSeconds: 5 });
});
afterAll(async () => {
  node?.stop();
  events?.close();
  admin?.close();
  await server?.stop();
  await etcd?.stop();
});

interface Tail {
  events: Event[];
  progress: number;
  error?: grpc.ServiceError;
  stream: grpc.ClientReadableStream<WatchResponse>;
}

/** Opens a Watch and resolves once the server sent headers (its etcd watch exists). */
async function tail(req: { fromRevision?: number; kinds?: string[]; tenant?: string }, token = server.adminToken): Promise<Tail> {
  const stream = events.watch({ fromRevision: req.fromRevision ?? 0, kinds: req.kinds ?? [], tenant: req.tenant ?? '' }, bearer(token));
  const t: Tail = { events: [], progress: 0, stream };
  stream.on('data', (r: WatchResponse) => {
    t.events.push(...r.events);
    if (r.progressRevision) t.progress = r.progressRevision;
  });
  stream.on('error', (e: grpc.ServiceError) => (t.error = e));
  await new Promise<void>((resolve, reject) => {
    stream.once('metadata', () => resolve());
    stream.once('error', reject);
  });
  return t;
}

const summary = (e: Event) => `${e.kind}${e.deleted ? '-' : '+'} ${e.tenant} ${e.mailbox?.mailbox ?? e.group?.name ?? e.assignment?.user ?? e.tenantRecord?.id ?? e.node?.name ?? ''}`;

describe('event stream', () => {
  it('delivers tenant, mailbox/ACL, group and assignment changes in revision order', async () => {
    const t = await tail({});
    await admin.directory.createTenant({ id: 'acme', domains: [] });
    await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: 'P', actor: '' });
    await admin.acl.setAcl({ tenant: 'acme', mailbox: 'alice/P', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
    await admin.directory.setGroupMembers({ tenant: 'acme', name: 'sales', members: ['bob'], expectedRevision: 0 });
    const loc = await connectApiPlacementLocate('acme', 'alice');
    await admin.mailbox.deleteMailbox({ tenant: 'acme', mailbox: 'alice/P', expectedRevision: 0, actor: '' });
    await waitFor(() => t.events.length >= 6, 5000, 'six events');
    t.stream.cancel();
    expect(t.events.map(summary)).toEqual([
      'tenant+ acme acme',
      'mailbox+ acme alice/P',
      'mailbox+ acme alice/P',
      'group+ acme sales',
      'assignment+ acme alice',
      'mailbox- acme alice/P',
    ]);
    const revs = t.events.map((e) => e.revision);
    expect([...revs].sort((a, b) => a - b)).toEqual(revs);
    expect(t.events[2]!.mailbox!.acl).toContainEqual({ identifier: 'bob', rights: 'lr' });
    expect(t.events[4]!.assignment).toEqual({ tenant: 'acme', user: 'alice', node: 'imap1', epoch: loc.epoch });
    expect(t.events[5]!.mailbox!.id).toMatch(/^[0-9a-f]{16}$/);
  });

  it('resumes from a revision without missing anything, matching etcd history', async () => {
    const first = await tail({ kinds: ['mailbox', 'group'], tenant: 'acme' });
    for (let i = 0; i < 10; i++) await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'carol', name: `M${i}`, actor: '' });
    await waitFor(() => first.events.length >= 10, 5000, 'ten events');
    first.stream.cancel();
    const resumeAt = first.events[3]!.revision + 1;
    const second = await tail({ fromRevision: resumeAt, kinds: ['mailbox', 'group'], tenant: 'acme' });
    await waitFor(() => second.events.length >= 6, 5000, 'replayed events');
    second.stream.cancel();
    expect(second.events.map((e) => e.revision)).toEqual(first.events.slice(4).map((e) => e.revision));
    // The same keys etcd itself reports as changed since that revision.
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      const all = await c.getAll().prefix(`${server.prefix}v1/t/acme/mbox/carol/`).exec();
      const changed = all.kvs.filter((kv) => Number(kv.mod_revision) >= resumeAt).map((kv) => kv.key.toString().split('/').pop());
      expect(second.events.map((e) => e.mailbox!.name).sort()).toEqual(changed.sort());
    } finally {
      c.close();
    }
  });

  it('filters by tenant and kind, and keeps tenant admins in their tenant', async () => {
    await admin.directory.createTenant({ id: 'globex', domains: [] });
    const ta = (await admin.auth.createToken({ role: 'tenant-admin:globex', description: '' })).token;
    const t = await tail({ tenant: 'globex', kinds: ['group'] }, ta);
    await admin.directory.setGroupMembers({ tenant: 'acme', name: 'x', members: [], expectedRevision: 0 });
    await admin.mailbox.createMailbox({ tenant: 'globex', owner: 'zed', name: 'Z', actor: '' });
    await admin.directory.setGroupMembers({ tenant: 'globex', name: 'y', members: ['zed'], expectedRevision: 0 });
    await waitFor(() => t.events.length >= 1, 5000, 'group event');
    t.stream.cancel();
    expect(t.events.map(summary)).toEqual(['group+ globex y']);
    const denied = events.watch({ fromRevision: 0, kinds: [], tenant: 'acme' }, bearer(ta));
    const err = await new Promise<grpc.ServiceError>((resolve) => denied.on('error', resolve));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    const bad = events.watch({ fromRevision: 0, kinds: ['acls'], tenant: '' }, bearer(server.adminToken));
    const badErr = await new Promise<grpc.ServiceError>((resolve) => bad.on('error', resolve));
    expect(badErr.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(badErr.details).toMatch(/^kinds\[0\]: "acls" is not one of/);
  });

  it('says OUT_OF_RANGE after compaction, and Snapshot gives state plus the revision to watch from', async () => {
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    let recent: number;
    try {
      recent = Number((await c.get('x').exec()).header.revision);
      await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'dave', name: 'D', actor: '' });
      const now = Number((await c.get('x').exec()).header.revision);
      await c.kv.compact({ revision: String(now) });
    } finally {
      c.close();
    }
    // A revision from before the coordinator started is nowhere but in etcd's history: compacted.
    const old = beforeServer;
    const s = events.watch({ fromRevision: old, kinds: [], tenant: '' }, bearer(server.adminToken));
    const err = await new Promise<grpc.ServiceError>((resolve) => s.on('error', resolve));
    expect(err.code).toBe(grpc.status.OUT_OF_RANGE);
    expect(err.details).toMatch(/compacted; take a new Snapshot/);
    // A compacted revision the coordinator's shared watch still holds is served from there.
    const held = await tail({ fromRevision: recent + 1, kinds: ['mailbox'], tenant: 'acme' });
    await waitFor(() => held.events.length >= 1, 5000, 'the changes since the compacted revision');
    held.stream.cancel();
    expect(held.events.map(summary)).toEqual(['mailbox+ acme dave/D']);

    const snap = events.snapshot({ kinds: ['mailbox', 'assignment'], tenant: 'acme', compact: false, ownAssignments: false }, bearer(nodeToken));
    const got: Event[] = [];
    let revision = 0;
    await new Promise<void>((resolve, reject) => {
      snap.on('data', (r: { events: Event[]; revision: number }) => {
        got.push(...r.events);
        if (r.revision) revision = r.revision;
      });
      snap.on('end', resolve);
      snap.on('error', reject);
    });
    expect(revision).toBeGreaterThan(old);
    expect(got.filter((e) => e.kind === 'mailbox').map((e) => e.mailbox!.mailbox)).toEqual([...Array.from({ length: 10 }, (_, i) => `carol/M${i}`), 'dave/D']);
    expect(got.filter((e) => e.kind === 'assignment').map((e) => e.assignment!.user)).toEqual(['alice']);
    // Watching from revision + 1 continues exactly after the snapshot.
    const t = await tail({ fromRevision: revision + 1, kinds: ['mailbox'], tenant: 'acme' });
    await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'dave', name: 'E', actor: '' });
    await waitFor(() => t.events.length >= 1, 5000, 'post-snapshot event');
    t.stream.cancel();
    expect(t.events.map(summary)).toEqual(['mailbox+ acme dave/E']);
  });

  it('cuts off a consumer that stopped reading, instead of buffering without bound', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/harness/watch-consumer.ts'), server.address, server.adminToken, 'slow', 'group'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    try {
      await admin.directory.createTenant({ id: 'slow', domains: [] });
      await waitFor(() => out.includes('ready'), 15_000, 'consumer ready');
      child.kill('SIGSTOP');
      // Group events carry the member list: 60 changes of ~9,000 members are ~10 MB.
      const members = Array.from({ length: 9000 }, (_, i) => `member-number-${i}`);
      for (let i = 0; i < 60; i++) {
        await admin.directory.setGroupMembers({ tenant: 'slow', name: 'big', members: members.slice(i % 2), expectedRevision: 0 });
      }
      child.kill('SIGCONT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      expect(out).toMatch(/^error 8 watcher too slow \(more than 65536 bytes queued\)/m);
      // It got some events before being cut off, but not all 60.
      const last = Number(/events (\d+)\n(?!.*events)/s.exec(out)?.[1] ?? 0);
      expect(last).toBeLessThan(60);
    } finally {
      child.kill('SIGKILL');
    }
    // A healthy watcher on the same server is unaffected.
    const t = await tail({ kinds: ['group'], tenant: 'slow' });
    await admin.directory.setGroupMembers({ tenant: 'slow', name: 'after', members: [], expectedRevision: 0 });
    await waitFor(() => t.events.length >= 1, 5000, 'healthy watcher');
    t.stream.cancel();
  }, 60_000);
});

async function connectApiPlacementLocate(tenant: string, user: string): Promise<{ epoch: number }> {
  const { PlacementServiceClient } = await import('../../src/gen/mailshare/v1/placement.js');
  const c = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) =>
      c.locate({ tenant, user, mailbox: '', assign: true }, bearer(nodeToken), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
    );
  } finally {
    c.close();
  }
}
