import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

/**
 * A dead Dovecot behind a live gateway: the gateway probes its own Dovecot,
 * and after a few failed probes lets the node's users go (its lease is
 * revoked, `node list` shows it down with the reason), so they log in again
 * through any gateway, on another node, with a higher epoch. The node takes
 * users again once its Dovecot answers; a Dovecot that is slow but answers
 * within the probe's timeout never makes it flap.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
let cluster: GatewayCluster;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    gateway: () => ({ ttlSeconds: 3, health: { intervalMs: 200, failures: 3, timeoutMs: 1000 } }),
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const nodes = async () => (await unaryCall(cluster.placement.listNodes.bind(cluster.placement), {}, cluster.server.adminToken)).nodes;
const node = async (name: string) => (await nodes()).find((n) => n.name === name)!;
const locate = (user: string) => unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user, mailbox: '', assign: false }, cluster.server.adminToken);

async function loginWorks(gateway: string, user: keyof typeof USERS): Promise<boolean> {
  const c = await RawImap.connect(gateway);
  try {
    return /^t\d+ OK/m.test(await c.cmd(`LOGIN ${user} ${USERS[user]}`, 8000));
  } finally {
    c.close();
  }
}

describe('health checks of the node\'s own Dovecot', () => {
  it('a killed Dovecot: its users log in again through any gateway, on another node, with a higher epoch; the node comes back', async () => {
    const epoch = await cluster.pin('alice', 'n1');
    const [g1, g2] = cluster.gateways.map((g) => g.address());
    const session = await RawImap.login(g1!, 'alice', USERS.alice);
    const killed = Date.now();
    cluster.dovecots[0]!.kill();
    await waitFor(async () => (await node('n1')).state === 'down', 8000, 'n1 down');
    expect((await node('n1')).downReason).toMatch(/^IMAP server 127\.0\.0\.1:\d+ /);
    await waitFor(() => session.closed, 5000, 'the dead node\'s session ended');
    // Through n1's own gateway (its Dovecot dead) and through n2's.
    await waitFor(() => loginWorks(g1!, 'alice'), 10_000, 'alice through n1');
    process.stdout.write(`backend-health: alice logs in again ${Date.now() - killed} ms after her Dovecot died\n`);
    expect(await loginWorks(g2!, 'alice')).toBe(true);
    const now = await locate('alice');
    expect(now.node).toBe('n2');
    expect(now.epoch).toBeGreaterThan(epoch);
    // bob, never assigned, logs in through n1's gateway too: his password is checked by a live node.
    expect(await loginWorks(g1!, 'bob')).toBe(true);
    expect((await locate('bob')).node).toBe('n2');

    await cluster.dovecots[0]!.restart();
    await waitFor(async () => (await node('n1')).state === 'active', 8000, 'n1 active again');
    expect((await node('n1')).downReason).toBe('');
  }, 60_000);

  it('a Dovecot that answers slowly but within the timeout does not flap; one that stops answering is let go and taken back', async () => {
    // The whole Dovecot: its master leads a process group with its login and auth processes (a
    // login process that already runs would greet with only the master stopped).
    const pid = -cluster.dovecots[0]!.currentPid();
    const states: string[] = [];
    const sample = setInterval(() => void node('n1').then((n) => states.push(n.state)), 100);
    try {
      // Paused for less than the probe's timeout: probes wait for the greeting and pass.
      process.kill(pid, 'SIGSTOP');
      await new Promise((r) => setTimeout(r, 600));
      process.kill(pid, 'SIGCONT');
      await new Promise((r) => setTimeout(r, 1500));
      expect(states.length).toBeGreaterThan(10);
      expect(states.every((s) => s === 'active')).toBe(true);
      // Paused for longer: down, then back after it answers again.
      process.kill(pid, 'SIGSTOP');
      await waitFor(async () => (await node('n1')).state === 'down', 10_000, 'n1 down while paused');
    } finally {
      process.kill(pid, 'SIGCONT');
      clearInterval(sample);
    }
    await waitFor(async () => (await node('n1')).state === 'active', 10_000, 'n1 back after SIGCONT');
    expect(await loginWorks(cluster.gateways[0]!.address(), 'alice')).toBe(true);
  }, 60_000);
});
