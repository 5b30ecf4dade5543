import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawLines, python } from '../harness/lines.js';
import { waitFor } from '../harness/process.js';
import { type TcpProxy, startTcpProxy } from '../harness/tcp-proxy.js';

/**
 * Mail delivery through the gateway (RFC 2033 LMTP) into real Dovecot LMTP:
 * every recipient delivered once, by the node that holds the user; mail to
 * a user nobody holds assigns one, mail to nobody assigns nothing; a node
 * that dies or a recipient that moves mid-transaction makes only its
 * recipients try again (451); the message streams through, never held
 * whole. Driven by Python's smtplib.LMTP and by raw lines.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', erin: 'erin-pw', 'dave@globex.test': 'dave-pw' };
let cluster: GatewayCluster;
let proxy: TcpProxy;

const lmtp = (i: number): string => cluster.gateways[i]!.lmtpAddress()!;
const log = (node: number): string => readFileSync(path.join(cluster.dovecots[node]!.dir, 'dovecot.log'), 'utf8');
/** Lines of a node's Dovecot log saying it saved mail for `user`. */
const saved = (node: number, user: string): string[] => log(node).split('\n').filter((l) => l.includes(`lmtp(${user})`) && /saved mail to INBOX/.test(l));
/** The user's INBOX messages (maildir new/ and cur/ under the shared mail root). */
function inbox(user: string): Array<{ file: string; size: number; text: () => string }> {
  const out: Array<{ file: string; size: number; text: () => string }> = [];
  for (const sub of ['new', 'cur']) {
    const dir = path.join(cluster.mailRoot, user, sub);
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      const file = path.join(dir, n);
      out.push({ file, size: statSync(file).size, text: () => readFileSync(file, 'latin1') });
    }
  }
  return out;
}
/** Dovecot stores maildir files with LF line ends. */
const hasSubject = (text: string, subject: string): boolean => text.includes(`Subject: ${subject}\n`) || text.includes(`Subject: ${subject}\r\n`);
const withSubject = (user: string, subject: string): number => inbox(user).filter((m) => m.size < 1 << 20 && hasSubject(m.text(), subject)).length;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    protocols: ['lmtp'],
    lmtpLimits: { maxSize: 22 << 20, maxRecipients: 5 },
    // n1's gateway reaches the coordinator through a proxy the test can cut.
    gateway: async (node, server) => {
      if (node !== 'n1') return {};
      proxy = await startTcpProxy(server.address);
      return { coordinators: [proxy.address] };
    },
  });
  const admin = connectApi(cluster.server.address, cluster.server.adminToken);
  await admin.directory.createTenant({ id: 'globex', domains: ['globex.test'] });
  admin.close();
  await waitFor(() => cluster.gateways.every((g) => g.agent.tenantOfDomain('globex.test') === 'globex'), 5000, 'globex known to the gateways');
  await cluster.pin('alice', 'n2');
  await cluster.pin('bob', 'n1');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  await proxy?.close();
});

/** Reads the greeting, says LHLO and reads its reply (its lines). */
async function lhlo(c: RawLines): Promise<string[]> {
  expect(await c.line()).toMatch(/^220 /);
  c.write('LHLO mta.example\r\n');
  const lines: string[] = [];
  let l: string;
  do lines.push((l = await c.line()));
  while (l.startsWith('250-'));
  return lines;
}

const SEND = `
import json, smtplib, sys
host, port, sender, rcpts, subject, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(','), sys.argv[5], int(sys.argv[6])
body = ('x' * 76 + '\\r\\n') * (size // 78)
msg = f'From: {sender}\\r\\nTo: undisclosed\\r\\nSubject: {subject}\\r\\n\\r\\n{body}'
s = smtplib.LMTP(host, port, timeout=60)
try:
    refused = s.sendmail(sender, rcpts, msg)
    result = {'refused': {k: [v[0], v[1].decode()] for k, v in refused.items()}}
except smtplib.SMTPRecipientsRefused as e:
    result = {'all_refused': {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}}
except smtplib.SMTPDataError as e:
    result = {'data_error': [e.smtp_code, e.smtp_error.decode()]}
s.quit()
print(json.dumps(result))
`;

async function send(gateway: number, rcpts: string[], subject: string, size = 200): Promise<{ refused?: Record<string, [number, string]>; all_refused?: Record<string, [number, string]> }> {
  const [host, port] = lmtp(gateway).split(':');
  return JSON.parse(await python(SEND, [host!, port!, 'sender@example.com', rcpts.join(','), subject, String(size)])) as never;
}

describe('LMTP through the gateway', () => {
  it("smtplib.LMTP: one transaction, recipients on two nodes, each delivered once by the node that holds them; unknown ones refused alone", async () => {
    const r = await send(0, ['alice', 'bob', 'dave@globex.test', 'nosuch', 'alice@nowhere.test'], 'two nodes');
    expect(r.refused).toBeDefined();
    expect(Object.keys(r.refused!).sort()).toEqual(['alice@nowhere.test', 'nosuch']);
    for (const code of Object.values(r.refused!)) expect(code[0]).toBe(550);
    expect(r.refused!.nosuch![1]).toMatch(/^5\.1\.1 /);
    expect(withSubject('alice', 'two nodes')).toBe(1);
    expect(withSubject('bob', 'two nodes')).toBe(1);
    expect(withSubject('dave@globex.test', 'two nodes')).toBe(1);
    // Alice's mail was written by n2, bob's by n1: never by the other.
    await waitFor(() => saved(1, 'alice').length === 1 && saved(0, 'bob').length === 1, 5000, 'delivery logs');
    expect(saved(0, 'alice')).toHaveLength(0);
    expect(saved(1, 'bob')).toHaveLength(0);
    // Nobody was assigned for the unknown names.
    const where = await unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user: 'nosuch', mailbox: '', assign: false }, cluster.server.adminToken);
    expect(where.node).toBe('');
  });

  it('mail to a user nobody holds assigns a node, lands there, and the user stays there', async () => {
    const before = await unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user: 'erin', mailbox: '', assign: false }, cluster.server.adminToken);
    expect(before.node).toBe('');
    expect((await send(1, ['erin'], 'first mail')).refused).toEqual({});
    const after = await unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user: 'erin', mailbox: '', assign: false }, cluster.server.adminToken);
    expect(['n1', 'n2']).toContain(after.node);
    const node = after.node === 'n1' ? 0 : 1;
    await waitFor(() => saved(node, 'erin').length === 1, 5000, 'erin delivered');
    expect(saved(1 - node, 'erin')).toHaveLength(0);
    expect(withSubject('erin', 'first mail')).toBe(1);
  });

  it('rebuilds the message data: a bare-LF dot line cannot end it upstream, so nothing after it is read as commands', async () => {
    const c = await RawLines.connect(lmtp(0));
    try {
      await lhlo(c);
      expect(await c.cmd('MAIL FROM:<x@example.com>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<alice>')).toMatch(/^250 /);
      expect(await c.cmd('DATA')).toMatch(/^354 /);
      c.write('Subject: smuggle\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<bob>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n');
      // One reply: the message ended at the real end of data only.
      expect(await c.line()).toMatch(/^250 /);
      expect(await c.cmd('QUIT')).toMatch(/^221 /);
    } finally {
      c.close();
    }
    expect(withSubject('alice', 'smuggle')).toBe(1);
    const m = inbox('alice').find((x) => hasSubject(x.text(), 'smuggle'))!;
    expect(m.text()).toContain('RCPT TO:<bob>');
    expect(withSubject('bob', 'smuggled')).toBe(0);
  });

  it('a client that pipelines DATA behind its RCPTs is answered at once; a recipient the server then refuses gets that after the data, alone; a client that waits gets the refusal at RCPT', async () => {
    // carol is n1's, but n1's Dovecot no longer knows her (a user removed from the backend).
    await cluster.pin('carol', 'n1');
    const passwd = path.join(cluster.dovecots[0]!.dir, 'users.passwd');
    const before = readFileSync(passwd, 'utf8');
    writeFileSync(passwd, before.split('\n').filter((l) => !l.startsWith('carol:')).join('\n'));
    const c = await RawLines.connect(lmtp(1));
    try {
      await lhlo(c);
      // An address probe (RCPT, then waiting for its reply) hears the server's verdict itself
      // (once Dovecot has read its changed passwd-file: it looks at most once a second).
      await waitFor(async () => {
        expect(await c.cmd('MAIL FROM:<>')).toMatch(/^250 /);
        const r = await c.cmd('RCPT TO:<carol>');
        expect(await c.cmd('RSET')).toMatch(/^250 /);
        return /^550 5\.1\.1 /.test(r);
      }, 5000, "n1's Dovecot refuses carol");
      c.write('MAIL FROM:<x@example.com>\r\nRCPT TO:<carol>\r\nRCPT TO:<bob>\r\nRCPT TO:<alice>\r\nDATA\r\n');
      const envelope = [await c.line(), await c.line(), await c.line(), await c.line(), await c.line()];
      expect(envelope.map((l) => l.slice(0, 4))).toEqual(['250 ', '250 ', '250 ', '250 ', '354 ']);
      c.write('Subject: pipelined\r\n\r\nhello\r\n.\r\n');
      // One reply per recipient in RCPT order: carol's is n1's refusal of her RCPT.
      const [carol, bob, alice] = [await c.line(), await c.line(), await c.line()];
      expect(carol).toMatch(/^550 5\.1\.1 /);
      expect(bob).toMatch(/^250 /);
      expect(alice).toMatch(/^250 /);
      expect(await c.cmd('MAIL FROM:<>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<carol>')).toMatch(/^550 5\.1\.1 /);
      expect(await c.cmd('RCPT TO:<bob>')).toMatch(/^250 /);
      expect(await c.cmd('RSET')).toMatch(/^250 /);
      expect(await c.cmd('QUIT')).toMatch(/^221 /);
    } finally {
      c.close();
      writeFileSync(passwd, before);
    }
    await waitFor(() => withSubject('bob', 'pipelined') === 1 && withSubject('alice', 'pipelined') === 1, 5000, 'delivered to bob and alice');
    expect(withSubject('carol', 'pipelined')).toBe(0);
    expect(saved(0, 'bob').length).toBeGreaterThan(0);
  });

  it('BDAT (CHUNKING): chunks streamed to every node, one reply per recipient after LAST', async () => {
    const c = await RawLines.connect(lmtp(1));
    try {
      const caps = await lhlo(c);
      expect(caps.join('\n')).toMatch(/CHUNKING/);
      expect(caps.join('\n')).toMatch(/SIZE \d+/);
      c.write('MAIL FROM:<x@example.com> BODY=8BITMIME\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\n');
      expect(await c.line()).toMatch(/^250 /);
      expect(await c.line()).toMatch(/^250 /);
      expect(await c.line()).toMatch(/^250 /);
      const part1 = 'Subject: chunked\r\n\r\nfirst ';
      const part2 = 'second\r\n.not a dot line\r\n';
      c.write(`BDAT ${part1.length}\r\n${part1}`);
      expect(await c.line()).toMatch(/^250 /);
      c.write(`BDAT ${part2.length} LAST\r\n${part2}`);
      expect(await c.line()).toMatch(/^250 /);
      expect(await c.line()).toMatch(/^250 /);
    } finally {
      c.close();
    }
    for (const u of ['alice', 'bob']) {
      const m = inbox(u).find((x) => hasSubject(x.text(), 'chunked'));
      expect(m?.text().replace(/\r\n/g, '\n')).toContain('first second\n.not a dot line\n');
    }
  });

  it('refuses what it does not take: sizes over the limit, unknown parameters, commands out of order', async () => {
    const c = await RawLines.connect(lmtp(0));
    try {
      await c.line();
      expect(await c.cmd('MAIL FROM:<x@example.com>')).toMatch(/^503 5\.5\.1/);
      expect(await c.cmd('EHLO x')).toMatch(/^500 /);
      c.write('LHLO mta.example\r\n');
      let l: string;
      do l = await c.line();
      while (l.startsWith('250-'));
      expect(await c.cmd('RCPT TO:<alice>')).toMatch(/^503 /);
      expect(await c.cmd('MAIL FROM:<x@example.com> SIZE=999999999999')).toMatch(/^552 5\.3\.4/);
      expect(await c.cmd('MAIL FROM:<x@example.com> XYZZY=1')).toMatch(/^555 /);
      expect(await c.cmd('MAIL FROM:x@example.com')).toMatch(/^501 /);
      expect(await c.cmd('MAIL FROM:<x@example.com>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<alice> NOTIFY=NEVER')).toMatch(/^555 /);
      expect(await c.cmd('DATA')).toMatch(/^503 5\.5\.1/);
      expect(await c.cmd(`NOOP ${'x'.repeat(5000)}`)).toMatch(/^500 5\.5\.2/);
      expect(await c.cmd('RSET')).toMatch(/^250 /);
      expect(await c.cmd('QUIT')).toMatch(/^221 /);
    } finally {
      c.close();
    }
  });

  it('limits: recipients per transaction (452), and message data beyond the size limit (552 per recipient, nothing delivered)', async () => {
    const c = await RawLines.connect(lmtp(0));
    try {
      await lhlo(c);
      expect(await c.cmd('MAIL FROM:<x@example.com>')).toMatch(/^250 /);
      for (let i = 0; i < 5; i++) expect(await c.cmd(i % 2 ? 'RCPT TO:<bob>' : 'RCPT TO:<alice>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<carol>')).toMatch(/^452 4\.5\.3 /);
      expect(await c.cmd('RSET')).toMatch(/^250 /);
      // No SIZE announced: the limit is found while the data streams, counted over every byte.
      expect(await c.cmd('MAIL FROM:<x@example.com>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<alice>')).toMatch(/^250 /);
      expect(await c.cmd('RCPT TO:<bob>')).toMatch(/^250 /);
      expect(await c.cmd('DATA')).toMatch(/^354 /);
      c.write('Subject: too big\r\n\r\n');
      const block = `${'y'.repeat(1022)}\r\n`.repeat(1024);
      for (let i = 0; i < 23; i++) {
        if (!c.socket.write(block)) await new Promise((r) => c.socket.once('drain', r));
      }
      c.write('.\r\n');
      expect(await c.line(30_000)).toMatch(/^552 5\.3\.4 <alice> /);
      expect(await c.line()).toMatch(/^552 5\.3\.4 <bob> /);
      expect(await c.cmd('NOOP')).toMatch(/^250 /);
    } finally {
      c.close();
    }
    expect(withSubject('alice', 'too big') + withSubject('bob', 'too big')).toBe(0);
  });

  it("passes the MTA's address on to Dovecot (XCLIENT): its log names the client, not the gateway", async () => {
    const [host, port] = lmtp(1).split(':');
    const c = await RawLines.connect(`${host}:${port}`, { localAddress: '127.0.0.9' });
    try {
      await c.line();
      c.write('LHLO mta.example\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<bob>\r\nDATA\r\n');
      let l: string;
      do l = await c.line();
      while (!l.startsWith('354'));
      c.write('Subject: from nine\r\n\r\nhi\r\n.\r\n');
      expect(await c.line()).toMatch(/^250 /);
    } finally {
      c.close();
    }
    // bob is on n1: n1's Dovecot took the delivery from n2's gateway, and saw 127.0.0.9.
    await waitFor(() => saved(0, 'bob').some((x) => x.includes('rip=127.0.0.9:')), 5000, "the client's address in n1's delivery log");
  });

  it('a recipient that moves before the end of data gets 451, the others are delivered; the retry lands on the new node', async () => {
    const c = await RawLines.connect(lmtp(0));
    try {
      await lhlo(c);
      c.write('MAIL FROM:<x@example.com>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n');
      for (let i = 0; i < 3; i++) expect(await c.line()).toMatch(/^250 /);
      expect(await c.line()).toMatch(/^354 /);
      c.write('Subject: moving\r\n\r\npart one\r\n');
      await cluster.pin('alice', 'n1');
      await waitFor(() => cluster.gateways[0]!.agent.locate('acme', 'alice')?.node === 'n1', 5000, 'alice moved');
      c.write('part two\r\n.\r\n');
      expect(await c.line()).toMatch(/^451 4\.4\.0 <alice> /);
      expect(await c.line()).toMatch(/^250 /);
    } finally {
      c.close();
    }
    expect(withSubject('alice', 'moving')).toBe(0);
    expect(withSubject('bob', 'moving')).toBe(1);
    expect((await send(0, ['alice'], 'moving')).refused).toEqual({});
    expect(withSubject('alice', 'moving')).toBe(1);
    await waitFor(() => saved(0, 'alice').length === 1, 5000, 'delivered by n1');
    await cluster.pin('alice', 'n2');
  });

  it('streams a 20 MB message through without holding it', async () => {
    // Live memory, sampled after a collection each time (garbage waiting for the collector is not held).
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().arrayBuffers;
    let peak = before;
    const sampler = setInterval(() => {
      gc();
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    }, 10);
    try {
      expect((await send(0, ['alice', 'bob'], 'big one', 20 << 20)).refused).toEqual({});
    } finally {
      clearInterval(sampler);
    }
    for (const u of ['alice', 'bob']) expect(inbox(u).some((m) => m.size > 20_000_000)).toBe(true);
    // Held whole it would be 20 MB more; what is in flight (1 MiB read ahead, socket buffers) is far less.
    expect(peak - before).toBeLessThan(8 << 20);
  });

  it('a node that cannot prove its lease delivers nothing: every recipient gets 451, and it delivers again once back', async () => {
    proxy.blackhole();
    try {
      await waitFor(() => !cluster.gateways[0]!.agent.serving, 15_000, 'n1 stops serving');
      const r = await send(0, ['alice', 'bob'], 'no lease');
      expect(r.all_refused).toBeDefined();
      for (const v of Object.values(r.all_refused!)) expect(v[0]).toBe(451);
    } finally {
      proxy.restore();
    }
    expect(withSubject('alice', 'no lease') + withSubject('bob', 'no lease')).toBe(0);
    await waitFor(() => cluster.gateways[0]!.agent.serving, 20_000, 'n1 serves again');
    await waitFor(async () => (await send(0, ['alice'], 'lease back')).refused !== undefined, 20_000, 'delivery again');
    expect(withSubject('alice', 'lease back')).toBe(1);
  });

  it("kill -9 of a node's Dovecot mid-DATA: its recipients get 451, the others 250, and nothing is delivered twice", async () => {
    await cluster.pin('alice', 'n2');
    await cluster.pin('bob', 'n1');
    const c = await RawLines.connect(lmtp(0));
    try {
      await lhlo(c);
      c.write('MAIL FROM:<x@example.com>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n');
      for (let i = 0; i < 3; i++) expect(await c.line()).toMatch(/^250 /);
      expect(await c.line()).toMatch(/^354 /);
      c.write('Subject: killed\r\n\r\nhalf\r\n');
      const n2 = cluster.dovecots[1]!;
      // The whole Dovecot: its master (a session leader: it daemonized) and every process it started.
      const master = n2.currentPid();
      if (readFileSync(`/proc/${master}/cmdline`, 'utf8').includes('dovecot')) {
        try {
          process.kill(-master, 'SIGKILL');
        } catch {
          n2.kill();
        }
      }
      await new Promise((r) => setTimeout(r, 300));
      c.write('rest\r\n.\r\n');
      expect(await c.line()).toMatch(/^451 /);
      expect(await c.line()).toMatch(/^250 /);
    } finally {
      c.close();
    }
    expect(withSubject('alice', 'killed')).toBe(0);
    expect(withSubject('bob', 'killed')).toBe(1);
  });
});
