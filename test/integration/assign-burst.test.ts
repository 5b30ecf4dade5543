import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens, type Api } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { openLocateMany, openLocateStream } from '../harness/locate-stream.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

const EPSILON = 0.01;
let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
let client: PlacementServiceClient;
const nodes: TestNode[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  // A tight bound: a node may hold at most 1 % more than its share.
  server = await startInProcessServer({ endpoints: etcd.endpoints, flags: { placementEpsilon: String(EPSILON) } });
  admin = connectApi(server.address, server.adminToken);
  client = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  for (const n of nodes) n.stop();
  client?.close();
  admin?.close();
  await server?.stop();
  await etcd?.stop();
});

const listNodes = () => unaryCall(client.listNodes.bind(client), {}, server.adminToken);

it('keeps the bounded-load limit in a burst of assignments (batches in flight count in each other\'s loads)', async () => {
  const tokenFor = nodeTokens(admin);
  nodes.push(await startTestNode(server.address, await tokenFor('imap-a'), { name: 'imap-a', ttlSeconds: 10 }));
  await waitFor(async () => (await listNodes()).nodes.some((n) => n.state === 'active'), 5000, 'imap-a active');
  const lookups = openLocateStream(client, server.adminToken);
  try {
    // 300 users on imap-a alone, then imap-b joins and 1,000 new users log in at once.
    const first = await Promise.all(Array.from({ length: 300 }, (_, i) => lookups.locate('acme', `old${i}`, true)));
    expect(first.every((r) => r?.code === 0 && r.response?.node === 'imap-a')).toBe(true);
    nodes.push(await startTestNode(server.address, await tokenFor('imap-b'), { name: 'imap-b', ttlSeconds: 10 }));
    await waitFor(async () => (await listNodes()).nodes.filter((n) => n.state === 'active').length === 2, 5000, 'both nodes active');
    // One LocateMany message: the coordinator has all 1,000 at once, in batches written side by side.
    const many = openLocateMany(client, server.adminToken);
    const burst = await Promise.all(Array.from({ length: 1000 }, (_, i) => many.locate('acme', `new${i}`, true)));
    many.close();
    expect(burst.filter((r) => r?.code !== 0)).toEqual([]);
    const counts = new Map<string, number>();
    for (const r of burst) counts.set(r!.response!.node, (counts.get(r!.response!.node) ?? 0) + 1);
    counts.set('imap-a', (counts.get('imap-a') ?? 0) + 300);
    // As one-by-one assignments would: no node above (1 + ε) × its share of all 1,300.
    const limit = Math.ceil((1 + EPSILON) * 1300 * 0.5);
    expect(counts.get('imap-a')! + counts.get('imap-b')!).toBe(1300);
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(limit);
  } finally {
    lookups.close();
  }
});
