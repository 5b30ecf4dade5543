import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import type { Gateway } from '../../src/gateway/gateway.js';
import type { DovecotInstance } from '../harness/dovecot.js';
import { type GatewayCluster, canConnect, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import type { InProcessServer } from '../harness/server.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw' };

let cluster: GatewayCluster;
let server: InProcessServer;
let dovecots: DovecotInstance[];
let gateways: Gateway[];
let placement: PlacementServiceClient;

beforeAll(async () => {
  // No master user: these tests are about logins and the home node.
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, gateway: () => ({ loginPenalty: { baseMs: 250 }, master: undefined }) });
  ({ server, dovecots, gateways } = cluster);
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  await waitFor(async () => (await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken)).nodes.filter((n) => n.state === 'active').length === 2, 5000, 'two nodes');
}, 60_000);
afterAll(async () => {
  placement?.close();
  await cluster?.stop();
});

const locate = (user: string) => unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign: false }, server.adminToken);

function client(g: Gateway, user: string, pass: string): ImapFlow {
  const [host, port] = g.address().split(':');
  return new ImapFlow({ host: host!, port: Number(port), secure: false, auth: { user, pass }, logger: false, disableAutoIdle: true });
}

/** A raw IMAP conversation: sends lines, collects everything until `until` matches. */
async function raw(address: string, lines: string[], until: RegExp, timeoutMs = 5000): Promise<string> {
  const [host, port] = address.split(':');
  const s = net.connect(Number(port), host);
  let out = '';
  s.on('data', (c: Buffer) => (out += c.toString()));
  await waitFor(() => out.includes('\r\n'), timeoutMs, 'greeting');
  for (const l of lines) s.write(l);
  await waitFor(() => until.test(out), timeoutMs, `response matching ${until}`);
  s.destroy();
  return out;
}

describe('IMAP gateway', () => {
  it('greets with capabilities and answers pre-auth commands', async () => {
    const out = await raw(gateways[0]!.address(), ['a CAPABILITY\r\n', 'b NOOP\r\n', 'c ID NIL\r\n', 'd SELECT INBOX\r\n', 'e LOGOUT\r\n'], /e OK/);
    expect(out).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 SASL-IR LITERAL\+ ID AUTH=PLAIN AUTH=LOGIN\] mailshare ready\r\n/);
    expect(out).toContain('* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN\r\na OK');
    expect(out).toContain('b OK NOOP completed');
    expect(out).toContain('c OK ID completed');
    expect(out).toContain('d BAD SELECT is not valid before login');
    expect(out).toContain('* BYE Logging out\r\ne OK Logout completed');
  });

  it('logs in through any gateway, relays to the home node, and keeps the user there', async () => {
    const c1 = client(gateways[0]!, 'alice', USERS.alice);
    await c1.connect();
    const home = await locate('alice');
    expect(['n1', 'n2']).toContain(home.node);
    await c1.append('INBOX', 'From: x@example.com\r\nSubject: hello\r\n\r\nbody\r\n', ['\\Flagged']);
    const box = await c1.mailboxOpen('INBOX');
    expect(box.exists).toBe(1);
    await c1.logout();

    const c2 = client(gateways[1]!, 'alice', USERS.alice);
    await c2.connect();
    expect((await locate('alice')).epoch).toBe(home.epoch);
    await c2.mailboxOpen('INBOX');
    const msgs = [];
    for await (const m of c2.fetch('1:*', { envelope: true, flags: true })) msgs.push(m);
    expect(msgs.map((m) => m.envelope?.subject)).toEqual(['hello']);
    expect([...(msgs[0]!.flags ?? [])]).toContain('\\Flagged');
    await c2.logout();
    // The session really ran on the home node's Dovecot.
    const { readFileSync } = await import('node:fs');
    const homeLog = readFileSync(`${dovecots[home.node === 'n1' ? 0 : 1]!.dir}/dovecot.log`, 'utf8');
    expect(homeLog).toMatch(/imap\(alice\).*Logged out/);
  });

  it("passes the client's address on to Dovecot (logs, auth penalties and limits see the real client)", async () => {
    const [host, port] = gateways[0]!.address().split(':');
    const s = net.connect({ port: Number(port), host, localAddress: '127.0.0.2' });
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString()));
    await waitFor(() => out.includes('\r\n'), 5000, 'greeting');
    s.write(`a LOGIN carol ${USERS.carol}\r\nb LOGOUT\r\n`);
    await waitFor(() => /b OK/.test(out), 5000, 'logout');
    s.destroy();
    const home = await locate('carol');
    const { readFileSync } = await import('node:fs');
    const log = readFileSync(`${dovecots[home.node === 'n1' ? 0 : 1]!.dir}/dovecot.log`, 'utf8');
    expect(log).toMatch(/(?:Login|Logged in): user=<carol>, method=PLAIN, rip=127\.0\.0\.2,/);
  });

  it('logs a user who lives on another node in there only, not first on its own node\'s backend', async () => {
    // erin lives on n1; she logs in through n2's gateway, which has not heard of her.
    const placed = await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'erin', mailbox: '', assign: true }, server.adminToken);
    if (placed.node !== 'n1') await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'erin', toNode: 'n1', timeoutMs: 5000 }, server.adminToken);
    expect((await locate('erin')).node).toBe('n1');
    const out = await raw(gateways[1]!.address(), [`a LOGIN erin ${USERS.erin}\r\n`, 'b LOGOUT\r\n'], /b OK/);
    expect(out).toMatch(/a OK .*Logged in/);
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(`${dovecots[0]!.dir}/dovecot.log`, 'utf8')).toMatch(/(?:Login|Logged in): user=<erin>/);
    expect(readFileSync(`${dovecots[1]!.dir}/dovecot.log`, 'utf8')).not.toMatch(/user=<erin>/);
  });

  it('supports LOGIN with literals, AUTHENTICATE PLAIN with and without SASL-IR', async () => {
    const g = gateways[0]!.address();
    const lit = await raw(g, [`a LOGIN {3}\r\n`, `bob {${USERS.bob.length}+}\r\n${USERS.bob}\r\n`, 'b LOGOUT\r\n'], /b OK/);
    expect(lit).toContain('+ Ready for literal data');
    expect(lit).toMatch(/a OK .*Logged in/);
    const ir = Buffer.from(`\0carol\0${USERS.carol}`).toString('base64');
    expect(await raw(g, [`a AUTHENTICATE PLAIN ${ir}\r\n`], /a (OK|NO)/)).toMatch(/a OK .*Logged in/);
    const out = await raw(g, ['a AUTHENTICATE PLAIN\r\n'], /\+ \r\n/);
    expect(out).toContain('+ \r\n');
    const cont = await rawConversation(g, ['a AUTHENTICATE PLAIN\r\n', `${ir}\r\n`], /a (OK|NO)/);
    expect(cont).toMatch(/a OK .*Logged in/);
  });

  it('fails logins uniformly, creates no assignment for them, and slows the next attempts down without refusing the right password', async () => {
    // Dovecot itself slows repeated failures from one address down (~4.5 s each), hence the long waits.
    const g = gateways[1]!.address();
    const wrong = await raw(g, ['a LOGIN dave wrong\r\n'], /a (OK|NO)/, 15_000);
    expect(wrong).toContain('a NO [AUTHENTICATIONFAILED] Authentication failed.');
    const unknown = await raw(g, ['a LOGIN nosuchuser whatever\r\n'], /a (OK|NO)/, 15_000);
    expect(unknown).toContain('a NO [AUTHENTICATIONFAILED] Authentication failed.');
    const invalid = await raw(g, ['a LOGIN "Not A User" x\r\n'], /a (OK|NO)/, 15_000);
    expect(invalid).toContain('a NO [AUTHENTICATIONFAILED] Authentication failed.');
    expect((await locate('dave')).node).toBe('');
    expect((await locate('nosuchuser')).node).toBe('');
    await raw(g, ['a LOGIN dave wrong\r\n'], /a NO/, 15_000);
    // Four failures from this address (penalty 250 ms × 2^3) and two for dave: the right password
    // still logs dave in, after the address's penalty.
    const started = Date.now();
    const late = await raw(g, [`a LOGIN dave ${USERS.dave}\r\n`], /a (OK|NO)/, 20_000);
    expect(late).toMatch(/a OK/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect((await locate('dave')).node).not.toBe('');
  }, 90_000);

  it('ends a session with BYE [UNAVAILABLE] when the user moves, and the client lands on the new node', async () => {
    const c = client(gateways[0]!, 'alice', USERS.alice);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const before = await locate('alice');
    let closed = false;
    c.on('close', () => (closed = true));
    const to = before.node === 'n1' ? 'n2' : 'n1';
    const moved = await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: to, timeoutMs: 2000 }, server.adminToken);
    expect(moved.node).toBe(to);
    await waitFor(() => closed, 5000, 'session closed');
    const again = client(gateways[0]!, 'alice', USERS.alice);
    await again.connect();
    const box = await again.mailboxOpen('INBOX');
    expect(box.exists).toBe(1);
    expect((await locate('alice')).node).toBe(to);
    await again.logout();
  });

  it('answers NO [UNAVAILABLE] when the home node cannot be reached', async () => {
    const home = await locate('alice');
    const d = dovecots[home.node === 'n1' ? 0 : 1]!;
    d.kill();
    await waitFor(async () => !(await canConnect(d.address)), 5000, 'dovecot down');
    const out = await raw(gateways[0]!.address(), [`a LOGIN alice ${USERS.alice}\r\n`], /a (OK|NO)/);
    expect(out).toMatch(/a NO \[UNAVAILABLE\] /);
  });
});

async function rawConversation(address: string, lines: string[], until: RegExp): Promise<string> {
  const [host, port] = address.split(':');
  const s = net.connect(Number(port), host);
  let out = '';
  s.on('data', (c: Buffer) => (out += c.toString()));
  await waitFor(() => out.includes('\r\n'), 5000, 'greeting');
  s.write(lines[0]!);
  await waitFor(() => out.includes('+ \r\n'), 5000, 'continuation');
  s.write(lines[1]!);
  await waitFor(() => until.test(out), 5000, 'result');
  s.destroy();
  return out;
}
