import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../src/services/auth.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { TokenStore } from '../../src/store/token-store.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';

let etcd: EtcdCluster;
const keys = createKeys('/token-lookup/');

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('token lookups', () => {
  it('find a token created a moment ago that the watch-fed cache has not seen yet, and read etcd for unknown ids only so often', async () => {
    const writer = createEtcdClient({ endpoints: etcd.endpoints });
    const reader = createEtcdClient({ endpoints: etcd.endpoints });
    const created = new TokenStore(writer, keys, pino({ level: 'silent' }));
    const store = new TokenStore(reader, keys, pino({ level: 'silent' }));
    try {
      await store.startCache();
      const t = mintToken();
      await created.create({ id: t.id, role: { kind: 'admin' }, secretHash: t.secretHash, description: 'fresh', createdAt: new Date(), createdBy: 'test' });
      // Right after the write: the other store's cache hears of it only later.
      expect((await store.lookup(t.id))?.secretHash).toBe(t.secretHash);
      // Made-up ids: a burst of reads at most, then no more reads (and still unknown).
      let reads = 0;
      const get = store.get.bind(store);
      store.get = (id) => {
        reads++;
        return get(id);
      };
      const ids = Array.from({ length: 200 }, () => mintToken().id);
      const found = await Promise.all(ids.map((id) => store.lookup(id)));
      expect(found.every((r) => r === undefined)).toBe(true);
      expect(reads).toBeGreaterThan(0);
      expect(reads).toBeLessThanOrEqual(55);
    } finally {
      await store.close();
      await created.close();
      writer.close();
      reader.close();
    }
  });
});
