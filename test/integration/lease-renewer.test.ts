import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { LeaseRenewer } from '../../src/store/lease-renewer.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';

let etcd: EtcdCluster;

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('lease renewals over one shared etcd stream', () => {
  it('renews many leases at once, answers 0 for a lease etcd no longer has, and recovers after etcd comes back', async () => {
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    const renewer = new LeaseRenewer(client, 1500);
    try {
      const leases = await Promise.all(Array.from({ length: 20 }, () => client.leaseClient.leaseGrant({ TTL: 30 })));
      // Three rounds of every lease, all in flight together.
      const ttls = await Promise.all([0, 1, 2].flatMap(() => leases.map((l) => renewer.renew(l.ID))));
      expect(ttls).toHaveLength(60);
      for (const t of ttls) expect(t).toBeGreaterThan(25);
      // One lease is gone: its renewal says so; the others still renew.
      await client.leaseClient.leaseRevoke({ ID: leases[0]!.ID });
      expect(await renewer.renew(leases[0]!.ID)).toBe(0);
      expect(await renewer.renew(leases[1]!.ID)).toBeGreaterThan(25);
      // etcd stops: renewals fail (no hang), and work again once it is back.
      await etcd.members[0]!.stop();
      await expect(renewer.renew(leases[1]!.ID)).rejects.toMatchObject({ code: 'unavailable' });
      await etcd.restart(0);
      let ttl = 0;
      for (let i = 0; i < 50 && ttl === 0; i++) {
        ttl = await renewer.renew(leases[1]!.ID).catch(() => 0);
        if (ttl === 0) await new Promise((r) => setTimeout(r, 200));
      }
      expect(ttl).toBeGreaterThan(0);
    } finally {
      renewer.close();
      client.close();
    }
  }, 60_000);
});
