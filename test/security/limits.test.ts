import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

/**
 * Memory and CPU bounds under hostile clients (M1, M2) and the login
 * penalty (L1), measured on a real gateway and Dovecot: literal floods
 * before and after login are cut off at the command limit, the gateway's
 * event loop never stalls long enough to miss a lease renewal (the node
 * keeps its lease throughout), idle and over-limit connections are closed,
 * and failed logins slow their own address down without refusing anyone's
 * correct password.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };
let cluster: GatewayCluster;
let gw: string;
let gw2: string;
let leaseLost = 0;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    // Dovecot's default: the [LIMIT] test below counts on it.
    maxUserIpConnections: 10,
    // n2 keeps the default pre-login timeout: Dovecot's own penalties make the login test slow.
    gateway: (node) => ({ ttlSeconds: 3, ...(node === 'n1' ? { preLoginTimeoutMs: 1500 } : { idleTimeoutMs: 2500 }), maxConnections: 150, maxConnectionsPerIp: 120, loginPenalty: { baseMs: 300, maxMs: 2000, maxUserMs: 600 } }),
  });
  gw = cluster.gateways[0]!.address();
  gw2 = cluster.gateways[1]!.address();
  cluster.gateways[0]!.agent.on('leaseLost', () => leaseLost++);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

/** A raw connection from a chosen loopback address. */
function connect(localAddress = '127.0.0.1', address = gw): Promise<{ socket: net.Socket; received: () => string; closed: Promise<void> }> {
  const [host, port] = address.split(':');
  const socket = net.connect({ host, port: Number(port), localAddress });
  let got = '';
  socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return new Promise((resolve) => socket.once('connect', () => resolve({ socket, received: () => got, closed })));
}

describe('bounded memory and CPU under floods (M1, M2)', () => {
  it('a literal flood after login is cut off at the command limit, and never stalls the event loop or the lease', async () => {
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const heapBefore = process.memoryUsage().heapUsed;
    const victim = await RawImap.login(gw, 'alice', USERS.alice);
    // (8 sessions: Dovecot allows 10 per user and address, mail_max_userip_connections.)
    const floods = await Promise.all(Array.from({ length: 8 }, async () => {
      const c = await RawImap.login(gw, 'bob', USERS.bob);
      const chunk = `{65536+}\r\n${'x'.repeat(65536)} `;
      c.write(`g GETACL ${chunk.repeat(40)}\r\n`);
      return c;
    }));
    // Another user's commands are answered throughout.
    for (let i = 0; i < 10; i++) expect(await victim.cmd('NOOP', 5000)).toMatch(/^t\d+ OK/m);
    for (const c of floods) {
      await waitFor(() => c.closed, 5000, 'flooding session closed');
      expect(c.pending()).toMatch(/^g BAD Literal too large/m);
    }
    delay.disable();
    victim.close();
    expect(leaseLost).toBe(0);
    // The lease is renewed every TTL/3 (1 s here): the loop never stalled for that long.
    expect(delay.max / 1e6).toBeLessThan(1000);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);
  }, 60_000);

  it('many big commands under the limit parse in linear time: another session is answered meanwhile', async () => {
    const victim = await RawImap.login(gw, 'alice', USERS.alice);
    const flooder = await RawImap.login(gw, 'bob', USERS.bob);
    const big = 'y'.repeat(60_000);
    let sent = '';
    for (let i = 0; i < 200; i++) sent += `s${i} SEARCH TEXT {${big.length}+}\r\n${big}\r\n`;
    flooder.write(sent);
    expect(await victim.cmd('NOOP', 10_000)).toMatch(/^t\d+ OK/m);
    await flooder.until(/^s199 (OK|NO|BAD)/m, 60_000);
    expect(await flooder.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    flooder.close();
    victim.close();
    expect(leaseLost).toBe(0);
  }, 90_000);

  it('a literal flood before login ends the connection at the pre-login limit; 100 of them hold no memory', async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const conns = await Promise.all(Array.from({ length: 100 }, () => connect()));
    for (const c of conns) c.socket.write(`a LOGIN {8192+}\r\n${'z'.repeat(8192)} {8192+}\r\n${'z'.repeat(8192)}`);
    await Promise.all(conns.map((c) => c.closed));
    for (const c of conns) expect(c.received()).toMatch(/^a BAD Literal too large\r\n\* BYE /m);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(100 * 1024 * 1024);
    expect(leaseLost).toBe(0);
  }, 60_000);

  it('disconnects a client that does not log in within the pre-login timeout', async () => {
    const c = await connect();
    const started = Date.now();
    await c.closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(c.received()).toMatch(/\* BYE Disconnected for inactivity/);
  });

  it('logs out a logged-in client that stays silent past the idle timeout', async () => {
    const c = await RawImap.login(gw2, 'alice', USERS.alice);
    const started = Date.now();
    await waitFor(() => c.closed, 10_000, 'idle session ended');
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(c.pending()).toMatch(/^\* BYE \[UNAVAILABLE\] Disconnected for inactivity/m);
  });

  it('refuses connections over the per-address limit with BYE, and takes others', async () => {
    const many = await Promise.all(Array.from({ length: 120 }, () => connect('127.0.0.5')));
    const over = await connect('127.0.0.5');
    await over.closed;
    expect(over.received()).toMatch(/^\* BYE \[UNAVAILABLE\] Too many connections/);
    const elsewhere = await connect('127.0.0.6');
    await waitFor(() => elsewhere.received().includes('* OK'), 2000, 'greeting');
    for (const c of [...many, elsewhere]) c.socket.destroy();
  });
});

describe('failed logins slow down, never lock out (L1)', () => {
  it("passes on Dovecot's reason when it refuses a login for another cause than the password, and counts no failure", async () => {
    const sessions = [];
    for (let i = 0; i < 10; i++) sessions.push(await RawImap.login(gw2, 'alice', USERS.alice));
    const over = await RawImap.connect(gw2);
    // Dovecot's mail_max_userip_connections (10): the 11th session of alice from one address.
    expect(await over.cmd(`LOGIN alice ${USERS.alice}`)).toMatch(/^t\d+ NO \[LIMIT\]/m);
    for (const c of [over, ...sessions]) c.close();
  });

  it('delays the failing address; the owner of the name still logs in, from elsewhere at once and from there later', async () => {
    const attacker = await connect('127.0.0.9', gw2);
    await waitFor(() => attacker.received().includes('* OK'), 2000, 'greeting');
    const answers = (): number => (attacker.received().match(/^a\d+ NO/gm) ?? []).length;
    const started = Date.now();
    // (Dovecot adds its own penalty for the address, which the gateway passes on as the client's.)
    for (let i = 0; i < 3; i++) {
      attacker.socket.write(`a${i} LOGIN carol wrong${i}\r\n`);
      await waitFor(() => answers() === i + 1, 20_000, `answer ${i}`);
    }
    // The gateway's penalties before attempts 2 and 3: 300 + 600 ms.
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    attacker.socket.destroy();
    const carol = await RawImap.connect(gw2);
    expect(await carol.cmd(`LOGIN carol ${USERS.carol}`, 10_000)).toMatch(/^t\d+ OK/m);
    carol.close();
    // From the failing address too, the right password works (after that address's penalty).
    const again = await connect('127.0.0.9', gw2);
    await waitFor(() => again.received().includes('* OK'), 2000, 'greeting');
    again.socket.write(`b LOGIN carol ${USERS.carol}\r\n`);
    await waitFor(() => /^b (OK|NO)/m.test(again.received()), 20_000, 'answer');
    expect(again.received()).toMatch(/^b OK/m);
    again.socket.destroy();
  }, 90_000);
});
