import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditStore } from '../../src/store/audit-store.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { IndexChecker } from '../../src/store/index-check.js';
import { createKeys } from '../../src/store/keys.js';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * `mailshare index check [--repair]`: the "shared with me" index against
 * the ACLs at one revision. Consistent on a live system (every ACL write
 * updates the index in its own transaction); corrupted by hand, the check
 * names each difference and the repair puts them right in guarded
 * transactions, so that ListSharedWith answers right again.
 */
let etcd: EtcdCluster;
let server: InProcessServer;
const dir = tempDir('mailshare-index-check-');
let env: Record<string, string>;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path };
});
afterAll(async () => {
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

const ms = (...args: string[]) => runCli(args, { env, cwd: dir.path });

describe('mailshare index check', () => {
  it('finds a live index consistent; finds and repairs missing, stale and wrong entries by hand; the shares answer right again', async () => {
    const api = connectApi(server.address, server.adminToken);
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      await api.directory.createTenant({ id: 'idx', domains: [] });
      await api.directory.createTenant({ id: 'other', domains: [] });
      for (const name of ['A', 'B', 'C']) await api.mailbox.createMailbox({ tenant: 'idx', owner: 'alice', name, actor: '' });
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/A', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/A', identifier: 'group:sales', rights: 'lrs', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/B', identifier: 'anyone', rights: 'l', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/C', identifier: 'carol', rights: 'lrw', expectedRevision: 0, actor: '' });
      // Rights without l make no index entry; negative ones neither.
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/C', identifier: 'dave', rights: 'r', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'idx', mailbox: 'alice/C', identifier: '-erin', rights: 'l', expectedRevision: 0, actor: '' });

      const clean = await ms('index', 'check', '-o', 'json');
      expect([clean.code, clean.stderr]).toEqual([0, '']);
      const idx = JSON.parse(clean.stdout).tenants.find((t: { tenant: string }) => t.tenant === 'idx');
      expect(idx).toMatchObject({ mailboxes: 3, entries: 4, expected: 4, missing: 0, stale: 0, wrongId: 0, differences: [] });
      expect((await ms('index', 'check', 'idx')).stdout).toMatch(/^idx: 3 mailboxes, 4 index entries \(4 expected\) at revision \d+: consistent$/m);

      // Each entry holds the mailbox's record as its own key does (ListSharedWith reads only the index).
      const shared = `${server.prefix}v1/t/idx/shared/`;
      const ids = Object.fromEntries((await api.mailbox.listMailboxes({ tenant: 'idx', owner: 'alice', pageSize: 0, pageToken: '' })).mailboxes.map((m) => [m.mailbox, m.id]));
      const record = (name: string) => c.get(`${server.prefix}v1/t/idx/mbox/alice/${name}`).string();
      expect(await c.get(`${shared}carol/alice/C`).string()).toBe(await record('C'));
      expect(JSON.parse((await c.get(`${shared}group:sales/alice/A`).string())!)).toMatchObject({ id: ids['alice/A'], acl: { bob: 'lr', 'group:sales': 'lrs' } });

      // Corrupt the index by hand: one entry gone, one naming another id, two nobody backs,
      // and one as entries were written before they held the record (the id alone).
      await c.delete().key(`${shared}bob/alice/A`);
      await c.put(`${shared}anyone/alice/B`).value(ids['alice/B']!);
      await c.put(`${shared}carol/alice/C`).value('0000000000000000');
      await c.put(`${shared}dave/alice/C`).value('x');
      await c.put(`${shared}bob/alice/Gone`).value('y');
      expect((await api.mailbox.listSharedWith({ tenant: 'idx', user: 'bob', pageSize: 0, pageToken: '' })).mailboxes.map((m) => m.mailbox)).toEqual(['alice/B']);

      const found = await ms('index', 'check', 'idx');
      expect(found.code).toBe(1);
      expect(found.stderr).toBe('mailshare: index: the index disagrees with the ACLs; run with --repair\n');
      expect(found.stdout).toMatch(/^idx: 3 mailboxes, 5 index entries \(4 expected\) at revision \d+: 1 missing, 2 stale, 1 with a wrong id, 1 outdated$/m);
      expect(found.stdout).toMatch(/^\s+outdated\s+anyone\s+alice\/B$/m);
      expect(found.stdout).toMatch(/^\s+missing\s+bob\s+alice\/A$/m);
      expect(found.stdout).toMatch(/^\s+wrong-id\s+carol\s+alice\/C$/m);
      expect(found.stdout).toMatch(/^\s+stale\s+dave\s+alice\/C$/m);
      expect(found.stdout).toMatch(/^\s+stale\s+bob\s+alice\/Gone$/m);
      // Checking wrote nothing.
      expect(await c.get(`${shared}dave/alice/C`).string()).toBe('x');

      const repaired = await ms('index', 'check', 'idx', '--repair', '-o', 'json');
      expect([repaired.code, repaired.stderr]).toEqual([0, '']);
      expect(JSON.parse(repaired.stdout).tenants[0]).toMatchObject({ missing: 1, stale: 2, wrongId: 1, outdated: 1, repaired: 4, skipped: 0 });
      const after = await ms('index', 'check', 'idx');
      expect([after.code, after.stderr]).toEqual([0, '']);
      expect(after.stdout).toMatch(/: consistent$/m);
      expect(await c.get(`${shared}carol/alice/C`).string()).toBe(await record('C'));
      expect(await c.get(`${shared}bob/alice/A`).string()).toBe(await record('A'));
      expect(await c.get(`${shared}anyone/alice/B`).string()).toBe(await record('B'));
      expect(await c.get(`${shared}bob/alice/Gone`).string()).toBeNull();
      expect((await api.mailbox.listSharedWith({ tenant: 'idx', user: 'bob', pageSize: 0, pageToken: '' })).mailboxes.map((m) => m.mailbox)).toEqual(['alice/A', 'alice/B']);
      // Each repair is in the audit trail.
      const audit = await api.audit.listAudit({ tenant: 'idx', pageSize: 1000, pageToken: '' });
      expect(audit.records.filter((r) => r.action === 'RepairIndex').map((r) => r.target).sort()).toEqual(['alice/A', 'alice/B', 'alice/C', 'alice/Gone']);

      // Bad input and roles: one line, nothing changed.
      const noTenant = await ms('index', 'check', 'Nope!');
      expect(noTenant.code).toBe(1);
      expect(noTenant.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: tenant[^\n]*\n$/);
      const unknown = await ms('index', 'check', 'ghost');
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/^mailshare: NOT_FOUND: [^\n]*\n$/);
      const ta = (await api.auth.createToken({ role: 'tenant-admin:other', description: '' })).token;
      const asTa = (...args: string[]) => runCli(args, { env: { ...env, MAILSHARE_TOKEN: ta }, cwd: dir.path });
      expect((await asTa('index', 'check', 'other')).code).toBe(0);
      // Without a tenant, a tenant admin checks its own.
      const own = await asTa('index', 'check', '-o', 'json');
      expect([own.code, own.stderr]).toEqual([0, '']);
      expect(JSON.parse(own.stdout).tenants.map((t: { tenant: string }) => t.tenant)).toEqual(['other']);
      const foreign = await asTa('index', 'check', 'idx');
      expect(foreign.code).toBe(1);
      expect(foreign.stderr).toMatch(/^mailshare: PERMISSION_DENIED: [^\n]*\n$/);
    } finally {
      c.close();
      api.close();
    }
  });

  it('skips a mailbox that changed between the check and its repair (its guard), and repairs it when checked again', async () => {
    const api = connectApi(server.address, server.adminToken);
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    const keys = createKeys(server.prefix);
    const checker = new IndexChecker({ client: c, keys, audit: new AuditStore(c, keys) });
    const ctx = { who: 'test', actor: '' };
    try {
      await api.directory.createTenant({ id: 'race', domains: [] });
      await api.mailbox.createMailbox({ tenant: 'race', owner: 'alice', name: 'A', actor: '' });
      await api.acl.setAcl({ tenant: 'race', mailbox: 'alice/A', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
      await c.delete().key(keys.shared('race', 'bob', 'alice', 'A'));
      const found = await checker.inspect('race');
      expect(found.report).toMatchObject({ missing: 1, differences: [{ kind: 'missing', grantee: 'bob', mailbox: 'alice/A' }] });
      // The ACL changes after the check: the repair planned from the old ACL must not land.
      await api.acl.setAcl({ tenant: 'race', mailbox: 'alice/A', identifier: 'carol', rights: 'lr', expectedRevision: 0, actor: '' });
      expect(await checker.repair(found, ctx)).toEqual({ repaired: 0, skipped: 1 });
      // That change wrote every entry of the mailbox, bob's too: the record as it is now, not as the check saw it.
      const now = await c.get(keys.mailbox('race', 'alice', 'A')).string();
      expect(await c.get(keys.shared('race', 'bob', 'alice', 'A')).string()).toBe(now);
      expect((await checker.inspect('race')).report).toMatchObject({ missing: 0, stale: 0, wrongId: 0, outdated: 0, entries: 2 });
      await c.delete().key(keys.shared('race', 'bob', 'alice', 'A'));
      const again = await checker.check('race', { repair: true, ctx });
      expect(again).toMatchObject({ missing: 1, repaired: 1, skipped: 0 });
      expect((await checker.inspect('race')).report).toMatchObject({ missing: 0, stale: 0, wrongId: 0, outdated: 0, entries: 2 });
      expect(await c.get(keys.shared('race', 'bob', 'alice', 'A')).string()).toBe(now);
    } finally {
      c.close();
      api.close();
    }
  });
});
