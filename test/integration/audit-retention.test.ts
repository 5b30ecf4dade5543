import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditStore } from '../../src/store/audit-store.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('audit retention', () => {
  it('prunes records older than the cutoff in every tenant and keeps newer ones', async () => {
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    const keys = createKeys('/audit-test/');
    const audit = new AuditStore(client, keys);
    try {
      const old = new Date(Date.now() - 10 * 86_400_000);
      const recent = new Date();
      for (const tenant of ['a', 'b']) {
        for (const time of [old, old, recent]) {
          await client.if(keys.tenant('x'), 'Version', '==', 0).then(...audit.ops({ tenant, who: 'admin (token t)', actor: '', action: 'SetAcl', target: 'alice/P' }, time)).commit();
        }
      }
      expect((await audit.list('a', 100, undefined)).records).toHaveLength(3);
      const deleted = await audit.prune(new Date(Date.now() - 86_400_000));
      expect(deleted).toBe(4);
      for (const tenant of ['a', 'b']) {
        const left = (await audit.list(tenant, 100, undefined)).records;
        expect(left).toHaveLength(1);
        expect(left[0]!.time.getTime()).toBe(recent.getTime());
      }
      expect(await audit.prune(new Date(Date.now() - 86_400_000))).toBe(0);
    } finally {
      client.close();
    }
  });
});
