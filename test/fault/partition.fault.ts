import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/gateway.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import { type TcpProxy, startTcpProxy } from '../harness/tcp-proxy.js';

/**
 * Fault test 4 (partition): a node's gateway is cut off from the
 * coordinators (a TCP proxy drops everything) while its users have IMAP
 * sessions open. The node must stop serving them (BYE) before etcd could
 * grant any of them to another node: every session's BYE comes before the
 * user's new assignment appears in etcd.
 */
const USERS = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`p${i}`, `p${i}-pw`]));
let cluster: GatewayCluster;
let proxy: TcpProxy | undefined;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['cut', 'other'],
    users: USERS,
    // Only the node under test reaches the coordinators through the proxy.
    gateway: async (node, server) => {
      if (node !== 'cut') return { ttlSeconds: 2 };
      proxy = await startTcpProxy(server.address);
      return { coordinators: [proxy.address], ttlSeconds: 2 };
    },
  });
}, 60_000);
afterAll(async () => {
  proxy?.restore();
  await cluster?.stop();
  await proxy?.close();
});

describe('partition of a node from the coordinators', () => {
  it('ends its sessions before any of its users can be assigned elsewhere', async () => {
    const [cut, other] = cluster.gateways as [Gateway, Gateway];
    // Users whose logins through the cut-off node's gateway land on that node.
    const sessions = new Map<string, RawImap>();
    for (const user of Object.keys(USERS)) {
      const c = await RawImap.login(cut.address(), user, USERS[user]!);
      await c.cmd('SELECT INBOX');
      if (cut.agent.locate('acme', user)?.node === 'cut') sessions.set(user, c);
      else c.close();
    }
    expect(sessions.size).toBeGreaterThan(0);
    const etcdClient = createEtcdClient({ endpoints: cluster.etcd.endpoints });
    const reassignedAt = new Map<string, number>();
    const w = await etcdClient.watch().prefix(`${cluster.server.prefix}v1/assign/acme/`).create();
    w.on('put', (kv) => {
      const user = kv.key.toString().split('/').pop()!;
      if (sessions.has(user) && !reassignedAt.has(user)) reassignedAt.set(user, Date.now());
    });
    const byeAt = new Map<string, number>();
    const watchers = [...sessions].map(async ([user, c]) => {
      await c.until(/^\* BYE \[UNAVAILABLE\]/m, 15_000);
      byeAt.set(user, Date.now());
    });

    proxy!.blackhole();
    const cutAt = Date.now();
    // Meanwhile the users keep trying through the other gateway; they get in once etcd let the old lease go.
    const retries = [...sessions.keys()].map(async (user) => {
      await waitFor(
        async () => {
          // A login may still reach the cut node's Dovecot while its lease lives; it counts once the user has a new node.
          try {
            (await RawImap.login(other.address(), user, USERS[user]!)).close();
          } catch {
            // refused while the old assignment stands or the node is unreachable
          }
          return reassignedAt.has(user);
        },
        20_000,
        `${user} on a new node`,
      );
    });
    await Promise.all([...watchers, ...retries]);
    await w.cancel();
    etcdClient.close();
    for (const c of sessions.values()) c.close();
    for (const [user] of sessions) {
      expect(byeAt.get(user), user).toBeGreaterThan(cutAt);
      expect(reassignedAt.get(user), user).toBeGreaterThan(byeAt.get(user)!);
    }
    process.stdout.write(
      `partition: ${sessions.size} sessions ended ${Math.max(...byeAt.values()) - cutAt} ms after the cut; first reassignment ${Math.min(...reassignedAt.values()) - cutAt} ms after it\n`,
    );
  });
});
