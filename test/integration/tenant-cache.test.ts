import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AuditStore } from '../../src/store/audit-store.js';
import { DomainError } from '../../src/domain/errors.js';
import { parseIdentifier } from '../../src/domain/identifier.js';
import { parseRightsChange } from '../../src/domain/rights.js';
import { DirectoryStore } from '../../src/store/directory-store.js';
import { MailboxStore } from '../../src/store/mailbox-store.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { TenantCache } from '../../src/store/tenant-cache.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';

let etcd: EtcdCluster;
const keys = createKeys('/tenant-cache/');
const ctx = { who: 'test', actor: '' };

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('the watch-fed tenant cache', () => {
  it('holds each tenant as etcd has it, with the revision a guarded write compares, and its domains', async () => {
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    const directory = new DirectoryStore(client, keys, new AuditStore(client, keys));
    const before = await directory.createTenant('early', { allowAnyone: true, maxSharesPerMailbox: 20 }, ctx, ['early.test']);
    const cache = new TenantCache(client, keys, pino({ level: 'silent' }));
    try {
      await cache.ready;
      // Loaded from the snapshot read.
      expect(cache.record('early')).toMatchObject({ id: 'early', revision: before.revision, domains: ['early.test'] });
      // Kept by the watch: a new tenant, a settings change (a new revision), a deletion.
      const t = await directory.createTenant('acme', { allowAnyone: true, maxSharesPerMailbox: 20 }, ctx, ['acme.test']);
      await vi.waitFor(() => expect(cache.record('acme')?.revision).toBe(t.revision), { timeout: 5000, interval: 5 });
      expect(cache.tenantOfDomain('acme.test')).toBe('acme');
      const u = await directory.updateTenant('acme', { allowAnyone: false }, 0, ctx);
      expect(u.revision).toBeGreaterThan(t.revision);
      await vi.waitFor(() => expect(cache.record('acme')).toMatchObject({ revision: u.revision, settings: { allowAnyone: false } }), { timeout: 5000, interval: 5 });
      expect((await directory.getTenant('acme'))?.revision).toBe(cache.record('acme')?.revision);
      await directory.deleteTenant('early', true, 0, ctx);
      await vi.waitFor(() => expect(cache.record('early')).toBeUndefined(), { timeout: 5000, interval: 5 });
      expect(cache.tenant('early').exists).toBe(false);
      expect(cache.tenantOfDomain('early.test')).toBeUndefined();
    } finally {
      await cache.close();
      client.close();
    }
  });

  it('an ACL write started from a tenant record behind etcd is judged again from etcd, not refused by the old policy', async () => {
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    const audit = new AuditStore(client, keys);
    const directory = new DirectoryStore(client, keys, audit);
    const mailboxes = new MailboxStore(client, keys, audit, directory);
    try {
      const old = await directory.createTenant('policy', { allowAnyone: false, maxSharesPerMailbox: 20 }, ctx);
      const record = await mailboxes.create('policy', 'alice', 'Pub', ctx);
      // etcd allows anyone now; the record the write starts from (a watch-fed copy a moment behind) does not.
      await directory.updateTenant('policy', { allowAnyone: true }, 0, ctx);
      const policy = (settings: { allowAnyone: boolean }) => {
        if (!settings.allowAnyone) throw new DomainError('permission_denied', 'identifier: this tenant does not allow sharing with anyone', { field: 'identifier' });
      };
      const change = { kind: 'set' as const, identifier: parseIdentifier('anyone'), change: parseRightsChange('lr') };
      const res = await mailboxes.changeAcl('policy', 'alice', 'Pub', change, 0, ctx, policy, false, { tenant: old, record });
      expect(res.record.acl.get('anyone')).toBeDefined();
      // Judged from etcd and refused there: refused.
      await directory.updateTenant('policy', { allowAnyone: false }, 0, ctx);
      const fresh = (await mailboxes.get('policy', 'alice', 'Pub'))!;
      const other = { kind: 'set' as const, identifier: parseIdentifier('anyone'), change: parseRightsChange('lrs') };
      await expect(mailboxes.changeAcl('policy', 'alice', 'Pub', other, 0, ctx, policy, false, { tenant: (await directory.getTenant('policy'))!, record: fresh })).rejects.toMatchObject({
        code: 'permission_denied',
      });
    } finally {
      client.close();
    }
  });
});
