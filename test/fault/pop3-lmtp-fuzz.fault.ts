import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Gateway, createGateway } from '../../src/gateway/gateway.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawLines } from '../harness/lines.js';
import { waitFor } from '../harness/process.js';

/**
 * POP3 and LMTP fuzzing through a gateway whose Dovecot connections pass a
 * recorder: whatever a client sends (random bytes, valid commands mutated,
 * cut and pipelined, message data with lone dots and bare LFs), the
 * gateway keeps serving, and every byte that reached Dovecot is a command
 * the gateway writes itself (checked against the grammar it emits) or
 * message data it rebuilt (CRLF lines, a lone dot only at the end).
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
let cluster: GatewayCluster;
let gateway: Gateway;
const recorders: Array<{ close(): void }> = [];
const upstream = { pop3: [] as Buffer[][], lmtp: [] as Buffer[][] };

/** A TCP relay to `target` that keeps what each connection sent there. */
async function recorder(target: string, into: Buffer[][]): Promise<string> {
  const [host, port] = target.split(':');
  const server = net.createServer((client) => {
    const sent: Buffer[] = [];
    into.push(sent);
    const up = net.connect(Number(port), host);
    client.on('data', (c: Buffer) => {
      sent.push(c);
      up.write(c);
    });
    up.on('data', (c: Buffer) => client.write(c));
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  recorders.push({ close: () => server.close() });
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['fz'], users: USERS, tenant: true, protocols: ['pop3', 'lmtp'], gateway: () => ({ loginPenalty: { maxMs: 0, maxUserMs: 0 } }) });
  const d = cluster.dovecots[0]!;
  const admin = connectApi(cluster.server.address, cluster.server.adminToken);
  const token = await nodeTokens(admin)('fz2');
  admin.close();
  // A second node whose POP3 and LMTP go through the recorders; users are placed there.
  gateway = createGateway({
    listen: '127.0.0.1:0',
    coordinators: [cluster.server.address],
    token,
    node: { name: 'fz2', backend: d.address },
    tenant: 'acme',
    ttlSeconds: 3,
    loginPenalty: { maxMs: 0, maxUserMs: 0 },
    pop3: { backend: await recorder(d.pop3Address!, upstream.pop3), listen: '127.0.0.1:0' },
    lmtp: { backend: await recorder(d.lmtpAddress!, upstream.lmtp), listen: '127.0.0.1:0' },
  });
  await gateway.start();
  await cluster.gateways[0]!.close();
  cluster.gateways.splice(0, 1);
  await waitFor(() => gateway.agent.liveNodes().length === 1, 10_000, 'fz gone, fz2 alone');
  await cluster.pin('alice', 'fz2');
  await cluster.pin('bob', 'fz2');
}, 120_000);
afterAll(async () => {
  await gateway?.close();
  for (const r of recorders) r.close();
  await cluster?.stop();
});

const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');

const noise = fc.oneof(
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 80 }).map((s) => `${s}\r\n`) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')) },
  { weight: 1, arbitrary: fc.constantFrom('\r\n', '\n', '\r', '\0\0\0\r\n', 'x'.repeat(9000), '.\r\n', '.\n', '..\r\n') },
);

const POP3 = [
  'USER bob', 'PASS bob-pw', 'USER alice', 'PASS wrong', `AUTH PLAIN ${b64('\0bob\0bob-pw')}`, `AUTH PLAIN ${b64('alice\0bob\0bob-pw')}`, 'AUTH PLAIN', 'AUTH LOGIN', 'AUTH',
  b64('bob'), b64('bob-pw'), '*', 'STAT', 'LIST', 'LIST 1', 'LIST 0001', 'LIST 1 2', 'UIDL', 'UIDL 1', 'RETR 1', 'RETR 99999999999', 'TOP 1 0', 'TOP 1', 'DELE 1', 'RSET',
  'NOOP', 'CAPA', 'STLS', 'APOP bob x', 'XCLIENT ADDR=1.2.3.4', 'LAST', 'RETR 1\r\nQUIT', 'STAT\rDELE 1', 'QUIT',
];
const pop3Line = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...POP3).map((c) => `${c}\r\n`) }, { weight: 2, arbitrary: noise });

const LMTP = [
  'LHLO fuzz.example', 'LHLO', 'EHLO x', 'MAIL FROM:<a@b.example>', 'MAIL FROM:<>', 'MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME', 'MAIL FROM:<a@b.example> SMTPUTF8',
  'MAIL FROM:<a@b.example> XCLIENT=1', 'RCPT TO:<bob>', 'RCPT TO:<alice>', 'RCPT TO:<nobody>', 'RCPT TO:<bob@elsewhere.example>', 'RCPT TO:<bob> ORCPT=rfc822;bob@x.example',
  'RCPT TO:<"bo b">', 'RCPT TO:bob', 'DATA', 'Subject: fuzz', '', 'body line', '.', '..', '.hidden', 'RCPT TO:<alice>\nDATA', 'BDAT 5', 'BDAT 3 LAST', 'BDAT 0 LAST',
  'RSET', 'NOOP', 'VRFY bob', 'XCLIENT ADDR=1.2.3.4', 'QUIT',
];
const lmtpLine = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...LMTP).map((c) => `${c}\r\n`) },
  { weight: 1, arbitrary: fc.constantFrom('line\n.\nRCPT TO:<alice>\r\n', 'abc', '\n.\r\n', 'x\r\n.\r\nRCPT TO:<bob>\r\n') },
  { weight: 2, arbitrary: noise },
);

async function session(address: string, lines: string[]): Promise<void> {
  const [host, port] = address.split(':');
  const s = net.connect(Number(port), host);
  s.on('error', () => undefined);
  s.on('data', () => undefined);
  await new Promise<void>((r) => s.once('connect', () => r()));
  for (const l of lines) {
    s.write(Buffer.from(l, 'latin1'));
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 40));
  s.destroy();
}

/** Every line the gateway sent to Dovecot's POP3, checked against what it writes. */
function checkPop3(conns: Buffer[][]): void {
  const ok = /^(?:XCLIENT ADDR=[0-9.]+ PORT=\d+|AUTH PLAIN [A-Za-z0-9+/]+=*|STAT|LIST(?: [1-9]\d*| 0)?|UIDL(?: [1-9]\d*| 0)?|RETR (?:[1-9]\d*|0)|TOP (?:[1-9]\d*|0) (?:[1-9]\d*|0)|DELE (?:[1-9]\d*|0)|NOOP|RSET|QUIT)$/;
  for (const sent of conns) {
    const text = Buffer.concat(sent).toString('latin1');
    expect(text === '' || text.endsWith('\r\n'), JSON.stringify(text.slice(-80))).toBe(true);
    for (const line of text.split('\r\n').slice(0, -1)) expect(line, 'a POP3 line the gateway does not write').toMatch(ok);
  }
}

/** What the gateway sent to Dovecot's LMTP: its own commands, rebuilt message data, counted BDAT chunks. */
function checkLmtp(conns: Buffer[][]): void {
  const command = /^(?:LHLO \S+|XCLIENT ADDR=[0-9.]+ PORT=\d+|MAIL FROM:<[^<>\s]*>(?: (?:SIZE=\d+|BODY=(?:7BIT|8BITMIME)|SMTPUTF8))*|RCPT TO:<[^<>\s]+>(?: ORCPT=[\x21-\x7e]+)?|DATA|BDAT \d+(?: LAST)?|RSET|QUIT)$/i;
  for (const sent of conns) {
    const b = Buffer.concat(sent);
    let pos = 0;
    let inData = false;
    while (pos < b.length) {
      const eol = b.indexOf('\r\n', pos);
      if (eol < 0) {
        // A connection cut by the gateway in the middle of message data (the node's share dropped) is fine.
        expect(inData, `unterminated command ${JSON.stringify(b.toString('latin1', pos, pos + 80))}`).toBe(true);
        break;
      }
      const line = b.toString('latin1', pos, eol);
      expect(line.includes('\n'), `bare LF in ${JSON.stringify(line.slice(0, 80))}`).toBe(false);
      pos = eol + 2;
      if (inData) {
        if (line === '.') inData = false;
        continue;
      }
      expect(line, 'an LMTP line the gateway does not write').toMatch(command);
      if (line.toUpperCase() === 'DATA') inData = true;
      const bdat = /^BDAT (\d+)/i.exec(line);
      if (bdat) pos += Number(bdat[1]);
    }
  }
}

describe('POP3 and LMTP fuzzing', () => {
  it('POP3: survives random and mutated input before and after login; Dovecot only ever gets rebuilt commands', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(pop3Line, { minLength: 1, maxLength: 20 }), async (login, lines) => {
        n++;
        await session(gateway.pop3Addresses().plain!, login ? ['USER bob\r\n', 'PASS bob-pw\r\n', ...lines] : lines);
        if (n % 25 === 0) {
          const probe = await RawLines.connect(gateway.pop3Addresses().plain!);
          await probe.line();
          expect(await probe.cmd('USER alice')).toMatch(/^\+OK/);
          expect(await probe.cmd('PASS alice-pw')).toMatch(/^\+OK/);
          expect(await probe.cmd('STAT')).toMatch(/^\+OK \d+ \d+$/);
          expect(await probe.cmd('QUIT')).toMatch(/^\+OK/);
          probe.close();
        }
      }),
      { numRuns: 300 },
    );
    await waitFor(() => gateway.activeSessions === 0, 10_000, `sessions to end (${gateway.activeSessions} open)`);
    expect(upstream.pop3.length).toBeGreaterThan(50);
    checkPop3(upstream.pop3);
  });

  it('LMTP: survives random and mutated envelopes and message data; Dovecot only ever gets rebuilt commands and data', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(lmtpLine, { minLength: 1, maxLength: 30 }), async (envelope, lines) => {
        n++;
        await session(gateway.lmtpAddress()!, envelope ? ['LHLO fuzz.example\r\n', 'MAIL FROM:<a@b.example>\r\n', 'RCPT TO:<bob>\r\n', ...lines] : lines);
        if (n % 25 === 0) {
          const probe = await RawLines.connect(gateway.lmtpAddress()!);
          await probe.line();
          probe.write('LHLO probe\r\nMAIL FROM:<p@example.com>\r\nRCPT TO:<alice>\r\nDATA\r\n');
          let l: string;
          do l = await probe.line();
          while (!/^(354|[45]\d\d) /.test(l));
          expect(l).toMatch(/^354 /);
          probe.write('Subject: probe\r\n\r\nok\r\n.\r\n');
          expect(await probe.line()).toMatch(/^250 /);
          probe.close();
        }
      }),
      { numRuns: 300 },
    );
    await new Promise((r) => setTimeout(r, 500));
    // (Connections are kept and reused: few of them, many transactions.)
    const rcpts = upstream.lmtp.reduce((a, c) => a + (Buffer.concat(c).toString('latin1').match(/^RCPT TO:/gm)?.length ?? 0), 0);
    expect(rcpts).toBeGreaterThan(50);
    checkLmtp(upstream.lmtp);
  });
});
