import { spawn } from 'node:child_process';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type Api, connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { REPO_ROOT, startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * Failover at scale, against real etcd and a node in its own process:
 * every assignment change is recorded from etcd's own watch, and the
 * history is checked for overlapping holders.
 */
let etcd: EtcdCluster;
let c1: InProcessServer;
let c2: InProcessServer;
let admin: Api;
let adminToken: string;
let nodeToken: string;
let tokenFor: (node: string) => Promise<string>;
const agents: Agent[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  c1 = await startInProcessServer({ endpoints: etcd.endpoints });
  c2 = await startInProcessServer({ endpoints: etcd.endpoints, prefix: c1.prefix });
  adminToken = c1.adminToken;
  admin = connectApi(c1.address, adminToken);
  tokenFor = nodeTokens(admin);
  nodeToken = await tokenFor('victim');
});
afterAll(async () => {
  for (const a of agents) await a.close().catch(() => undefined);
  admin?.close();
  await c2?.stop();
  await c1?.stop().catch(() => undefined);
  await etcd?.stop();
});

interface HistoryEntry {
  /** When this process received the event from etcd. */
  at: number;
  revision: number;
  user: string;
  type: 'put' | 'delete';
  node: string;
  epoch: number;
}

describe('failover', () => {
  it('moves 1,000 users of a kill -9ed node within TTL + 1 s, with higher epochs and never two holders', async () => {
    const placement = new PlacementServiceClient(c1.address, grpc.credentials.createInsecure());
    const locate = (user: string, assign: boolean) => unaryCall(placement.locate.bind(placement), { tenant: 'big', user, mailbox: '', assign }, nodeToken, 30_000);
    // Record the full assignment history straight from etcd.
    const history: HistoryEntry[] = [];
    const raw = createEtcdClient({ endpoints: etcd.endpoints });
    const prefix = `${c1.prefix}v1/assign/big/`;
    const w = await raw.watch().prefix(prefix).withPreviousKV().create();
    w.on('data', (res) => {
      for (const ev of res.events) {
        const kv = ev.type === 'Delete' ? ev.prev_kv! : ev.kv;
        history.push({
          at: Date.now(),
          revision: Number(ev.kv.mod_revision),
          user: ev.kv.key.toString().slice(prefix.length),
          type: ev.type === 'Delete' ? 'delete' : 'put',
          node: (JSON.parse(kv.value.toString()) as { node: string }).node,
          epoch: Number(kv.create_revision),
        });
      }
    });
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/harness/agent-process.ts'), `${c1.address},${c2.address}`, nodeToken, 'victim', '2'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => out.includes('"ev":"ready"'), 20_000, 'victim ready');
      await waitFor(async () => (await unaryCall(placement.listNodes.bind(placement), {}, adminToken)).nodes.some((n) => n.name === 'victim' && n.state === 'active'), 5000, 'victim listed');
      // The victim is the only node: it takes all 1,000 users.
      const users = Array.from({ length: 1000 }, (_, i) => `user${i}`);
      const first = new Map<string, number>();
      for (let i = 0; i < users.length; i += 50) {
        await Promise.all(users.slice(i, i + 50).map(async (u) => first.set(u, (await locate(u, true)).epoch)));
      }
      expect((await locate('user999', false)).node).toBe('victim');
      // Two healthy nodes join, then the victim dies hard.
      for (const name of ['alive-1', 'alive-2']) {
        const a = createAgent({ coordinators: [c1.address, c2.address], token: await tokenFor(name), node: { name, imapAddress: '127.0.0.1:143' }, ttlSeconds: 2 });
        agents.push(a);
        await a.ready;
      }
      const killedAt = Date.now();
      child.kill('SIGKILL');
      await waitFor(() => history.filter((h) => h.type === 'delete').length === 1000, 8000, 'all 1,000 assignments dropped');
      // etcd dropped them all with the lease (TTL 2 s), not one by one later.
      // The TTL + 1 s goal is measured by `npm run bench -- failover`; the
      // margin here absorbs a loaded CI machine.
      const lastDrop = Math.max(...history.filter((h) => h.type === 'delete').map((h) => h.at));
      expect(lastDrop - killedAt).toBeLessThan(4500);
      for (let i = 0; i < users.length; i += 50) {
        await Promise.all(
          users.slice(i, i + 50).map(async (u) => {
            const r = await locate(u, true);
            expect(r.node).not.toBe('victim');
            expect(r.epoch).toBeGreaterThan(first.get(u)!);
          }),
        );
      }
      await new Promise((r) => setTimeout(r, 300));
      // History: per user, puts and deletes alternate, epochs strictly increase,
      // and a new holder appears only after the previous one was deleted.
      const byUser = new Map<string, HistoryEntry[]>();
      for (const h of history) byUser.set(h.user, [...(byUser.get(h.user) ?? []), h]);
      expect(byUser.size).toBe(1000);
      for (const [, hs] of byUser) {
        hs.sort((a, b) => a.revision - b.revision);
        let live: HistoryEntry | undefined;
        let lastEpoch = 0;
        for (const h of hs) {
          if (h.type === 'put') {
            expect(live).toBeUndefined();
            expect(h.epoch).toBeGreaterThan(lastEpoch);
            live = h;
            lastEpoch = h.epoch;
          } else {
            expect(live?.epoch).toBe(h.epoch);
            live = undefined;
          }
        }
        expect(hs.map((h) => `${h.type}:${h.node}`)).toEqual(['put:victim', 'delete:victim', expect.stringMatching(/^put:alive-[12]$/)]);
      }
    } finally {
      child.kill('SIGKILL');
      await w.cancel();
      raw.close();
      placement.close();
    }
  }, 120_000);

  it('keeps agents going when one of two coordinators restarts under load, losing no event', async () => {
    const watcher = agents[0]!;
    let lost = false;
    watcher.signal.addEventListener('abort', () => (lost = true));
    await admin.directory.createTenant({ id: 'load', domains: [] });
    await admin.mailbox.createMailbox({ tenant: 'load', owner: 'alice', name: 'Busy', actor: '' });
    const c2api = connectApi(c2.address, adminToken);
    let running = true;
    let last = 0;
    const writer = (async () => {
      for (let i = 0; running; i++) {
        const r = await c2api.acl.setAcl({ tenant: 'load', mailbox: 'alice/Busy', identifier: `u${i % 40}`, rights: i % 2 ? 'lr' : 'lrs', expectedRevision: 0, actor: '' });
        last = r.revision;
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const address = c1.address;
    await c1.stop();
    await new Promise((r) => setTimeout(r, 500));
    c1 = await startInProcessServer({ endpoints: etcd.endpoints, prefix: c2.prefix, flags: { listen: address } });
    await new Promise((r) => setTimeout(r, 500));
    running = false;
    await writer;
    c2api.close();
    // Every agent converges on the final state; none lost its lease.
    for (const a of agents) await a.waitForRevision(last, 15_000);
    const acl = await admin.acl.getAcl({ tenant: 'load', mailbox: 'alice/Busy', actor: '' }).catch(async () => {
      const c = connectApi(c2.address, adminToken);
      try {
        return await c.acl.getAcl({ tenant: 'load', mailbox: 'alice/Busy', actor: '' });
      } finally {
        c.close();
      }
    });
    for (const e of acl.entries) {
      for (const a of agents) expect(a.rights('load', e.identifier, 'alice/Busy').rights).toBe(e.rights);
    }
    expect(lost).toBe(false);
  }, 60_000);
});
