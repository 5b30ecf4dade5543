import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
/** Short enough for a test; the default is 15 minutes. */
const EXPIRE_MS = 700;

let cluster: GatewayCluster;
let gw: { n1: string; n2: string };

const locate = (user: string) => unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user, mailbox: '', assign: false }, cluster.server.adminToken);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const pin = (user: string, node: string) => cluster.pin(user, node);

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true, gateway: () => ({ userExpireMs: EXPIRE_MS }) });
  gw = { n1: cluster.gateways[0]!.address(), n2: cluster.gateways[1]!.address() };
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

describe('idle users are released, counting sessions through every gateway', () => {
  it('a session on the home node keeps the user; after it ends the user is released', async () => {
    const epoch = await pin('alice', 'n1');
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    await sleep(EXPIRE_MS * 3);
    expect((await locate('alice')).epoch).toBe(epoch);
    expect(await alice.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    await alice.cmd('LOGOUT');
    await waitFor(async () => (await locate('alice')).node === '', EXPIRE_MS * 2 + 3000, 'alice released');
  });

  it("a session through another node's gateway holds the user there, for as long as it lasts", async () => {
    const epoch = await pin('alice', 'n1');
    // alice's mail is on n1; she connects through n2's gateway (a load balancer may send her anywhere).
    const alice = await RawImap.login(gw.n2, 'alice', USERS.alice);
    await sleep(EXPIRE_MS * 4);
    expect((await locate('alice')).epoch).toBe(epoch);
    expect(await alice.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    await alice.cmd('LOGOUT');
    // The hold lingers one period after the last session, then the home node's next idle check releases her.
    await waitFor(async () => (await locate('alice')).node === '', EXPIRE_MS * 3 + 3000, 'alice released');
  });

  it("an open shared mailbox holds its owner, whose node would otherwise release them", async () => {
    const aliceEpoch = await pin('alice', 'n1');
    await pin('bob', 'n2');
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('CREATE Team')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('SETACL Team bob lr')).toMatch(/^t\d+ OK/m);
    await alice.cmd('LOGOUT');
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    await waitFor(async () => /Team/.test(await bob.cmd('LIST "" "Shared/alice/*"')), 5000, 'share visible');
    expect(await bob.cmd('SELECT Shared/alice/Team')).toMatch(/^t\d+ OK/m);
    await sleep(EXPIRE_MS * 4);
    // alice has no session of her own, but bob reads her mailbox on her node.
    expect((await locate('alice')).epoch).toBe(aliceEpoch);
    expect(await bob.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    await bob.cmd('LOGOUT');
    await waitFor(async () => (await locate('alice')).node === '', EXPIRE_MS * 3 + 3000, 'alice released');
    await waitFor(async () => (await locate('bob')).node === '', EXPIRE_MS * 2 + 3000, 'bob released');
  });
});
