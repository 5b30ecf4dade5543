import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { PlacementStore } from '../../src/store/placement-store.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { waitFor } from '../harness/process.js';

/**
 * Move requests live on their coordinator's lease: a coordinator that dies
 * between ending a user's assignment and writing the new one must not leave
 * the user unassignable (Locate does not assign while a move request exists).
 */
let etcd: EtcdCluster;
const keys = createKeys('/move-lease/');
const log = pino({ level: 'silent' });

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

async function coordinator(moveLeaseTtlSeconds?: number) {
  const client = createEtcdClient({ endpoints: etcd.endpoints });
  const store = new PlacementStore(client, keys, log, 0.25, { moveLeaseTtlSeconds });
  await store.start();
  return { client, store };
}

describe('move requests and their coordinator', () => {
  it("a coordinator that dies mid-move leaves the user assignable again within its lease's TTL", async () => {
    const survivor = await coordinator();
    const doomed = await coordinator(2);
    const watcher = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      await survivor.store.register({ name: 'n1', imapAddress: '127.0.0.1:1143', weight: 100, zone: '', ttlSeconds: 60 });
      await waitFor(() => survivor.store.listNodes().length === 1 && doomed.store.listNodes().length === 1, 5000, 'node seen by both');
      const first = (await survivor.store.locate('acme', 'alice', true)).assignment!;
      // The doomed coordinator asks n1 to let alice go (n1 has no agent here: it never answers)…
      const moving = doomed.store.move('acme', 'alice', { kick: true, timeoutMs: 30_000 }).catch((err: unknown) => err);
      await waitFor(async () => (await watcher.get(keys.move('acme', 'alice')).exec()).kvs.length === 1, 5000, 'move request written');
      // …then loses etcd for good (a crash, as far as etcd can tell: nothing is revoked).
      doomed.client.close();
      // The assignment ends (as n1 would release it); the move request is still there, blocking Locate.
      expect((await survivor.store.release('acme', 'alice', first.epoch)).released).toBe(true);
      expect((await watcher.get(keys.move('acme', 'alice')).exec()).kvs).toHaveLength(1);
      // Within the doomed coordinator's lease TTL (2 s), etcd drops its request and alice gets a node again.
      const t0 = Date.now();
      let again: Awaited<ReturnType<PlacementStore['locate']>> | undefined;
      await waitFor(async () => {
        again = await survivor.store.locate('acme', 'alice', true).catch(() => undefined);
        return again?.created === true;
      }, 8000, 'alice assignable again');
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(again!.assignment!.epoch).toBeGreaterThan(first.epoch);
      await moving;
    } finally {
      watcher.close();
      await doomed.store.close().catch(() => undefined);
      await survivor.store.close();
      survivor.client.close();
    }
  }, 30_000);

  it('a coordinator that shuts down mid-move lets go of its requests at once', async () => {
    const a = await coordinator();
    const watcher = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      await waitFor(() => a.store.listNodes().length === 1, 5000, 'node seen');
      await a.store.locate('acme', 'bob', true);
      const moving = a.store.move('acme', 'bob', { kick: true, timeoutMs: 30_000 }).catch((err: unknown) => err);
      await waitFor(async () => (await watcher.get(keys.move('acme', 'bob')).exec()).kvs.length === 1, 5000, 'move request written');
      await a.store.close();
      expect((await watcher.get(keys.move('acme', 'bob')).exec()).kvs).toHaveLength(0);
      // (The interrupted kick ends on its own, with an error, once its client is closed.)
      void moving;
    } finally {
      watcher.close();
      a.client.close();
    }
  }, 30_000);
});
