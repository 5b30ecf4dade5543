import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap } from '../harness/imap.js';
import { RawLines, python } from '../harness/lines.js';
import { unaryCall } from '../harness/grpc.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { startTestNode } from '../harness/node-client.js';
import { getFreePort } from '../../src/store/etcd-process.js';
import { waitFor } from '../harness/process.js';
import { makePki } from '../harness/tls.js';
import { tempDir } from '../harness/tmp.js';

/**
 * POP3 through the gateway (RFC 1939): logins routed to the user's home
 * node and checked by its Dovecot POP3, the session relayed with every
 * command parsed and rebuilt, answered in order with the server's, and
 * ended when the user moves. Driven by Python's poplib (a real client) and
 * by raw lines where a test needs exact bytes.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw' };
let cluster: GatewayCluster;
const pki = tempDir('mailshare-pop3-tls-');
let certs: ReturnType<typeof makePki>;

const pop3 = (i: number): string => cluster.gateways[i]!.pop3Addresses().plain!;
const log = (node: number): string => readFileSync(path.join(cluster.dovecots[node]!.dir, 'dovecot.log'), 'utf8');

/** Appends a message to a user's INBOX through gateway 0 (IMAP). */
async function deliver(user: string, subject: string, body = 'hello\r\n'): Promise<void> {
  const c = await RawImap.login(cluster.gateways[0]!.address(), user, USERS[user as keyof typeof USERS]);
  try {
    const msg = `Subject: ${subject}\r\nFrom: x@example.com\r\n\r\n${body}`;
    expect(await c.cmd(`APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}`)).toMatch(/^t\d+ OK/m);
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  certs = makePki(pki.path);
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    protocols: ['pop3'],
    gateway: (node) =>
      node === 'n2' ? { tls: { cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey) }, loginPenalty: { baseMs: 200 } } : { loginPenalty: { baseMs: 200 } },
  });
  await cluster.pin('alice', 'n2');
  await cluster.pin('bob', 'n1');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  pki.remove();
});

describe('POP3 through the gateway', () => {
  it("poplib: logs in through any gateway, lands on the user's node, and reads, tops, lists and deletes there", async () => {
    await deliver('alice', 'first');
    await deliver('alice', 'second', 'line one\r\n.dotted line\r\n');
    const before = (log(0).match(/pop3-login: Info: (?:Login|Logged in): user=<alice>/g) ?? []).length;
    const out = await python(
      `
import json, poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=10)
p.user('alice'); p.pass_('alice-pw')
count, size = p.stat()
listing = p.list()[1]
uidl = p.uidl()[1]
top = p.top(1, 0)[1]
second = p.retr(2)[1]
p.dele(1)
capa = p.capa()
p.quit()
q = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=10)
q.user('alice'); q.pass_('alice-pw')
after = q.stat()[0]
q.quit()
print(json.dumps({'count': count, 'listing': len(listing), 'uidl': len(uidl), 'top': [l.decode() for l in top], 'second': [l.decode() for l in second], 'capa': sorted(capa.keys()), 'after': after}))
`,
      pop3(0).split(':'),
    );
    const r = JSON.parse(out) as { count: number; listing: number; uidl: number; top: string[]; second: string[]; capa: string[]; after: number };
    expect(r.count).toBe(2);
    expect(r.listing).toBe(2);
    expect(r.uidl).toBe(2);
    expect(r.top).toContain('Subject: first');
    // Dot-stuffed on the wire, unstuffed by poplib: the body came through whole.
    expect(r.second).toEqual(expect.arrayContaining(['line one', '.dotted line']));
    expect(r.capa).toEqual(expect.arrayContaining(['TOP', 'UIDL', 'PIPELINING', 'RESP-CODES']));
    expect(r.after).toBe(1);
    // Served by alice's node (n2), not by the gateway's own (n1).
    expect((log(1).match(/pop3-login: Info: (?:Login|Logged in): user=<alice>/g) ?? []).length).toBe(2);
    expect((log(0).match(/pop3-login: Info: (?:Login|Logged in): user=<alice>/g) ?? []).length).toBe(before);
  });

  it('AUTH PLAIN with and without an initial response, AUTH LOGIN, and a wrong password with no assignment made', async () => {
    const c = await RawLines.connect(pop3(0));
    try {
      expect(await c.line()).toMatch(/^\+OK/);
      const plain = Buffer.from('\0bob\0bob-pw').toString('base64');
      expect(await c.cmd(`AUTH PLAIN ${plain}`)).toMatch(/^\+OK/);
      expect(await c.cmd('STAT')).toMatch(/^\+OK \d+ \d+$/);
      expect(await c.cmd('QUIT')).toMatch(/^\+OK/);
    } finally {
      c.close();
    }
    const d = await RawLines.connect(pop3(0));
    try {
      await d.line();
      expect(await d.cmd('AUTH PLAIN')).toBe('+ ');
      expect(await d.cmd(Buffer.from('\0bob\0bob-pw').toString('base64'))).toMatch(/^\+OK/);
    } finally {
      d.close();
    }
    const e = await RawLines.connect(pop3(0));
    try {
      await e.line();
      expect(await e.cmd('AUTH LOGIN')).toBe('+ VXNlcm5hbWU6');
      expect(await e.cmd(Buffer.from('bob').toString('base64'))).toBe('+ UGFzc3dvcmQ6');
      expect(await e.cmd(Buffer.from('bob-pw').toString('base64'))).toMatch(/^\+OK/);
    } finally {
      e.close();
    }
    // (From an address of its own: Dovecot's auth penalty, per client address, would slow the others.)
    const f = await RawLines.connect(pop3(0), { localAddress: '127.0.0.2' });
    try {
      await f.line();
      expect(await f.cmd('USER dave')).toMatch(/^\+OK/);
      expect(await f.cmd('PASS wrong')).toBe('-ERR [AUTH] Authentication failed.');
      // The wrong password assigned dave nowhere.
      const where = await unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user: 'dave', mailbox: '', assign: false }, cluster.server.adminToken);
      expect(where.node).toBe('');
    } finally {
      f.close();
    }
    // Dovecot saw the client's address (XCLIENT), not the gateway's.
    await waitFor(() => /pop3-login: .*user=<dave>.*rip=127\.0\.0\.2,/.test(log(0)), 5000, "the client's address in Dovecot's log");
  });

  it("an IMAP failed login for a name slows that name's POP3 logins down too (one count for every protocol)", async () => {
    // (Each client from an address of its own: only the name's count is shared, and Dovecot's own
    // penalty, per address, stays out of the way.)
    const imap = await RawImap.connect(cluster.gateways[0]!.address(), '127.0.0.3');
    try {
      expect(await imap.cmd('LOGIN carol wrong')).toMatch(/^t1 NO \[AUTHENTICATIONFAILED\]/m);
    } finally {
      imap.close();
    }
    const c = await RawLines.connect(pop3(0), { localAddress: '127.0.0.4' });
    try {
      await c.line();
      const started = Date.now();
      expect(await c.cmd('USER carol')).toMatch(/^\+OK/);
      expect(await c.cmd('PASS carol-pw')).toMatch(/^\+OK/);
      // One failure for the name: the next attempt from anywhere waits the base penalty (200 ms).
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    } finally {
      c.close();
    }
  });

  it('rebuilds commands, refuses the unknown and the malformed itself, and answers pipelined commands in order', async () => {
    await deliver('bob', 'pipelined');
    const c = await RawLines.connect(pop3(1));
    try {
      await c.line();
      // n2's gateway requires STLS first.
      expect(await c.cmd('USER bob')).toMatch(/^-ERR \[AUTH\] Plaintext authentication disallowed/);
      expect(await c.cmd('STLS')).toMatch(/^\+OK/);
      const s = await c.startTls(readFileSync(certs.caCert));
      expect(await s.cmd('USER bob')).toMatch(/^\+OK/);
      expect(await s.cmd('PASS bob-pw')).toMatch(/^\+OK/);
      s.write('stat\r\nXYZZY 1\r\nlist 001\r\nRETR x\r\nCAPA\r\nNOOP\r\nTOP 1\r\nuidl\r\n');
      expect(await s.line()).toMatch(/^\+OK \d+ \d+$/);
      expect(await s.line()).toBe('-ERR Unknown command.');
      expect(await s.line()).toMatch(/^\+OK 1 \d+$/);
      expect(await s.line()).toBe('-ERR Invalid arguments for RETR.');
      expect(await s.line()).toBe('+OK');
      const capa = await s.multi();
      expect(capa).toContain('PIPELINING');
      expect(capa).not.toContain('STLS');
      expect(capa).not.toContain('USER');
      expect(await s.line()).toMatch(/^\+OK/);
      expect(await s.line()).toBe('-ERR Invalid arguments for TOP.');
      expect(await s.line()).toMatch(/^\+OK/);
      expect((await s.multi()).length).toBeGreaterThanOrEqual(1);
      // A line beyond the limit is refused, whole.
      expect(await s.cmd(`NOOP ${'x'.repeat(3000)}`)).toBe('-ERR Input line too long.');
      expect(await s.cmd('NOOP')).toMatch(/^\+OK/);
      // Dovecot saw the commands as the gateway rebuilt them (logged at QUIT with their counts).
      expect(await s.cmd('QUIT')).toMatch(/^\+OK/);
      s.close();
    } finally {
      c.close();
    }
  });

  it('passes a refusal through: a second session of a locked maildrop hears -ERR [IN-USE]', { timeout: 30_000 }, async () => {
    const a = await RawLines.connect(pop3(0));
    const b = await RawLines.connect(pop3(0));
    try {
      await a.line();
      await b.line();
      expect(await a.cmd('USER bob')).toMatch(/^\+OK/);
      expect(await a.cmd('PASS bob-pw')).toMatch(/^\+OK/);
      expect(await b.cmd('USER bob')).toMatch(/^\+OK/);
      // Dovecot waits up to 10 s for the lock, then refuses.
      b.write('PASS bob-pw\r\n');
      expect(await b.line(20_000)).toMatch(/^-ERR \[IN-USE\]/);
    } finally {
      a.close();
      b.close();
    }
  });


  it('implicit TLS: poplib POP3_SSL through a gateway with a certificate', async () => {
    const [host, port] = cluster.gateways[1]!.pop3Addresses().tls!.split(':');
    const out = await python(
      `
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.check_hostname = False
p = poplib.POP3_SSL(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=10)
p.user('bob'); p.pass_('bob-pw')
print(p.stat()[0])
p.quit()
`,
      [host!, port!, certs.caCert],
    );
    expect(Number(out.trim())).toBeGreaterThanOrEqual(0);
    // And STLS on the plain port, by poplib's own stls().
    const [h2, p2] = pop3(1).split(':');
    const viaStls = await python(
      `
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.check_hostname = False
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=10)
print('STLS' in p.capa())
p.stls(context=ctx)
p.user('bob'); p.pass_('bob-pw')
print(p.stat()[0])
p.quit()
`,
      [h2!, p2!, certs.caCert],
    );
    expect(viaStls.trim().split('\n')[0]).toBe('True');
  });

  it("a home node whose POP3 server cannot be reached: -ERR [SYS/TEMP], and the session is not routed anywhere else", async () => {
    const admin = connectApi(cluster.server.address, cluster.server.adminToken);
    const token = await nodeTokens(admin)('n9');
    admin.close();
    const closed = await getFreePort();
    const n9 = await startTestNode(cluster.server.address, token, { name: 'n9', ttlSeconds: 5, imapAddress: `127.0.0.1:${closed}`, addresses: { pop3: `127.0.0.1:${closed}` } });
    try {
      await waitFor(() => cluster.gateways[0]!.agent.nodeAddress('n9', 'pop3') !== undefined, 5000, 'n9 known to the gateway');
      await cluster.pin('dave', 'n9');
      // The gateway keeps only the users it serves: it asks where dave is, as a login does.
      await waitFor(async () => (await cluster.gateways[0]!.agent.assign('acme', 'dave')).node === 'n9', 5000, 'dave on n9');
      const c = await RawLines.connect(pop3(0), { localAddress: '127.0.0.5' });
      try {
        await c.line();
        expect(await c.cmd('USER dave')).toMatch(/^\+OK/);
        expect(await c.cmd('PASS dave-pw')).toBe('-ERR [SYS/TEMP] The mail server cannot be reached. Try again later.');
      } finally {
        c.close();
      }
      expect(cluster.gateways[0]!.agent.locate('acme', 'dave')?.node).toBe('n9');
    } finally {
      n9.stop();
    }
  });

  it('ends the session when the user moves: the connection closes, and deletions not committed by QUIT are not applied', async () => {
    await deliver('carol', 'keep me');
    await cluster.pin('carol', 'n1');
    const c = await RawLines.connect(pop3(1));
    try {
      await c.line();
      expect(await c.cmd('STLS')).toMatch(/^\+OK/);
      const s = await c.startTls(readFileSync(certs.caCert));
      expect(await s.cmd('USER carol')).toMatch(/^\+OK/);
      expect(await s.cmd('PASS carol-pw')).toMatch(/^\+OK/);
      const count = Number(/^\+OK (\d+)/.exec(await s.cmd('STAT'))![1]);
      expect(count).toBeGreaterThanOrEqual(1);
      expect(await s.cmd('DELE 1')).toMatch(/^\+OK/);
      await cluster.pin('carol', 'n2');
      expect(await s.closedWithin(5000)).toBe(true);
      s.close();
    } finally {
      c.close();
    }
    const again = await RawLines.connect(pop3(0));
    try {
      await again.line();
      await again.cmd('USER carol');
      expect(await again.cmd('PASS carol-pw')).toMatch(/^\+OK/);
      expect(Number(/^\+OK (\d+)/.exec(await again.cmd('STAT'))![1])).toBe(1);
    } finally {
      again.close();
    }
    await waitFor(() => /pop3-login: Info: (?:Login|Logged in): user=<carol>/.test(log(1)), 5000, 'carol logged in on n2');
  });
});
