import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventServiceClient, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { EVENT_KINDS, EventStore, type StoreEvent } from '../../src/store/event-store.js';
import { createKeys } from '../../src/store/keys.js';
import { type HubBatch, WatchHub } from '../../src/store/watch-hub.js';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { bearer } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
const log = pino({ level: 'silent' });

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

/** A hub over its own key prefix, with a client to write mailboxes there. */
async function hubUnder(prefix: string, bufferEvents?: number) {
  const client = createEtcdClient({ endpoints: etcd.endpoints });
  const keys = createKeys(prefix);
  const store = new EventStore(client, keys);
  const hub = new WatchHub(store, log, bufferEvents === undefined ? {} : { bufferEvents });
  hub.start();
  await waitFor(() => hub.live, 10_000, 'the hub watching');
  const put = async (name: string): Promise<number> => Number((await client.put(keys.mailbox('acme', 'alice', name)).value('{}').exec()).header.revision);
  return {
    hub,
    store,
    put,
    close: async () => {
      await hub.close();
      client.close();
    },
  };
}

/** Collects what a subscription delivers. */
function collector() {
  const seen: StoreEvent[] = [];
  const batches: HubBatch[] = [];
  return {
    seen,
    batches,
    onBatch: (b: HubBatch) => {
      batches.push(b);
      seen.push(...b.events);
    },
  };
}

describe('WatchHub', () => {
  it('hands every change once, in order, to every subscriber, as the same batch', async () => {
    const h = await hubUnder('/hub-a/');
    try {
      const a = collector();
      const b = collector();
      const errors: unknown[] = [];
      h.hub.subscribe(0, a.onBatch, (e) => errors.push(e));
      h.hub.subscribe(0, b.onBatch, (e) => errors.push(e));
      const revisions: number[] = [];
      for (let i = 0; i < 30; i++) revisions.push(await h.put(`m${i}`));
      await waitFor(() => a.seen.length >= 30 && b.seen.length >= 30, 10_000, 'every change');
      expect(a.seen.map((e) => e.revision)).toEqual(revisions);
      expect(b.seen.map((e) => e.revision)).toEqual(revisions);
      expect(a.seen.map((e) => e.id)).toEqual(revisions.map((_, i) => `alice/m${i}`));
      // One decoded batch for both: what one subscriber derives (memo), the other reuses.
      const withEvents = a.batches.filter((x) => x.events.length > 0);
      expect(withEvents.every((x, i) => x === b.batches.filter((y) => y.events.length > 0)[i])).toBe(true);
      expect(errors).toEqual([]);
      expect(h.hub.size).toBe(2);
    } finally {
      await h.close();
    }
  });

  it('serves a start in the recent past from its buffer, a start ahead of it from then on, and declines a start older than its buffer', async () => {
    const h = await hubUnder('/hub-b/', 10);
    try {
      const first = await h.put('x0');
      const revisions = [first];
      for (let i = 1; i < 25; i++) revisions.push(await h.put(`x${i}`));
      await waitFor(() => {
        const probe = collector();
        const sub = h.hub.subscribe(revisions[24]!, probe.onBatch, () => undefined);
        void sub?.cancel();
        return probe.seen.length === 1;
      }, 10_000, 'the hub at the last change');
      // The buffer holds the last 10 changes or a little more (whole batches): the first are gone.
      expect(h.hub.subscribe(first, () => undefined, () => undefined)).toBeUndefined();
      const recent = collector();
      expect(h.hub.subscribe(revisions[20]!, recent.onBatch, () => undefined)).toBeDefined();
      // Delivered at once (before subscribe returned): exactly the changes from revision 20 on.
      expect(recent.seen.map((e) => e.revision)).toEqual(revisions.slice(20));
      const ahead = collector();
      const future = revisions[24]! + 3;
      h.hub.subscribe(future, ahead.onBatch, () => undefined);
      const later = [await h.put('y0'), await h.put('y1'), await h.put('y2'), await h.put('y3')];
      await waitFor(() => recent.seen.length >= 9, 10_000, 'the later changes');
      expect(recent.seen.map((e) => e.revision)).toEqual([...revisions.slice(20), ...later]);
      await waitFor(() => ahead.seen.length >= 2, 10_000, 'the changes from the future start');
      expect(ahead.seen.map((e) => e.revision)).toEqual(later.filter((r) => r >= future));
      // The buffer's answer is what etcd's own watch from that revision says.
      const direct: StoreEvent[] = [];
      const w = await h.store.watch(revisions[20]!, { kinds: new Set(EVENT_KINDS), tenants: undefined }, (evs) => direct.push(...evs), () => undefined);
      await waitFor(() => direct.length >= 9, 10_000, 'the direct watch');
      await w.cancel();
      expect(direct.map((e) => [e.revision, e.id])).toEqual(recent.seen.map((e) => [e.revision, e.id]));
    } finally {
      await h.close();
    }
  });

  it('goes on through an etcd restart without losing or repeating a change', async () => {
    const h = await hubUnder('/hub-c/');
    try {
      const a = collector();
      h.hub.subscribe(0, a.onBatch, () => undefined);
      const revisions = [await h.put('before')];
      etcd.members[0]!.kill('SIGKILL');
      await etcd.members[0]!.exited;
      await etcd.restart(0);
      // The client reconnects by itself; writes retry until etcd answers.
      for (let i = 0; i < 5; i++) revisions.push(await waitForValue(() => h.put(`after${i}`)));
      await waitFor(() => a.seen.length >= 6, 20_000, 'the changes after the restart');
      expect(a.seen.map((e) => e.revision)).toEqual(revisions);
    } finally {
      await h.close();
    }
  }, 60_000);
});

async function waitForValue<T>(f: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** etcd's count of its watchers (its /metrics). */
async function etcdWatchers(): Promise<number> {
  const text = await (await fetch(`${etcd.endpoints[0]}/metrics`)).text();
  return Number(/^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text)![1]);
}

describe('Watch streams of a coordinator', () => {
  it.each([
    ['on', 'share one etcd watch', (n: number) => n <= 2],
    ['off', 'each hold an etcd watch of their own', (n: number) => n >= 20],
  ])('with events.sharedWatch %s: 20 streams %s and are sent the same changes', async (mode, _what, expected) => {
    const server = await startInProcessServer({ endpoints: etcd.endpoints, flags: { eventsSharedWatch: mode } });
    const admin = connectApi(server.address, server.adminToken);
    const client = new EventServiceClient(server.address, grpc.credentials.createInsecure());
    const streams: Array<{ stream: grpc.ClientReadableStream<WatchResponse>; seen: string[] }> = [];
    try {
      await admin.directory.createTenant({ id: 'acme', domains: [] });
      const before = await etcdWatchers();
      for (let i = 0; i < 20; i++) {
        const stream = client.watch({ fromRevision: 0, kinds: ['mailbox'], tenant: i % 2 ? 'acme' : '' }, bearer(server.adminToken));
        const s = { stream, seen: [] as string[] };
        stream.on('data', (r: WatchResponse) => s.seen.push(...r.events.map((e) => `${e.revision} ${e.mailbox?.mailbox}`)));
        stream.on('error', () => undefined);
        await new Promise<void>((resolve) => stream.once('metadata', () => resolve()));
        streams.push(s);
      }
      const added = (await etcdWatchers()) - before;
      expect(expected(added)).toBe(true);
      for (let i = 0; i < 5; i++) await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: `M${i}`, actor: '' });
      await waitFor(() => streams.every((s) => s.seen.length >= 5), 10_000, 'every stream sent the mailboxes');
      const first = streams[0]!.seen;
      expect(first.map((l) => l.split(' ')[1])).toEqual([0, 1, 2, 3, 4].map((i) => `alice/M${i}`));
      for (const s of streams) expect(s.seen).toEqual(first);
    } finally {
      for (const s of streams) s.stream.cancel();
      client.close();
      admin.close();
      await server.stop();
    }
  });
});
