import type net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateway, type Gateway } from '../../src/gateway/gateway.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { RawImap } from '../harness/imap.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';
import { type TestPki, makePki } from '../harness/tls.js';
import { tempDir } from '../harness/tmp.js';

/**
 * The gateway ↔ Dovecot hop over TLS (--backend-ca): passwords (the user's,
 * and the master password for owners' mailboxes) go only to a server whose
 * certificate the cluster's CA signed. A server that cannot prove it gets
 * no byte of a login.
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let pki: TestPki;
let dir: { path: string; remove(): void };
let root: { path: string; remove(): void };
let dovecot: DovecotInstance;
let tokenFor: (node: string) => Promise<string>;
const gateways: Gateway[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  await admin.directory.createTenant({ id: 'acme', domains: [] });
  tokenFor = nodeTokens(admin);
  dir = tempDir('mailshare-backend-tls-');
  pki = makePki(dir.path);
  root = mailRoot();
  dovecot = await startDovecot({ name: 'tls', mailRoot: root.path, users: { alice: 'alice-pw' }, master: { user: 'gateway', password: 'm' }, tls: { cert: pki.serverCert, key: pki.serverKey } });
}, 60_000);
afterAll(async () => {
  for (const g of gateways) await g.close().catch(() => undefined);
  await dovecot?.stop();
  await server?.stop();
  await etcd?.stop();
  root?.remove();
  dir?.remove();
});

async function gateway(node: string, backend: string, ca: string): Promise<Gateway> {
  const g = createGateway({
    listen: '127.0.0.1:0',
    coordinators: [server.address],
    token: await tokenFor(node),
    node: { name: node, backend },
    tenant: 'acme',
    ttlSeconds: 5,
    backendTls: { ca: readFileSync(ca) },
  });
  await g.start();
  gateways.push(g);
  return g;
}

/** A TLS server with a certificate of the cluster's CA that records what it is sent after the handshake. */
async function recordingServer(): Promise<{ address: string; received: () => string; close: () => void }> {
  let got = '';
  const s = tls.createServer({ cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }, (c) => {
    c.write('* OK fake\r\n');
    c.on('data', (d: Buffer) => (got += d.toString('latin1')));
    c.on('error', () => undefined);
  });
  s.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return { address: `127.0.0.1:${(s.address() as net.AddressInfo).port}`, received: () => got, close: () => s.close() };
}

describe('TLS between gateway and Dovecot (--backend-ca)', () => {
  it('logs in through a verified TLS connection to Dovecot', async () => {
    const g = await gateway('t1', dovecot.address, pki.caCert);
    const c = await RawImap.login(g.address(), 'alice', 'alice-pw');
    expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    c.close();
  });

  it('sends nothing to a server whose certificate the CA did not sign', async () => {
    const fake = await recordingServer();
    try {
      // This gateway trusts another CA: the fake server's certificate does not verify.
      const g = await gateway('t2', fake.address, pki.otherClientCert.replace('otherclient.crt', 'otherca.crt'));
      const c = await RawImap.connect(g.address());
      // bob is not assigned yet: his password is checked by this node's own Dovecot, the fake one.
      const out = await c.cmd('LOGIN bob bob-pw');
      expect(out).toMatch(/^t\d+ NO \[UNAVAILABLE\]/m);
      c.close();
      expect(fake.received()).toBe('');
      // The same server, trusted: it is sent the login (the check above can fail).
      const trusting = await gateway('t3', fake.address, pki.caCert);
      const d = await RawImap.connect(trusting.address());
      d.write('x LOGIN bob bob-pw\r\n');
      await new Promise((r) => setTimeout(r, 500));
      d.close();
      expect(fake.received()).toMatch(/LOGIN "bob" "bob-pw"/);
    } finally {
      fake.close();
    }
  });
});
