import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthServiceClient } from '../../src/gen/mailshare/v1/auth.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { codeOf, unaryCall } from '../harness/grpc.js';
import { runCli, startInProcessServer } from '../harness/server.js';
import { makePki, type TestPki } from '../harness/tls.js';
import { tempDir } from '../harness/tmp.js';

let etcd: EtcdCluster;
let pki: TestPki;
const dir = tempDir('mailshare-pki-');

beforeAll(async () => {
  pki = makePki(dir.path);
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
  dir.remove();
});

const whoami = (addr: string, creds: grpc.ChannelCredentials, token: string) => {
  const c = new AuthServiceClient(addr, creds);
  return unaryCall(c.whoAmI.bind(c), {}, token, 5000).finally(() => c.close());
};
const read = (f: string) => readFileSync(f);

describe('TLS', () => {
  it('serves TLS that a client trusting the CA accepts and a plaintext client cannot use', async () => {
    const s = await startInProcessServer({ endpoints: etcd.endpoints, flags: { tlsCert: pki.serverCert, tlsKey: pki.serverKey } });
    try {
      const ok = await whoami(s.address, grpc.credentials.createSsl(read(pki.caCert)), s.adminToken);
      expect(ok.role).toBe('admin');
      expect((await codeOf(whoami(s.address, grpc.credentials.createInsecure(), s.adminToken))).code).toBe(grpc.status.UNAVAILABLE);
      // A client that does not trust the issuing CA fails the handshake.
      const untrusted = await codeOf(whoami(s.address, grpc.credentials.createSsl(read(pki.otherClientCert)), s.adminToken));
      expect(untrusted.code).toBe(grpc.status.UNAVAILABLE);

      // The CLI, with --tls-ca and the token from the environment.
      const cli = await runCli(['token', 'whoami', '--addr', s.address, '--tls-ca', pki.caCert, '-o', 'json'], {
        env: { MAILSHARE_TOKEN: s.adminToken, MAILSHARE_CREDENTIALS: '/nonexistent-but-overridden' },
      });
      // MAILSHARE_CREDENTIALS names a missing file: the CLI must say so.
      expect(cli.code).toBe(2);
      expect(cli.stderr.trim().split('\n')).toHaveLength(1);
      const cli2 = await runCli(['token', 'whoami', '--addr', s.address, '--tls-ca', pki.caCert, '-o', 'json'], {
        env: { MAILSHARE_TOKEN: s.adminToken, HOME: dir.path, XDG_CONFIG_HOME: dir.path },
        cwd: dir.path,
      });
      expect(cli2.stderr).toBe('');
      expect(JSON.parse(cli2.stdout)).toMatchObject({ role: 'admin' });
    } finally {
      await s.stop();
    }
  });

  it('with --tls-client-ca requires a client certificate from that CA (mutual TLS)', async () => {
    const s = await startInProcessServer({
      endpoints: etcd.endpoints,
      flags: { tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.caCert },
    });
    try {
      const good = grpc.credentials.createSsl(read(pki.caCert), read(pki.clientKey), read(pki.clientCert));
      expect((await whoami(s.address, good, s.adminToken)).role).toBe('admin');

      const noCert = await codeOf(whoami(s.address, grpc.credentials.createSsl(read(pki.caCert)), s.adminToken));
      expect(noCert.code).toBe(grpc.status.UNAVAILABLE);
      const foreign = grpc.credentials.createSsl(read(pki.caCert), read(pki.otherClientKey), read(pki.otherClientCert));
      expect((await codeOf(whoami(s.address, foreign, s.adminToken))).code).toBe(grpc.status.UNAVAILABLE);

      // mTLS does not replace the token: a good certificate without a token is still UNAUTHENTICATED.
      const c = new AuthServiceClient(s.address, good);
      try {
        expect((await codeOf(unaryCall(c.whoAmI.bind(c), {}))).code).toBe(grpc.status.UNAUTHENTICATED);
      } finally {
        c.close();
      }

      const cli = await runCli(
        ['token', 'whoami', '--addr', s.address, '--tls-ca', pki.caCert, '--tls-cert', pki.clientCert, '--tls-key', pki.clientKey],
        { env: { MAILSHARE_TOKEN: s.adminToken, XDG_CONFIG_HOME: dir.path }, cwd: dir.path },
      );
      expect(cli.stderr).toBe('');
      expect(cli.stdout).toMatch(/^admin \(token [0-9a-f]{16}\)\n$/);
    } finally {
      await s.stop();
    }
  });
});
