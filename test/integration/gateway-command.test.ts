import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import { BIN, cleanEnv, runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { makePki } from '../harness/tls.js';
import { scrape } from '../harness/metrics.js';
import { tempDir } from '../harness/tmp.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let dovecot: DovecotInstance;
let root: ReturnType<typeof mailRoot>;
let tokenFor: (node: string) => Promise<string>;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  const tokens = nodeTokens(admin);
  for (const name of ['imap1', 'imap2', 'imap4', 'imap5', 'imap6', 'mail1']) await tokens(name);
  tokenFor = tokens;
  admin.close();
  root = mailRoot();
  dovecot = await startDovecot({ name: 'gw', mailRoot: root.path, users: { alice: 'alice-pw', dana: 'dana-pw' }, master: { user: 'gateway', password: 'm' }, protocols: ['pop3', 'lmtp'] });
}, 60_000);
afterAll(async () => {
  await dovecot?.stop();
  await server?.stop();
  await etcd?.stop();
  root?.remove();
});

describe('mailshare gateway (real binary)', () => {
  it('serves IMAP logins for its node and deregisters on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'gateway', '--node', 'imap1', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.address, '--ttl', '30', '--user-expire', '10m', '--log-level', 'warn', '--master-user', 'gateway', '--shared-prefix', 'Other/'], {
      env: cleanEnv({ MAILSHARE_TOKEN: await tokenFor('imap1'), MAILSHARE_MASTER_PASSWORD: 'm' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor(() => /listening on (\S+)/.test(out), 20_000, `gateway listening (${err})`);
      expect(out).toMatch(/^mailshare gateway imap1 listening on 127\.0\.0\.1:\d+ \(backend 127\.0\.0\.1:\d+, tenant acme\)\n$/);
      const [host, port] = /listening on (\S+)/.exec(out)![1]!.split(':');
      const s = net.connect(Number(port), host);
      let imap = '';
      s.on('data', (c: Buffer) => (imap += c.toString()));
      s.write('a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nn NAMESPACE\r\nc LOGOUT\r\n');
      await waitFor(() => /c OK/.test(imap), 10_000, 'IMAP conversation');
      s.destroy();
      expect(imap).toMatch(/a OK .*Logged in/);
      expect(imap).toMatch(/b OK \[READ-WRITE\]/);
      expect(imap).toMatch(/^\* NAMESPACE .* \(\("Other\/" "\/"\)\)\r$/m);
      expect(imap).toMatch(/a OK \[CAPABILITY [^\]]*\bACL RIGHTS=texk\b/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
      try {
        const nodes = await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken);
        expect(nodes.nodes.find((n) => n.name === 'imap1')?.state).toBe('down');
      } finally {
        placement.close();
      }
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);

  it('offers STARTTLS and implicit TLS with --tls-cert/--tls-key/--listen-tls, and refuses plaintext logins', async () => {
    const dir = tempDir('mailshare-gw-tls-');
    const pki = makePki(dir.path);
    const child = spawn(
      process.execPath,
      [BIN, 'gateway', '--node', 'imap2', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--listen-tls', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--coordinators', server.address, '--log-level', 'warn'],
      { env: cleanEnv({ MAILSHARE_TOKEN: await tokenFor('imap2') }), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => /listening on/.test(out), 20_000, 'gateway listening');
      const m = /listening on (\S+) and (\S+) \(TLS\)/.exec(out)!;
      expect(m).not.toBeNull();
      const [plain, implicit] = [m[1]!, m[2]!];
      const [host, port] = plain.split(':');
      const s = net.connect(Number(port), host);
      let imap = '';
      s.on('data', (c: Buffer) => (imap += c.toString()));
      s.write('a CAPABILITY\r\nb LOGIN alice alice-pw\r\n');
      await waitFor(() => /b (OK|NO|BAD)/.test(imap), 10_000, 'plaintext refusal');
      s.destroy();
      expect(imap).toMatch(/^\* CAPABILITY .*STARTTLS LOGINDISABLED/m);
      expect(imap).toMatch(/^b NO \[PRIVACYREQUIRED\]/m);
      for (const [address, secure] of [[plain, false], [implicit, true]] as const) {
        const [h, p] = address.split(':');
        const c = new ImapFlow({ host: h!, port: Number(p), secure, tls: { rejectUnauthorized: false }, auth: { user: 'alice', pass: 'alice-pw' }, logger: false });
        await c.connect();
        // Logins need TLS here, so being in proves the upgrade (STARTTLS) or the TLS port worked.
        expect(c.capabilities.has('ACL')).toBe(true);
        const box = await c.mailboxOpen('INBOX');
        expect(box.path).toBe('INBOX');
        await c.logout();
      }
    } finally {
      child.kill('SIGKILL');
      dir.remove();
    }
  }, 60_000);

  it('reaches coordinators over mutual TLS (--coordinator-ca/-cert/-key/-server-name) and goes on to the next coordinator when one is down', async () => {
    const dir = tempDir('mailshare-gw-ctls-');
    const pki = makePki(dir.path);
    // The coordinator requires a client certificate from the test CA.
    const secure = await startInProcessServer({ endpoints: etcd.endpoints, flags: { tlsCert: pki.serverCert, tlsKey: pki.serverKey, tlsClientCa: pki.caCert } });
    // A port where nothing listens: the first coordinator in the list is down.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const down = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise<void>((r) => probe.close(() => r()));
    const admin = connectApi(secure.address, secure.adminToken, grpc.credentials.createSsl(readFileSync(pki.caCert), readFileSync(pki.clientKey), readFileSync(pki.clientCert)));
    const token = (await admin.auth.createToken({ role: 'node:imap3', description: '' })).token;
    await admin.directory.createTenant({ id: 'acme', domains: [] });
    const child = spawn(
      process.execPath,
      [BIN, 'gateway', '--node', 'imap3', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', `${down},${secure.address}`, '--coordinator-ca', pki.caCert, '--coordinator-cert', pki.clientCert, '--coordinator-key', pki.clientKey, '--coordinator-server-name', 'localhost', '--log-level', 'error'],
      { env: cleanEnv({ MAILSHARE_TOKEN: token }), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => /listening on (\S+)/.test(out), 20_000, 'gateway listening');
      const [host, port] = /listening on (\S+)/.exec(out)![1]!.split(':');
      const s = net.connect(Number(port), host);
      let imap = '';
      s.on('data', (c: Buffer) => (imap += c.toString()));
      // SETACL and GETACL are answered by a coordinator: the first is down, the second speaks TLS.
      s.write('a LOGIN alice alice-pw\r\nb SETACL INBOX bob lr\r\nc GETACL INBOX\r\nd LOGOUT\r\n');
      await waitFor(() => /^d OK/m.test(imap), 20_000, `IMAP conversation (${imap})`);
      s.destroy();
      expect(imap).toMatch(/^b OK/m);
      expect(imap).toMatch(/^\* ACL "?INBOX"? .*"bob" "lr"/m);
      const got = await admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'alice/INBOX', actor: '' });
      expect(got.acl.find((e) => e.identifier === 'bob')?.rights).toBe('lr');
    } finally {
      child.kill('SIGTERM');
      admin.close();
      await secure.stop();
      dir.remove();
    }
  }, 60_000);

  it('serves POP3 and LMTP (on a unix socket) with --listen-pop3/--backend-pop3 and --listen-lmtp/--backend-lmtp, registered with the node', async () => {
    const dir = tempDir('mailshare-gw-lmtp-');
    const socket = `${dir.path}/lmtp.sock`;
    const child = spawn(
      process.execPath,
      [BIN, 'gateway', '--node', 'mail1', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--listen-pop3', '127.0.0.1:0', '--backend-pop3', dovecot.pop3Address!, '--listen-lmtp', `unix:${socket}`, '--backend-lmtp', dovecot.lmtpAddress!, '--lmtp-max-size', '1000000', '--metrics-listen', '127.0.0.1:0', '--coordinators', server.address, '--log-level', 'warn'],
      { env: cleanEnv({ MAILSHARE_TOKEN: await tokenFor('mail1') }), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => /listening on/.test(out), 20_000, 'gateway listening');
      const m = /and (\S+) \(POP3\), (unix:\S+) \(LMTP\), (\S+) \(metrics\)/.exec(out);
      expect(m?.[2]).toBe(`unix:${socket}`);
      // Like Dovecot's LMTP socket: an MTA running as another user can deliver.
      expect(statSync(socket).mode & 0o777).toBe(0o666);
      const before = await scrape(m![3]!);
      expect(before.value('mailshare_gateway_connections', { protocol: 'lmtp' })).toBe(0);
      const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
      try {
        const nodes = await unaryCall(placement.listNodes.bind(placement), {}, server.adminToken);
        expect(nodes.nodes.find((n) => n.name === 'mail1')?.addresses).toEqual({ pop3: dovecot.pop3Address, lmtp: dovecot.lmtpAddress });
        // dana on this node (other tests' nodes, without LMTP, may still be live).
        await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'dana', toNode: 'mail1', timeoutMs: 2000 }, server.adminToken);
      } finally {
        placement.close();
      }
      // Deliver over the unix socket, then read it by POP3. (Until the gateway has seen dana's move,
      // her recipient is 451, try later: as an MTA would, try again.)
      const lmtp = net.connect(socket);
      let said = '';
      lmtp.on('data', (c: Buffer) => (said += c.toString()));
      const msg = 'Subject: over the socket\r\n\r\nhello\r\n';
      lmtp.write('LHLO mta\r\n');
      await waitFor(() => /^250 SIZE 1000000\r$/m.test(said), 10_000, 'LHLO answered with SIZE');
      let accepted = false;
      for (let i = 0; i < 50 && !accepted; i++) {
        said = '';
        lmtp.write(`MAIL FROM:<x@example.com> SIZE=${msg.length}\r\nRCPT TO:<dana>\r\nDATA\r\n`);
        await waitFor(() => /^(354|503) /m.test(said), 10_000, 'DATA answered');
        accepted = /^354 /m.test(said);
        if (!accepted) {
          lmtp.write('RSET\r\n');
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      expect(said).toMatch(/^354 /m);
      lmtp.write(`${msg}.\r\nQUIT\r\n`);
      await waitFor(() => /^221 /m.test(said), 10_000, `221 (${said})`);
      lmtp.destroy();
      expect(said.split('\r\n').filter((l) => /^250 2\.0\.0 <dana> /.test(l))).toHaveLength(1);
      expect((await scrape(m![3]!)).value('mailshare_gateway_lmtp_recipients_total', { result: 'delivered' })).toBe(1);
      const [host, port] = m![1]!.split(':');
      const pop = net.connect(Number(port), host);
      let popped = '';
      pop.on('data', (c: Buffer) => (popped += c.toString()));
      pop.write('USER dana\r\nPASS dana-pw\r\nTOP 1 0\r\nQUIT\r\n');
      await waitFor(() => /\+OK Logging out/.test(popped), 10_000, `POP3 (${popped})`);
      pop.destroy();
      expect(popped).toMatch(/Subject: over the socket/);
    } finally {
      child.kill('SIGKILL');
      dir.remove();
    }
  }, 60_000);

  it('refuses to start without a token or with bad flags, in one line', async () => {
    const noToken = await runCli(['gateway', '--node', 'imap1', '--backend', '127.0.0.1:1', '--tenant', 'acme']);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toBe('mailshare: token: set MAILSHARE_TOKEN to a token with role node\n');
    const badBackend = await runCli(['gateway', '--node', 'imap1', '--backend', 'nowhere', '--tenant', 'acme'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(badBackend.code).toBe(2);
    expect(badBackend.stderr).toMatch(/^mailshare: option '--backend <host:port>' argument 'nowhere' is invalid/);
    const base = ['gateway', '--node', 'imap1', '--backend', '127.0.0.1:1', '--tenant', 'acme'];
    const noPassword = await runCli([...base, '--master-user', 'gateway'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(noPassword.code).toBe(2);
    expect(noPassword.stderr).toBe('mailshare: master-user: set MAILSHARE_MASTER_PASSWORD to its password\n');
    for (const bad of ['15', '-1m', '2 days']) {
      const badExpire = await runCli([...base, '--user-expire', bad], { env: { MAILSHARE_TOKEN: 'x' } });
      expect(badExpire.code).toBe(2);
      expect(badExpire.stderr).toBe(`mailshare: option '--user-expire <duration>' argument '${bad}' is invalid. must be a duration with its unit, e.g. 15m, 90s, or 0 (never)\n`);
    }
    const halfClient = await runCli([...base, '--coordinator-cert', '/nonexistent'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(halfClient.code).toBe(2);
    expect(halfClient.stderr).toBe('mailshare: coordinator-cert: give both --coordinator-cert and --coordinator-key\n');
    const missingCa = await runCli([...base, '--coordinator-ca', '/nonexistent'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(missingCa.code).toBe(2);
    expect(missingCa.stderr).toBe('mailshare: coordinator-ca: cannot read /nonexistent (ENOENT)\n');
    const badPrefix = await runCli([...base, '--shared-prefix', 'Shared'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(badPrefix.code).toBe(2);
    const halfTls = await runCli([...base, '--tls-cert', '/nonexistent'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(halfTls.code).toBe(2);
    expect(halfTls.stderr).toBe('mailshare: tls-cert: give both --tls-cert and --tls-key\n');
    const missing = await runCli([...base, '--tls-cert', '/nonexistent', '--tls-key', '/nonexistent'], { env: { MAILSHARE_TOKEN: 'x' } });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('mailshare: tls-cert: cannot read /nonexistent (ENOENT)\n');
    expect(badPrefix.stderr).toBe('mailshare: shared-prefix: "Shared" must be printable ASCII without * % " \\ and end with "/"\n');
    for (const [flags, line] of [
      [['--max-connections', '0'], "mailshare: option '--max-connections <n>' argument '0' is invalid. must be a positive whole number\n"],
      [['--max-connections-per-ip', 'many'], "mailshare: option '--max-connections-per-ip <n>' argument 'many' is invalid. must be a positive whole number\n"],
      [['--prelogin-timeout', '3'], "mailshare: option '--prelogin-timeout <duration>' argument '3' is invalid. must be a duration with its unit, e.g. 15m, 90s, or 0 (never)\n"],
      [['--idle-timeout', '5m'], 'mailshare: idle-timeout: must be at least 30m (RFC 3501 section 5.4)\n'],
      [['--health-interval', '0'], 'mailshare: health-interval: must be more than 0\n'],
      [['--health-user', 'probe'], 'mailshare: health-user: needs --master-user\n'],
      [['--backend-server-name', 'imap1'], 'mailshare: backend-server-name: needs --backend-ca\n'],
      [['--backend-ca', '/nonexistent'], 'mailshare: backend-ca: cannot read /nonexistent (ENOENT)\n'],
      [['--listen-lmtp', '127.0.0.1:24'], "mailshare: listen-lmtp: needs --backend-lmtp (this node's Dovecot LMTP)\n"],
      [['--listen-lmtp', 'unix:relative'], "mailshare: option '--listen-lmtp <address>' argument 'unix:relative' is invalid. must be host:port\n"],
      [['--listen-pop3', '127.0.0.1:110'], "mailshare: listen-pop3: needs --backend-pop3 (this node's Dovecot POP3)\n"],
      [['--listen-pop3s', '127.0.0.1:995', '--backend-pop3', '127.0.0.1:110'], 'mailshare: listen-pop3s: needs --tls-cert and --tls-key\n'],
      [['--lmtp-max-size', '10'], "mailshare: option '--lmtp-max-size <bytes>' argument '10' is invalid. must be a number of bytes, at least 1024\n"],
      [['--backend-pool', '65'], "mailshare: option '--backend-pool <n>' argument '65' is invalid. must be a whole number from 0 to 64\n"],
      [['--assignment-view', 'bogus'], "mailshare: option '--assignment-view <all|followed>' argument 'bogus' is invalid. give all or followed\n"],
    ] as const) {
      const r = await runCli([...base, ...flags], { env: { MAILSHARE_TOKEN: 'x' } });
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr).toBe(line);
    }
  });

  it('migrates sessions when their user moves (--migrate-sessions, the default; --master-user), ends them with --no-migrate-sessions, and on a kick', async () => {
    const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
    // What each gateway logged (warnings: a migration that falls back says why), shown when the test fails.
    const logs: string[] = [];
    const gateway = async (node: string, flags: string[]): Promise<{ address: string; stop(): Promise<void> }> => {
      const child = spawn(
        process.execPath,
        [BIN, 'gateway', '--node', node, '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.address, '--log-level', 'warn', '--master-user', 'gateway', ...flags],
        { env: cleanEnv({ MAILSHARE_TOKEN: await tokenFor(node), MAILSHARE_MASTER_PASSWORD: 'm' }), stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        logs.push(`${node} ${flags.join(' ')}: ${c.toString().trimEnd()}`);
      });
      const stop = async (): Promise<void> => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      };
      await waitFor(() => /listening on (\S+)/.test(out), 20_000, `gateway ${node} listening`).catch(async (err: unknown) => {
        await stop();
        throw err;
      });
      return { address: /listening on (\S+)/.exec(out)![1]!, stop };
    };
    const move = (to: string) => unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: to, timeoutMs: 3000 }, server.adminToken);
    // Both nodes' gateways front the one Dovecot: a move changes the assignment, not the mail.
    const other = await gateway('imap6', []);
    try {
      for (const mode of ['--migrate-sessions', '--no-migrate-sessions']) {
        const g = await gateway('imap5', [mode]);
        try {
          await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user: 'alice', mailbox: '', assign: true }, server.adminToken);
          await move('imap5');
          const c = await RawImap.login(g.address, 'alice', 'alice-pw');
          expect(await c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
          await move('imap6');
          if (mode === '--migrate-sessions') {
            expect(await c.cmd('NOOP')).toMatch(/^t\d+ OK/m);
            expect(c.closed).toBe(false);
            // A kick is an operator ending the user's sessions: those are not carried over.
            await unaryCall(placement.kick.bind(placement), { tenant: 'acme', user: 'alice', timeoutMs: 3000 }, server.adminToken);
            expect(await c.until(/^\* BYE \[UNAVAILABLE\][^\r]*\r\n/m, 5000)).toMatch(/administrator ended this session/);
          } else {
            expect(await c.until(/^\* BYE \[UNAVAILABLE\][^\r]*\r\n/m, 5000)).toMatch(/moved to another node/);
          }
          c.close();
        } finally {
          await g.stop();
        }
      }
    } catch (err) {
      process.stderr.write(`gateways' output:\n${logs.join('\n')}\n`);
      throw err;
    } finally {
      await other.stop();
      placement.close();
    }
  }, 90_000);

  it('takes its limits, timeouts and health checks from flags', async () => {
    const child = spawn(
      process.execPath,
      [BIN, 'gateway', '--node', 'imap4', '--backend', dovecot.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.address, '--log-level', 'warn',
        '--max-connections', '50', '--max-connections-per-ip', '2', '--prelogin-timeout', '1s', '--idle-timeout', '30m', '--health-interval', '500ms', '--health-failures', '2', '--backend-pool', '0', '--oauth'],
      { env: cleanEnv({ MAILSHARE_TOKEN: await tokenFor('imap4') }), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => /listening on (\S+)/.test(out), 20_000, 'gateway listening');
      const address = /listening on (\S+)/.exec(out)![1]!;
      const [a, b] = [await RawImap.connect(address), await RawImap.connect(address)];
      // --oauth: the OAuth mechanisms are offered.
      expect(await a.cmd('CAPABILITY')).toMatch(/AUTH=OAUTHBEARER AUTH=XOAUTH2/);
      const third = net.connect(Number(address.split(':')[1]), '127.0.0.1');
      let got = '';
      third.on('data', (c: Buffer) => (got += c.toString()));
      await new Promise<void>((r) => third.once('close', () => r()));
      expect(got).toMatch(/^\* BYE \[UNAVAILABLE\] Too many connections/);
      // --prelogin-timeout 1s: the two that never logged in are let go.
      await waitFor(() => a.closed && b.closed, 5000, 'pre-login timeout');
    } finally {
      child.kill('SIGTERM');
    }
  }, 60_000);
});
