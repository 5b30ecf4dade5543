import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventServiceClient, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { bearer, unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw' };

let cluster: GatewayCluster;
/** Between each gateway and the coordinator: what the coordinator says reaches that gateway late when asked. */
const slow: Record<string, TcpProxy> = {};

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    tap: true,
    gateway: async (name, server) => {
      slow[name] = await startTcpProxy(server.address);
      return { coordinators: [slow[name].address], ttlSeconds: 5 };
    },
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  for (const p of Object.values(slow)) await p.close();
});

const move = (user: string, to: string) => unaryCall(cluster.placement.move.bind(cluster.placement), { tenant: 'acme', user, toNode: to, timeoutMs: 5000 }, cluster.server.adminToken);

/** When the user's assignment on `node` is deleted (the release), as an admin's event stream tells it. */
function releasedAt(user: string, node: string): { at: () => number; stop: () => void } {
  const events = new EventServiceClient(cluster.server.address, grpc.credentials.createInsecure());
  const s = events.watch({ fromRevision: 0, kinds: ['assignment'], tenant: 'acme' }, bearer(cluster.server.adminToken));
  let at = 0;
  s.on('data', (r: WatchResponse) => {
    // A deletion names the node it was on (the previous value).
    for (const e of r.events) if (at === 0 && e.deleted && e.assignment?.user === user && e.assignment.node === node) at = Date.now();
  });
  s.on('error', () => undefined);
  return {
    at: () => at,
    stop: () => {
      s.cancel();
      events.close();
    },
  };
}

/**
 * A client logged in as alice (on n1) through `via`'s gateway sends NOOPs
 * one after another while alice moves to n2, with `late`'s gateway hearing
 * the cluster 300 ms late. No NOOP may reach n1 after it released alice;
 * the session goes on at n2 without reconnecting.
 */
async function moveUnderNoops(via: number, late: string): Promise<void> {
  await cluster.pin('alice', 'n1');
  const gw = cluster.gateways[via]!;
  await waitFor(() => cluster.gateways[0]!.agent.locate('acme', 'alice')?.node === 'n1', 5000, 'n1 holds alice');
  const c = await RawImap.login(gw.address(), 'alice', USERS.alice);
  expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
  if (via !== 0) {
    // The relaying gateway's hold (HoldUser) is what the old node waits on.
    const etcd = createEtcdClient({ endpoints: cluster.etcd.endpoints });
    const key = createKeys(cluster.server.prefix).hold('acme', 'alice', `n${via + 1}`);
    await waitFor(async () => (await etcd.get(key).exec()).kvs.length === 1, 5000, 'the hold written');
    etcd.close();
  }
  const release = releasedAt('alice', 'n1');
  slow[late]!.delay(300);
  let stop = false;
  let noops = 0;
  const replies: string[] = [];
  const loop = (async () => {
    while (!stop) {
      replies.push(await c.cmd('NOOP', 15_000));
      noops++;
    }
  })();
  try {
    await new Promise((r) => setTimeout(r, 200));
    expect((await move('alice', 'n2')).node).toBe('n2');
    await waitFor(() => release.at() > 0, 5000, 'the release seen');
    const atMove = noops;
    await waitFor(() => noops > atMove + 5, 10_000, 'NOOPs answered after the move');
  } finally {
    stop = true;
    await loop.catch(() => undefined);
    slow[late]!.delay(0);
    release.stop();
  }
  expect(replies.every((r) => /^t\d+ OK/m.test(r))).toBe(true);
  expect(c.closed).toBe(false);
  const after = (tap: number) => cluster.taps[tap]!.sent.filter((s) => s.at > release.at() && /NOOP/i.test(s.text));
  expect(after(0)).toEqual([]);
  expect(after(1).length).toBeGreaterThan(0);
  c.close();
}

describe('a node lets a user go', () => {
  it("only once its own gateway's sessions stopped sending there: no command reaches the old node after the release, and the session goes on at the new one", async () => {
    await moveUnderNoops(0, 'n1');
  });

  it('only once the gateways relaying the user\'s sessions to it stopped them and said so (AckMove), even one that hears the cluster late', async () => {
    await moveUnderNoops(1, 'n2');
  });

  it("for two users of one session at once (its own and a shared folder's owner): neither release waits for the other user's migration", async () => {
    await cluster.pin('carol', 'n1');
    await cluster.pin('dave', 'n1');
    const gw = cluster.gateways[0]!;
    const owner = await RawImap.login(gw.address(), 'dave', USERS.dave);
    expect(await owner.cmd('CREATE Team')).toMatch(/^t\d+ OK/m);
    expect(await owner.cmd('SETACL Team carol lrs')).toMatch(/^t\d+ OK/m);
    await owner.cmd('LOGOUT');
    owner.close();
    // Through n1's own gateway: it stops the session's connections there before n1 lets go.
    const c = await RawImap.login(gw.address(), 'carol', USERS.carol);
    expect(await c.cmd('SELECT Shared/dave/Team')).toMatch(/^t\d+ OK/m);
    // carol's migration logs in at n2 and is held there; the move of dave's connection waits behind it.
    const login = cluster.taps[1]!.hold(/LOGIN|AUTHENTICATE/i);
    const daveGone = releasedAt('dave', 'n1');
    try {
      expect((await move('carol', 'n2')).node).toBe('n2');
      await login.reached;
      const daveMoved = move('dave', 'n2');
      // Nothing is in flight on dave's connection and nothing more will be: n1 may let dave go now,
      // not once carol's migration is done (it would wait for this login, or for the 6 s bound).
      await waitFor(() => daveGone.at() > 0, 3000, "dave's release while carol's login at n2 is held");
      login.release();
      expect((await daveMoved).node).toBe('n2');
    } finally {
      login.release();
      daveGone.stop();
    }
    // The session goes on at n2 with the shared folder still selected; n1 heard nothing more of it.
    expect(await c.cmd('NOOP', 15_000)).toMatch(/^t\d+ OK/m);
    expect(await c.cmd('UID SEARCH ALL')).toMatch(/^t\d+ OK/m);
    expect(c.closed).toBe(false);
    expect(cluster.taps[0]!.sent.filter((x) => x.at > daveGone.at())).toEqual([]);
    c.close();
  });

  // Last: it leaves n2's gateway without a lease until it registers again.
  it('when a gateway relaying the user is cut off from the coordinators: only once that gateway can no longer serve (its lease ran out)', async () => {
    await cluster.pin('erin', 'n1');
    const relay = cluster.gateways[1]!;
    const c = await RawImap.login(relay.address(), 'erin', USERS.erin);
    expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    const etcd = createEtcdClient({ endpoints: cluster.etcd.endpoints });
    const hold = createKeys(cluster.server.prefix).hold('acme', 'erin', 'n2');
    await waitFor(async () => (await etcd.get(hold).exec()).kvs.length === 1, 5000, 'the hold written');
    const release = releasedAt('erin', 'n1');
    let stop = false;
    let endedAt = 0;
    const loop = (async () => {
      // A NOOP sent as the session ends gets no answer: give up on it soon (the test looks at what reached n1).
      while (!stop && !c.closed) await c.cmd('NOOP', 1000).catch(() => undefined);
    })();
    const watchEnd = setInterval(() => {
      if (c.closed && endedAt === 0) endedAt = Date.now();
    }, 5);
    try {
      await new Promise((r) => setTimeout(r, 200));
      // n2's gateway hears nothing more from the coordinator and cannot renew its lease (TTL 5 s).
      slow['n2']!.blackhole();
      await unaryCall(cluster.placement.kick.bind(cluster.placement), { tenant: 'acme', user: 'erin', timeoutMs: 15_000 }, cluster.server.adminToken);
      await waitFor(() => release.at() > 0, 15_000, 'the release seen');
      await waitFor(() => endedAt > 0, 10_000, 'the relayed session ended (its gateway may not serve)');
      // Past the 3 s for acknowledgments the old node waited for the relay's lease to run out, by
      // when the relay had stopped serving.
      expect(release.at()).toBeGreaterThan(endedAt);
    } finally {
      stop = true;
      clearInterval(watchEnd);
      await loop;
      slow['n2']!.restore();
      release.stop();
      etcd.close();
    }
    expect(cluster.taps[0]!.sent.filter((x) => x.at > release.at() && /NOOP/i.test(x.text))).toEqual([]);
  });
});
