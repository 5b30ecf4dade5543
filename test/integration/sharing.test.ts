import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type Api, connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { codeOf } from '../harness/grpc.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
let n = 0;
const tenantName = () => `t${++n}-${Date.now().toString(36)}`;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  admin = connectApi(server.address, server.adminToken);
});
afterAll(async () => {
  admin?.close();
  await server?.stop();
  await etcd?.stop();
});

async function tokenFor(role: string): Promise<Api> {
  const t = await admin.auth.createToken({ role, description: '' });
  return connectApi(server.address, t.token);
}

async function snapshot(): Promise<Record<string, string>> {
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  try {
    const all = await c.getAll().prefix(server.prefix).strings();
    // Audit and token records are not what "nothing stored" is about.
    return Object.fromEntries(Object.entries(all).filter(([k]) => !k.includes('/audit') && !k.includes('/tokens/')));
  } finally {
    c.close();
  }
}

async function indexKeys(tenant: string): Promise<string[]> {
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  try {
    const prefix = `${server.prefix}v1/t/${tenant}/shared/`;
    return (await c.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)).sort();
  } finally {
    c.close();
  }
}

const shared = async (tenant: string, user: string, pageSize = 0) => {
  const out: Array<[string, string]> = [];
  let pageToken = '';
  do {
    const res = await admin.mailbox.listSharedWith({ tenant, user, pageSize, pageToken });
    out.push(...res.mailboxes.map((m) => [m.mailbox, m.rights] as [string, string]));
    pageToken = res.nextPageToken;
  } while (pageToken);
  return out;
};

describe('tenants', () => {
  it('creates, reads, updates and lists tenants with settings and revisions', async () => {
    const id = tenantName();
    const t = await admin.directory.createTenant({ id, settings: { maxSharesPerMailbox: 5 }, domains: [] });
    expect(t).toMatchObject({ id, settings: { allowAnyone: true, maxSharesPerMailbox: 5 } });
    expect(t.revision).toBeGreaterThan(0);
    expect((await codeOf(admin.directory.createTenant({ id, domains: [] }))).code).toBe(grpc.status.ALREADY_EXISTS);
    const u = await admin.directory.updateTenant({ id, settings: { allowAnyone: false }, expectedRevision: t.revision });
    expect(u.settings).toEqual({ allowAnyone: false, maxSharesPerMailbox: 5 });
    const stale = await codeOf(admin.directory.updateTenant({ id, settings: { allowAnyone: true }, expectedRevision: t.revision }));
    expect(stale).toMatchObject({ code: grpc.status.ABORTED, field: 'expected_revision' });
    expect((await admin.directory.getTenant({ id })).settings!.allowAnyone).toBe(false);
    const list = await admin.directory.listTenants({ pageSize: 1000, pageToken: '' });
    expect(list.tenants.map((x) => x.id)).toContain(id);
  });

  it('judges an ACL write by the tenant policy as it was just changed, allowing and refusing', async () => {
    // SetAcl starts from the coordinator's watch-fed tenant; right after UpdateTenant that copy can be behind.
    const id = tenantName();
    let t = await admin.directory.createTenant({ id, settings: { allowAnyone: false }, domains: [] });
    await admin.mailbox.createMailbox({ tenant: id, owner: 'alice', name: 'Pub', actor: '' });
    for (let round = 0; round < 15; round++) {
      t = await admin.directory.updateTenant({ id, settings: { allowAnyone: true }, expectedRevision: t.revision });
      expect((await admin.acl.setAcl({ tenant: id, mailbox: 'alice/Pub', identifier: 'anyone', rights: 'lr', expectedRevision: 0, actor: '' })).rights).toBe('lr');
      await admin.acl.deleteAcl({ tenant: id, mailbox: 'alice/Pub', identifier: 'anyone', expectedRevision: 0, actor: '' });
      t = await admin.directory.updateTenant({ id, settings: { allowAnyone: false }, expectedRevision: t.revision });
      const refused = await codeOf(admin.acl.setAcl({ tenant: id, mailbox: 'alice/Pub', identifier: 'anyone', rights: 'lr', expectedRevision: 0, actor: '' }));
      expect(refused).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'identifier' });
    }
    expect((await admin.acl.getAcl({ tenant: id, mailbox: 'alice/Pub', actor: '' })).entries.map((e) => e.identifier)).not.toContain('anyone');
  });

  it('refuses to delete a non-empty tenant unless forced, then deletes everything', async () => {
    const id = tenantName();
    await admin.directory.createTenant({ id, domains: [] });
    await admin.mailbox.createMailbox({ tenant: id, owner: 'alice', name: 'Projects', actor: '' });
    await admin.acl.setAcl({ tenant: id, mailbox: 'alice/Projects', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
    await admin.directory.setGroupMembers({ tenant: id, name: 'sales', members: ['bob'], expectedRevision: 0 });
    const refused = await codeOf(admin.directory.deleteTenant({ id, force: false, expectedRevision: 0 }));
    expect(refused).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, field: 'id' });
    expect((await admin.mailbox.getMailbox({ tenant: id, mailbox: 'alice/Projects', actor: '' })).name).toBe('Projects');
    await admin.directory.deleteTenant({ id, force: true, expectedRevision: 0 });
    expect((await codeOf(admin.directory.getTenant({ id }))).code).toBe(grpc.status.NOT_FOUND);
    const left = Object.keys(await snapshot()).filter((k) => k.includes(`/t/${id}/`) || k.endsWith(`/tenants/${id}`));
    expect(left).toEqual([]);
    // An empty tenant goes without force.
    const empty = tenantName();
    await admin.directory.createTenant({ id: empty, domains: [] });
    await admin.directory.deleteTenant({ id: empty, force: false, expectedRevision: 0 });
  });
});

describe('groups', () => {
  it('sets, adds, removes, lists and deletes members', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    const g = await admin.directory.setGroupMembers({ tenant, name: 'sales', members: ['carol', 'bob', 'bob'], expectedRevision: 0 });
    expect(g.members).toEqual(['bob', 'carol']);
    expect((await admin.directory.addGroupMember({ tenant, name: 'sales', member: 'dave', expectedRevision: 0, members: [] })).members).toEqual(['bob', 'carol', 'dave']);
    expect((await admin.directory.removeGroupMember({ tenant, name: 'sales', member: 'bob', expectedRevision: 0, members: [] })).members).toEqual(['carol', 'dave']);
    await admin.directory.setGroupMembers({ tenant, name: 'eng', members: [], expectedRevision: 0 });
    expect((await admin.directory.listGroups({ tenant, pageSize: 1, pageToken: '' })).groups.map((x) => x.name)).toEqual(['eng']);
    const stale = await codeOf(admin.directory.setGroupMembers({ tenant, name: 'sales', members: [], expectedRevision: g.revision }));
    expect(stale.code).toBe(grpc.status.ABORTED);
    await admin.directory.deleteGroup({ tenant, name: 'sales', expectedRevision: 0 });
    expect((await codeOf(admin.directory.getGroup({ tenant, name: 'sales' }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(admin.directory.removeGroupMember({ tenant, name: 'sales', member: 'x', expectedRevision: 0, members: [] }))).code).toBe(grpc.status.NOT_FOUND);
  });
});

describe('mailboxes, ACLs and the shared-with index', () => {
  it('follows SETACL/DELETEACL semantics and keeps the index in step', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    const m = await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects', actor: '' });
    expect(m.acl).toEqual([{ identifier: 'alice', rights: 'lrswipkxteacd' }]);
    expect(m.id).toMatch(/^[0-9a-f]{16}$/);
    expect(await indexKeys(tenant)).toEqual([]);

    const set = (identifier: string, rights: string) => admin.acl.setAcl({ tenant, mailbox: 'alice/Projects', identifier, rights, expectedRevision: 0, actor: '' });
    expect((await set('bob', 'lrs')).rights).toBe('lrs');
    expect((await set('bob', '+w')).rights).toBe('lrsw');
    expect((await set('bob', '-s')).rights).toBe('lrw');
    expect((await set('chris', 'lrswi')).rights).toBe('lrswi');
    expect((await set('chris', '+cda')).rights).toBe('lrswikxteacd');
    await set('group:sales', 'lr');
    await set('anyone', 'r'); // no "l": not listed, not indexed
    await set('-dave', 'l');
    expect(await indexKeys(tenant)).toEqual(['bob/alice/Projects', 'chris/alice/Projects', 'group:sales/alice/Projects']);

    const acl = await admin.acl.getAcl({ tenant, mailbox: 'alice/Projects', actor: '' });
    expect(acl.entries).toEqual([
      { identifier: 'alice', rights: 'lrswipkxteacd' },
      { identifier: 'anyone', rights: 'r' },
      { identifier: 'bob', rights: 'lrw' },
      { identifier: 'chris', rights: 'lrswikxteacd' },
      { identifier: 'group:sales', rights: 'lr' },
      { identifier: '-dave', rights: 'l' },
    ]);

    // Setting empty rights removes the entry, and the index entry with it.
    expect((await set('bob', '')).rights).toBe('');
    expect(await indexKeys(tenant)).toEqual(['chris/alice/Projects', 'group:sales/alice/Projects']);
    await admin.acl.deleteAcl({ tenant, mailbox: 'alice/Projects', identifier: 'chris', expectedRevision: 0, actor: '' });
    expect(await indexKeys(tenant)).toEqual(['group:sales/alice/Projects']);
    // DELETEACL of "dave" leaves "-dave".
    await admin.acl.deleteAcl({ tenant, mailbox: 'alice/Projects', identifier: 'dave', expectedRevision: 0, actor: '' });
    expect((await admin.acl.getAcl({ tenant, mailbox: 'alice/Projects', actor: '' })).entries.map((e) => e.identifier)).toContain('-dave');
  });

  it('answers ListSharedWith with effective rights through users, groups, anyone and negative rights', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    for (const [owner, name] of [['alice', 'Projects'], ['alice', 'Projects/2024'], ['carol', 'Team'], ['carol', 'Private'], ['erin', 'Public']]) {
      await admin.mailbox.createMailbox({ tenant, owner: owner!, name: name!, actor: '' });
    }
    const set = (mailbox: string, identifier: string, rights: string) => admin.acl.setAcl({ tenant, mailbox, identifier, rights, expectedRevision: 0, actor: '' });
    await admin.directory.setGroupMembers({ tenant, name: 'sales', members: ['bob', 'dave'], expectedRevision: 0 });
    await set('alice/Projects', 'bob', 'lrs');
    await set('alice/Projects/2024', 'group:sales', 'lr');
    await set('carol/Team', 'group:sales', 'lrswi');
    await set('carol/Team', '-dave', 'wi');
    await set('carol/Private', 'bob', 'r'); // no l: not visible
    await set('erin/Public', 'anyone', 'lr');
    await set('erin/Public', '-bob', 'l');

    expect(await shared(tenant, 'bob')).toEqual([
      ['alice/Projects', 'lrs'],
      ['alice/Projects/2024', 'lr'],
      ['carol/Team', 'lrswi'],
    ]);
    expect(await shared(tenant, 'dave')).toEqual([
      ['alice/Projects/2024', 'lr'],
      ['carol/Team', 'lrs'],
      ['erin/Public', 'lr'],
    ]);
    // Owners do not see their own mailboxes as shared with them.
    expect(await shared(tenant, 'erin')).toEqual([]);
    expect(await shared(tenant, 'alice')).toEqual([['erin/Public', 'lr']]);
    // Paging returns the same, one at a time.
    expect(await shared(tenant, 'dave', 1)).toEqual(await shared(tenant, 'dave'));
    // Group changes apply without touching the index.
    await admin.directory.removeGroupMember({ tenant, name: 'sales', member: 'dave', expectedRevision: 0, members: [] });
    expect(await shared(tenant, 'dave')).toEqual([['erin/Public', 'lr']]);
    // Read your writes: a change of rights on a share, or a negative entry, is in the next answer
    // (each index entry holds the mailbox as that change wrote it).
    await set('alice/Projects', 'bob', '+w');
    expect((await shared(tenant, 'bob'))[0]).toEqual(['alice/Projects', 'lrsw']);
    await set('alice/Projects/2024', '-bob', 'l');
    expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/Projects', 'carol/Team']);
    await set('erin/Public', '-bob', '');
    expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/Projects', 'carol/Team', 'erin/Public']);

    const mr = await admin.acl.myRights({ tenant, mailbox: 'carol/Team', user: 'bob' });
    expect(mr.rights).toBe('lrswi');
    expect((await admin.acl.myRights({ tenant, mailbox: 'carol/Team', user: 'carol' })).rights).toBe('lrswipkxteacd');
  });

  it('keeps no answer past a change: every change through another coordinator, or in etcd by hand, is in the next ListSharedWith', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    const other = await startInProcessServer({ endpoints: etcd.endpoints, prefix: server.prefix });
    const api2 = connectApi(other.address, server.adminToken);
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      for (const [owner, name] of [['alice', 'A'], ['alice', 'B'], ['carol', 'C']]) await admin.mailbox.createMailbox({ tenant, owner: owner!, name: name!, actor: '' });
      const set = (mailbox: string, identifier: string, rights: string) => api2.acl.setAcl({ tenant, mailbox, identifier, rights, expectedRevision: 0, actor: '' });
      await set('alice/A', 'bob', 'lr');
      await admin.directory.setGroupMembers({ tenant, name: 'sales', members: ['bob'], expectedRevision: 0 });
      expect(await shared(tenant, 'bob')).toEqual([['alice/A', 'lr']]);
      // Asked again with nothing changed: the same answer, at a revision no older.
      const r1 = await admin.mailbox.listSharedWith({ tenant, user: 'bob', pageSize: 0, pageToken: '' });
      const r2 = await admin.mailbox.listSharedWith({ tenant, user: 'bob', pageSize: 0, pageToken: '' });
      expect(r2.mailboxes).toEqual(r1.mailboxes);
      expect(r2.revision).toBeGreaterThanOrEqual(r1.revision);

      await set('alice/A', 'bob', '+w');
      expect(await shared(tenant, 'bob')).toEqual([['alice/A', 'lrw']]);
      await set('alice/B', 'group:sales', 'lr');
      expect(await shared(tenant, 'bob')).toEqual([['alice/A', 'lrw'], ['alice/B', 'lr']]);
      await api2.directory.removeGroupMember({ tenant, name: 'sales', member: 'bob', expectedRevision: 0, members: [] });
      expect(await shared(tenant, 'bob')).toEqual([['alice/A', 'lrw']]);
      await api2.directory.addGroupMember({ tenant, name: 'sales', member: 'bob', expectedRevision: 0, members: [] });
      expect(await shared(tenant, 'bob')).toEqual([['alice/A', 'lrw'], ['alice/B', 'lr']]);
      await set('carol/C', 'anyone', 'lr');
      expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/A', 'alice/B', 'carol/C']);
      // A change that writes no entry of bob's own: a negative entry for him on a mailbox shared with anyone.
      await set('carol/C', '-bob', 'l');
      expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/A', 'alice/B']);
      await set('carol/C', '-bob', '');
      await api2.mailbox.renameMailbox({ tenant, mailbox: 'carol/C', newName: 'D', expectedRevision: 0, actor: '' });
      expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/A', 'alice/B', 'carol/D']);
      // Paging through a kept answer gives the same.
      expect(await shared(tenant, 'bob', 1)).toEqual(await shared(tenant, 'bob'));
      await api2.mailbox.deleteMailbox({ tenant, mailbox: 'alice/A', expectedRevision: 0, actor: '' });
      expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/B', 'carol/D']);
      // By hand in etcd: an entry removed.
      await c.delete().key(`${server.prefix}v1/t/${tenant}/shared/anyone/carol/D`);
      expect((await shared(tenant, 'bob')).map(([m]) => m)).toEqual(['alice/B']);
    } finally {
      c.close();
      api2.close();
      await other.stop();
    }
  });

  it('renames with children keeping ids and ACLs, and deletes ACL and index with the mailbox', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    const p = await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects', actor: '' });
    const c = await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects/2024', actor: '' });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects2', actor: '' });
    await admin.acl.setAcl({ tenant, mailbox: 'alice/Projects/2024', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
    await admin.acl.setAcl({ tenant, mailbox: 'alice/Projects', identifier: 'bob', rights: 'l', expectedRevision: 0, actor: '' });
    const res = await admin.mailbox.renameMailbox({ tenant, mailbox: 'alice/Projects', newName: 'Work', expectedRevision: 0, actor: '' });
    expect(res.mailboxes.map((m) => [m.mailbox, m.id])).toEqual([
      ['alice/Work', p.id],
      ['alice/Work/2024', c.id],
    ]);
    expect(await indexKeys(tenant)).toEqual(['bob/alice/Work', 'bob/alice/Work/2024']);
    expect((await admin.acl.getAcl({ tenant, mailbox: 'alice/Work/2024', actor: '' })).entries).toContainEqual({ identifier: 'bob', rights: 'lr' });
    expect((await codeOf(admin.mailbox.getMailbox({ tenant, mailbox: 'alice/Projects', actor: '' }))).code).toBe(grpc.status.NOT_FOUND);
    // "Projects2" shares the prefix but is not below "Projects".
    expect((await admin.mailbox.getMailbox({ tenant, mailbox: 'alice/Projects2', actor: '' })).name).toBe('Projects2');
    const clash = await codeOf(admin.mailbox.renameMailbox({ tenant, mailbox: 'alice/Work', newName: 'Projects2', expectedRevision: 0, actor: '' }));
    expect(clash).toMatchObject({ code: grpc.status.ALREADY_EXISTS, field: 'new_name' });
    expect((await codeOf(admin.mailbox.renameMailbox({ tenant, mailbox: 'alice/Work', newName: 'Work/sub', expectedRevision: 0, actor: '' }))).field).toBe('new_name');

    await admin.mailbox.deleteMailbox({ tenant, mailbox: 'alice/Work/2024', expectedRevision: 0, actor: '' });
    expect(await indexKeys(tenant)).toEqual(['bob/alice/Work']);
    const list = await admin.mailbox.listMailboxes({ tenant, owner: 'alice', pageSize: 1, pageToken: '' });
    expect(list.mailboxes).toHaveLength(1);
    const rest = await admin.mailbox.listMailboxes({ tenant, owner: 'alice', pageSize: 10, pageToken: list.nextPageToken });
    expect([...list.mailboxes, ...rest.mailboxes].map((m) => m.name)).toEqual(['Projects2', 'Work']);
    expect(rest.nextPageToken).toBe('');
  });

  it('lets 50 concurrent writers change one mailbox without losing an update', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Busy', actor: '' });
    const letters = 'lrswipkxtea';
    const users = ['u0', 'u1', 'u2', 'u3', 'u4'];
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        admin.acl.setAcl({ tenant, mailbox: 'alice/Busy', identifier: users[i % 5]!, rights: `+${letters[i % 11]}`, expectedRevision: 0, actor: '' }),
      ),
    );
    const acl = await admin.acl.getAcl({ tenant, mailbox: 'alice/Busy', actor: '' });
    for (let u = 0; u < 5; u++) {
      const expected = new Set<string>();
      for (let i = u; i < 50; i += 5) expected.add(letters[i % 11]!);
      const entry = acl.entries.find((e) => e.identifier === users[u]);
      expect(new Set(entry!.rights.replace(/[cd]/g, ''))).toEqual(expected);
    }
    expect(await indexKeys(tenant)).toEqual(users.map((u) => `${u}/alice/Busy`));
  });

  it('rejects a stale expected_revision with ABORTED and changes nothing', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    const m = await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'X', actor: '' });
    const r1 = await admin.acl.setAcl({ tenant, mailbox: 'alice/X', identifier: 'bob', rights: 'lr', expectedRevision: m.revision, actor: '' });
    const before = await snapshot();
    const stale = await codeOf(admin.acl.setAcl({ tenant, mailbox: 'alice/X', identifier: 'bob', rights: 'lrsw', expectedRevision: m.revision, actor: '' }));
    expect(stale).toMatchObject({ code: grpc.status.ABORTED, field: 'expected_revision' });
    expect(await codeOf(admin.mailbox.deleteMailbox({ tenant, mailbox: 'alice/X', expectedRevision: m.revision, actor: '' }))).toMatchObject({ code: grpc.status.ABORTED });
    expect(await codeOf(admin.mailbox.renameMailbox({ tenant, mailbox: 'alice/X', newName: 'Y', expectedRevision: m.revision, actor: '' }))).toMatchObject({ code: grpc.status.ABORTED });
    expect(await snapshot()).toEqual(before);
    await admin.acl.setAcl({ tenant, mailbox: 'alice/X', identifier: 'bob', rights: 'lrsw', expectedRevision: r1.revision, actor: '' });
  });

  it('enforces tenant settings: anyone and the share limit', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, settings: { allowAnyone: false, maxSharesPerMailbox: 2 }, domains: [] });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'X', actor: '' });
    const set = (identifier: string, rights: string) => admin.acl.setAcl({ tenant, mailbox: 'alice/X', identifier, rights, expectedRevision: 0, actor: '' });
    expect(await codeOf(set('anyone', 'lr'))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'identifier' });
    await set('-anyone', 'w');
    const lr = await admin.acl.listRights({ tenant, mailbox: 'alice/X', identifier: 'anyone', actor: '' });
    expect(lr).toEqual({ identifier: 'anyone', required: '', optional: [] });
    await set('bob', 'l');
    expect(await codeOf(set('carol', 'l'))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, field: 'identifier' });
    await set('bob', '+r'); // changing an existing entry is fine at the limit
  });
});

describe('LISTRIGHTS and actor rules (RFC 4314 §3.7, §4, §6)', () => {
  it('lists rights like the RFC, and hides mailboxes from actors without l or a', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects', actor: '' });
    const set = (identifier: string, rights: string) => admin.acl.setAcl({ tenant, mailbox: 'alice/Projects', identifier, rights, expectedRevision: 0, actor: '' });
    await set('bob', 'lr');
    await set('frank', 'la');
    await set('gina', 'r');

    const lr = await admin.acl.listRights({ tenant, mailbox: 'alice/Projects', identifier: 'anyone', actor: '' });
    expect(lr).toEqual({ identifier: 'anyone', required: '', optional: ['l', 'r', 's', 'w', 'i', 'p', 'k', 'x', 't', 'e', 'a', 'c', 'd'] });
    expect((await admin.acl.listRights({ tenant, mailbox: 'alice/Projects', identifier: 'alice', actor: '' })).required).toBe('la');

    const node = await tokenFor('node:imap1');
    try {
      const as = (actor: string) => ({ tenant, mailbox: 'alice/Projects', actor });
      // frank holds "a": may read and change the ACL.
      expect((await node.acl.getAcl(as('frank'))).entries.map((e) => e.identifier)).toEqual(['alice', 'bob', 'frank', 'gina']);
      await node.acl.setAcl({ ...as('frank'), identifier: 'bob', rights: '+s', expectedRevision: 0 });
      // bob sees the mailbox but lacks "a".
      expect(await codeOf(node.acl.getAcl(as('bob')))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'actor' });
      expect((await codeOf(node.acl.listRights({ ...as('bob'), identifier: 'bob' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      // gina ("r" only) and zoe (nothing) learn nothing: same answer as for a mailbox that does not exist.
      const ghost = await codeOf(node.acl.getAcl({ tenant, mailbox: 'alice/Nope', actor: 'frank' }));
      for (const who of ['zoe']) {
        const hidden = await codeOf(node.acl.getAcl(as(who)));
        expect(hidden.code).toBe(grpc.status.NOT_FOUND);
        expect(hidden.details).toBe(ghost.details.replace('Nope', 'Projects'));
      }
      expect((await codeOf(node.acl.setAcl({ ...as('zoe'), identifier: 'zoe', rights: 'lrswipkxtea', expectedRevision: 0 }))).code).toBe(grpc.status.NOT_FOUND);
      expect((await codeOf(node.acl.getAcl(as('gina')))).code).toBe(grpc.status.PERMISSION_DENIED);
      // MYRIGHTS from a node: nothing → NOT_FOUND; something → the rights.
      expect((await codeOf(node.acl.myRights({ tenant, mailbox: 'alice/Projects', user: 'zoe' }))).code).toBe(grpc.status.NOT_FOUND);
      expect((await node.acl.myRights({ tenant, mailbox: 'alice/Projects', user: 'bob' })).rights).toBe('lrs');
      // An admin asking gets the (empty) answer.
      expect((await admin.acl.myRights({ tenant, mailbox: 'alice/Projects', user: 'zoe' })).rights).toBe('');
      // A node must name an actor for ACL calls.
      expect(await codeOf(node.acl.getAcl(as('')))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, field: 'actor' });
      // Mailbox writes by an actor: the owner may; others need x.
      expect((await codeOf(node.mailbox.deleteMailbox({ tenant, mailbox: 'alice/Projects', expectedRevision: 0, actor: 'bob' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((await codeOf(node.mailbox.createMailbox({ tenant, owner: 'alice', name: 'Projects/Sub', actor: 'bob' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      await node.mailbox.createMailbox({ tenant, owner: 'bob', name: 'Mine', actor: 'bob' });
    } finally {
      node.close();
    }
  });
});

describe('authorization matrix', () => {
  it('keeps tenant admins inside their tenant and nodes to their calls', async () => {
    const acme = tenantName();
    const globex = tenantName();
    for (const id of [acme, globex]) {
      await admin.directory.createTenant({ id, domains: [] });
      await admin.mailbox.createMailbox({ tenant: id, owner: 'alice', name: 'P', actor: '' });
      await admin.directory.setGroupMembers({ tenant: id, name: 'g', members: ['bob'], expectedRevision: 0 });
    }
    const ta = await tokenFor(`tenant-admin:${acme}`);
    const node = await tokenFor('node:imap1');
    const acmeNode = await tokenFor(`node:imap2:${acme}`);
    const calls = (api: Api, tenant: string): Array<[string, () => Promise<unknown>]> => [
      ['GetTenant', () => api.directory.getTenant({ id: tenant })],
      ['SetGroupMembers', () => api.directory.setGroupMembers({ tenant, name: 'g', members: ['bob'], expectedRevision: 0 })],
      ['AddGroupMember', () => api.directory.addGroupMember({ tenant, name: 'g', member: 'bob', expectedRevision: 0, members: [] })],
      ['GetGroup', () => api.directory.getGroup({ tenant, name: 'g' })],
      ['ListGroups', () => api.directory.listGroups({ tenant, pageSize: 0, pageToken: '' })],
      ['CreateMailbox', () => api.mailbox.createMailbox({ tenant, owner: 'alice', name: `N${Math.random().toString(36).slice(2)}`, actor: '' })],
      ['GetMailbox', () => api.mailbox.getMailbox({ tenant, mailbox: 'alice/P', actor: '' })],
      ['ListMailboxes', () => api.mailbox.listMailboxes({ tenant, owner: '', pageSize: 0, pageToken: '' })],
      ['ListSharedWith', () => api.mailbox.listSharedWith({ tenant, user: 'bob', pageSize: 0, pageToken: '' })],
      ['GetAcl', () => api.acl.getAcl({ tenant, mailbox: 'alice/P', actor: '' })],
      ['SetAcl', () => api.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: '+l', expectedRevision: 0, actor: '' })],
      ['DeleteAcl', () => api.acl.deleteAcl({ tenant, mailbox: 'alice/P', identifier: 'carol', expectedRevision: 0, actor: '' })],
      ['ListRights', () => api.acl.listRights({ tenant, mailbox: 'alice/P', identifier: 'bob', actor: '' })],
      ['MyRights', () => api.acl.myRights({ tenant, mailbox: 'alice/P', user: 'alice' })],
      ['ListAudit', () => api.audit.listAudit({ tenant, pageSize: 0, pageToken: '' })],
    ];
    try {
      for (const [name, call] of calls(ta, acme)) {
        await expect(call(), `tenant-admin on own tenant: ${name}`).resolves.toBeDefined();
      }
      for (const [name, call] of calls(ta, globex)) {
        expect((await codeOf(call())).code, `tenant-admin on other tenant: ${name}`).toBe(grpc.status.PERMISSION_DENIED);
      }
      const nodeAllowed = new Set(['GetTenant', 'GetGroup', 'ListGroups', 'GetMailbox', 'ListMailboxes', 'ListSharedWith', 'MyRights']);
      for (const [name, call] of calls(node, globex)) {
        if (nodeAllowed.has(name)) await expect(call(), `node: ${name}`).resolves.toBeDefined();
        else expect((await codeOf(call())).code, `node: ${name}`).toBe(grpc.status.PERMISSION_DENIED);
      }
      // A node bound to its tenants acts in them only.
      for (const [name, call] of calls(acmeNode, acme)) {
        if (nodeAllowed.has(name)) await expect(call(), `acme node on acme: ${name}`).resolves.toBeDefined();
      }
      for (const [name, call] of calls(acmeNode, globex)) {
        expect((await codeOf(call())).code, `acme node on globex: ${name}`).toBe(grpc.status.PERMISSION_DENIED);
      }
      for (const call of [
        () => ta.directory.createTenant({ id: tenantName(), domains: [] }),
        () => ta.directory.listTenants({ pageSize: 0, pageToken: '' }),
        () => ta.directory.deleteTenant({ id: acme, force: true, expectedRevision: 0 }),
        () => ta.directory.updateTenant({ id: acme, settings: { allowAnyone: false }, expectedRevision: 0 }),
      ]) {
        expect((await codeOf(call())).code).toBe(grpc.status.PERMISSION_DENIED);
      }
    } finally {
      ta.close();
      node.close();
      acmeNode.close();
    }
  });
});

describe('bad input', () => {
  it('answers INVALID_ARGUMENT naming the field on every field, and stores nothing', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'P', actor: '' });
    const before = await snapshot();
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['id', () => admin.directory.createTenant({ id: 'Bad Tenant', domains: [] })],
      ['settings.max_shares_per_mailbox', () => admin.directory.createTenant({ id: tenantName(), settings: { maxSharesPerMailbox: 51 }, domains: [] })],
      ['settings.max_shares_per_mailbox', () => admin.directory.updateTenant({ id: tenant, settings: { maxSharesPerMailbox: 0 }, expectedRevision: 0 })],
      ['expected_revision', () => admin.directory.updateTenant({ id: tenant, settings: {}, expectedRevision: -1 })],
      ['tenant', () => admin.directory.setGroupMembers({ tenant: '', name: 'g', members: [], expectedRevision: 0 })],
      ['name', () => admin.directory.setGroupMembers({ tenant, name: 'G!', members: [], expectedRevision: 0 })],
      ['members[1]', () => admin.directory.setGroupMembers({ tenant, name: 'g', members: ['ok', 'Not OK'], expectedRevision: 0 })],
      ['member', () => admin.directory.addGroupMember({ tenant, name: 'g', member: 'anyone', expectedRevision: 0, members: [] })],
      ['owner', () => admin.mailbox.createMailbox({ tenant, owner: 'ALICE', name: 'X', actor: '' })],
      ['name', () => admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'a//b', actor: '' })],
      ['name', () => admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'x\u0000', actor: '' })],
      ['name', () => admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'y'.repeat(2000), actor: '' })],
      ['actor', () => admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'X', actor: 'Bad Actor' })],
      ['mailbox', () => admin.mailbox.getMailbox({ tenant, mailbox: 'no-slash', actor: '' })],
      ['new_name', () => admin.mailbox.renameMailbox({ tenant, mailbox: 'alice/P', newName: '', expectedRevision: 0, actor: '' })],
      ['page_size', () => admin.mailbox.listMailboxes({ tenant, owner: '', pageSize: 100000, pageToken: '' })],
      ['page_token', () => admin.mailbox.listSharedWith({ tenant, user: 'bob', pageSize: 0, pageToken: '%%%' })],
      ['user', () => admin.mailbox.listSharedWith({ tenant, user: '', pageSize: 0, pageToken: '' })],
      ['identifier', () => admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'group:', rights: 'l', expectedRevision: 0, actor: '' })],
      ['identifier', () => admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: '--bob', rights: 'l', expectedRevision: 0, actor: '' })],
      ['rights', () => admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: 'lrQ', expectedRevision: 0, actor: '' })],
      ['rights', () => admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: '+lrq', expectedRevision: 0, actor: '' })],
      ['identifier', () => admin.acl.deleteAcl({ tenant, mailbox: 'alice/P', identifier: '', expectedRevision: 0, actor: '' })],
      ['identifier', () => admin.acl.listRights({ tenant, mailbox: 'alice/P', identifier: 'a b', actor: '' })],
      ['user', () => admin.acl.myRights({ tenant, mailbox: 'alice/P', user: '-bob' })],
      ['tenant', () => admin.audit.listAudit({ tenant: 'x/y', pageSize: 0, pageToken: '' })],
    ];
    for (const [field, call] of cases) {
      const e = await codeOf(call());
      expect(e.code, `${field}: ${e.details}`).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.field).toBe(field);
      expect(e.details.startsWith(`${field}:`)).toBe(true);
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe('audit', () => {
  it('records who changed what, with before and after', async () => {
    const tenant = tenantName();
    await admin.directory.createTenant({ id: tenant, domains: [] });
    await admin.mailbox.createMailbox({ tenant, owner: 'alice', name: 'P', actor: '' });
    await admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
    await admin.acl.setAcl({ tenant, mailbox: 'alice/P', identifier: 'bob', rights: '+w', expectedRevision: 0, actor: '' });
    await admin.directory.setGroupMembers({ tenant, name: 'g', members: ['bob'], expectedRevision: 0 });
    const page1 = await admin.audit.listAudit({ tenant, pageSize: 2, pageToken: '' });
    const page2 = await admin.audit.listAudit({ tenant, pageSize: 100, pageToken: page1.nextPageToken });
    const recs = [...page1.records, ...page2.records];
    expect(recs.map((r) => r.action)).toEqual(['CreateTenant', 'CreateMailbox', 'SetAcl', 'SetAcl', 'SetGroupMembers']);
    expect(recs[3]).toMatchObject({ target: 'alice/P', identifier: 'bob', before: 'lr', after: 'lrw', who: expect.stringMatching(/^admin \(token [0-9a-f]{16}\)$/) });
    expect(recs[4]).toMatchObject({ target: 'group:g', before: '', after: 'bob' });
    for (const r of recs) expect(r.time!.getTime()).toBeLessThanOrEqual(Date.now());
  });
});
