import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap } from '../harness/imap.js';

/**
 * SASL through the gateway: LOGIN (answered by the gateway, checked by
 * Dovecot like a password), and OAUTHBEARER / XOAUTH2 passed to the user's
 * home Dovecot, whose oauth2 passdb asks a token introspection endpoint
 * (a small HTTP server here, as an identity provider would be). A token
 * that is not the named user's fails at Dovecot, and the client sees the
 * error challenge (RFC 7628 §3.2.2) before the NO.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
const TOKENS: Record<string, string> = { 'alice-token': 'alice', 'bob-token': 'bob' };
let cluster: GatewayCluster;
let idp: http.Server;
let introspections = 0;

beforeAll(async () => {
  idp = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      introspections++;
      const token = new URLSearchParams(body).get('token') ?? '';
      const user = TOKENS[token];
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(user ? { active: true, username: user } : { active: false }));
    });
  });
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(idp.address() as { port: number }).port}/introspect`;
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true, oauthIntrospection: url, gateway: () => ({ oauth: true, loginPenalty: { baseMs: 10 } }) });
  await cluster.pin('alice', 'n2');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  idp?.close();
});

const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
const bearer = (user: string, token: string): string => b64(`n,a=${user},\x01host=127.0.0.1\x01port=143\x01auth=Bearer ${token}\x01\x01`);
const xoauth2 = (user: string, token: string): string => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`);

describe('SASL mechanisms through the gateway', () => {
  it('offers LOGIN, OAUTHBEARER and XOAUTH2 besides PLAIN', async () => {
    const c = await RawImap.connect(cluster.gateways[0]!.address());
    try {
      const caps = await c.cmd('CAPABILITY');
      for (const m of ['PLAIN', 'LOGIN', 'OAUTHBEARER', 'XOAUTH2']) expect(caps).toMatch(new RegExp(`AUTH=${m}\\b`));
    } finally {
      c.close();
    }
  });

  it('AUTHENTICATE LOGIN: user name and password asked for in turn, with and without an initial response', async () => {
    const c = await RawImap.connect(cluster.gateways[0]!.address());
    try {
      c.write('a1 AUTHENTICATE LOGIN\r\n');
      expect(await c.until(/^\+ (\S*)\r\n/m)).toBe('+ VXNlcm5hbWU6\r\n');
      c.write(`${b64('alice')}\r\n`);
      expect(await c.until(/^\+ (\S*)\r\n/m)).toBe('+ UGFzc3dvcmQ6\r\n');
      c.write(`${b64('alice-pw')}\r\n`);
      expect(await c.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a1 OK/m);
      expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    } finally {
      c.close();
    }
    const d = await RawImap.connect(cluster.gateways[0]!.address());
    try {
      d.write(`a1 AUTHENTICATE LOGIN ${b64('alice')}\r\n`);
      await d.until(/^\+ UGFzc3dvcmQ6\r\n/m);
      d.write(`${b64('wrong')}\r\n`);
      expect(await d.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a1 NO \[AUTHENTICATIONFAILED\]/m);
      d.write('a2 AUTHENTICATE LOGIN\r\n');
      await d.until(/^\+ /m);
      d.write('*\r\n');
      expect(await d.until(/^a2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a2 BAD/m);
      d.write('a3 AUTHENTICATE LOGIN !!!\r\n');
      expect(await d.until(/^a3 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a3 BAD/m);
    } finally {
      d.close();
    }
  });

  it('OAUTHBEARER and XOAUTH2: the token goes to the home Dovecot, which logs the user in', async () => {
    for (const [mech, ir] of [['OAUTHBEARER', bearer('alice', 'alice-token')], ['XOAUTH2', xoauth2('alice', 'alice-token')]] as const) {
      const before = introspections;
      // Through n1's gateway: alice lives on n2.
      const c = await RawImap.connect(cluster.gateways[0]!.address());
      try {
        c.write(`a1 AUTHENTICATE ${mech} ${ir}\r\n`);
        expect(await c.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m), mech).toMatch(/^a1 OK/m);
        expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
        expect(introspections).toBeGreaterThan(before);
      } finally {
        c.close();
      }
    }
    // Without an initial response: the client answers an empty challenge.
    const c = await RawImap.connect(cluster.gateways[0]!.address());
    try {
      c.write('a1 AUTHENTICATE OAUTHBEARER\r\n');
      await c.until(/^\+ \r\n/m);
      c.write(`${bearer('alice', 'alice-token')}\r\n`);
      expect(await c.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a1 OK/m);
    } finally {
      c.close();
    }
  });

  it("a token that is not the named user's fails at Dovecot: the error challenge, then NO", async () => {
    for (const [mech, ir, answer] of [['OAUTHBEARER', bearer('alice', 'bob-token'), 'AQ=='], ['XOAUTH2', xoauth2('alice', 'nobody-token'), '']] as const) {
      const c = await RawImap.connect(cluster.gateways[0]!.address());
      try {
        c.write(`a1 AUTHENTICATE ${mech} ${ir}\r\n`);
        const challenge = /^\+ (\S+)\r\n/m.exec(await c.until(/^\+ \S+\r\n/m))![1]!;
        expect(JSON.parse(Buffer.from(challenge, 'base64').toString())).toHaveProperty('status');
        c.write(`${answer}\r\n`);
        expect(await c.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m), mech).toMatch(/^a1 NO \[AUTHENTICATIONFAILED\]/m);
      } finally {
        c.close();
      }
    }
    // No user named at all: refused by the gateway, nothing asked.
    const c = await RawImap.connect(cluster.gateways[0]!.address());
    try {
      c.write(`a1 AUTHENTICATE OAUTHBEARER ${b64('n,,\x01auth=Bearer alice-token\x01\x01')}\r\n`);
      expect(await c.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a1 NO \[AUTHENTICATIONFAILED\]/m);
    } finally {
      c.close();
    }
  });
});
