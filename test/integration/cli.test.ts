import { readFileSync, writeFileSync } from 'node:fs';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { runCli, spawnServer, type ServerProcess } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

const dir = tempDir('mailshare-cli-');
const env = { XDG_CONFIG_HOME: path.join(dir.path, 'xdg') };
const cli = (args: string[], extraEnv: Record<string, string> = {}) => runCli(args, { cwd: dir.path, env: { ...env, ...extraEnv } });
const version = (JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

afterAll(() => dir.remove());

describe('command line parsing', () => {
  it('prints the version and help', async () => {
    const v = await cli(['--version']);
    expect(v).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: '' });
    const h = await cli(['--help']);
    expect(h.code).toBe(0);
    for (const cmd of ['server', 'status', 'token']) expect(h.stdout).toContain(cmd);
    const sh = await cli(['server', '--help']);
    for (const flag of ['--etcd', '--listen', '--config', '--data-dir', '--tls-cert', '--tls-key', '--tls-client-ca', '--log-level']) expect(sh.stdout).toContain(flag);
  });

  it.each([
    [['--bogus'], /unknown option '--bogus'/],
    [['status', '--nope'], /unknown option '--nope'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['token', 'create'], /required option '--role <role>' not specified/],
    [['status', '-o', 'yaml'], /argument 'yaml' is invalid/],
    // Control characters in a reported argument are escaped, and a suggestion stays on the same line.
    [['token', 'revoke', '-o', '\u0014\n3cK', 'x'], /argument '\\x14 3cK' is invalid/],
    [['tenant', 'lst'], /unknown command 'lst' \(Did you mean list\?\)/],
    [['status', '--addr', 'no port'], /addr: "no port" is not host:port/],
    [['status', '--timeout', 'later'], /timeout: "later" is not a duration/],
    [['status', '--tls-cert', 'x.pem'], /--tls-cert and --tls-key must be given together/],
  ])('%j: exit 2 with one line on stderr', async (args, message) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^mailshare: [^\n]+\n$/);
    expect(r.stderr).toMatch(message);
  });

  it('reports a server that is down with exit 1 and one line', async () => {
    const r = await cli(['status', '--addr', '127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^mailshare: cannot reach mailshare server at 127\.0\.0\.1:1: connect ECONNREFUSED\n$/);
  });
});

describe('server against an existing etcd cluster', () => {
  let etcd: EtcdCluster;
  let srv: ServerProcess;
  let token: string;

  beforeAll(async () => {
    etcd = await startEtcd({ members: 3 });
    const cfg = path.join(dir.path, 'server.yaml');
    // Endpoints from the file, prefix from the environment, listen from a flag.
    writeFileSync(cfg, `etcd:\n  endpoints:\n${etcd.endpoints.map((e) => `    - ${e}\n`).join('')}  prefix: /from-file/\nlog:\n  level: warn\n`);
    srv = await spawnServer(['--config', cfg, '--listen', '127.0.0.1:0', '--credentials-file', path.join(dir.path, 'creds.json')], {
      cwd: dir.path,
      env: { ...env, MAILSHARE_ETCD_PREFIX: '/from-env/' },
    });
    token = JSON.parse(readFileSync(path.join(dir.path, 'creds.json'), 'utf8')).token;
  });
  afterAll(async () => {
    await srv?.stop();
    await etcd?.stop();
  });

  it('uses the configured cluster and prefix, and bootstraps credentials once', async () => {
    expect(srv.stdout()).toContain(`(etcd ${etcd.endpoints.join(',')})`);
    // log.level warn from the file: no info lines.
    expect(srv.stderr()).not.toContain('"level":30');
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      expect((await c.getAll().prefix('/from-env/').keys()).length).toBeGreaterThan(0);
      expect(await c.getAll().prefix('/from-file/').keys()).toEqual([]);
    } finally {
      c.close();
    }
  });

  it('status shows every endpoint with its health and the leader, also with a member down', async () => {
    const st = JSON.parse((await cli(['status', '-o', 'json', '--addr', srv.addr], { MAILSHARE_TOKEN: token })).stdout);
    expect(st.embeddedEtcd).toBe(false);
    expect(st.etcd.endpoints.map((e: { endpoint: string }) => e.endpoint)).toEqual(etcd.endpoints);
    expect(st.etcd.endpoints.every((e: { healthy: boolean }) => e.healthy)).toBe(true);
    expect(st.etcd.endpoints.filter((e: { isLeader: boolean }) => e.isLeader)).toHaveLength(1);
    expect(['m0', 'm1', 'm2']).toContain(st.etcd.leaderName);

    await etcd.members[2]!.stop();
    const r = await cli(['status', '--addr', srv.addr], { MAILSHARE_TOKEN: token });
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.find((l) => l.startsWith(etcd.endpoints[2]!))).toMatch(/unhealthy: /);
    expect(lines.filter((l) => /^http:\S+\s+healthy/.test(l))).toHaveLength(2);
    expect(r.stdout).toMatch(/health:\s+healthy/);
    await etcd.restart(2);
  });

  it('manages tokens from the CLI: create, whoami, list, revoke', async () => {
    const t = { MAILSHARE_TOKEN: token, MAILSHARE_ADDR: srv.addr };
    const created = await cli(['token', 'create', '--role', 'tenant-admin:acme'], t);
    expect(created.code).toBe(0);
    const tenantToken = created.stdout.trim();
    expect(tenantToken).toMatch(/^mst_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const who = await cli(['token', 'whoami'], { ...t, MAILSHARE_TOKEN: tenantToken });
    expect(who.stdout).toMatch(/^tenant-admin:acme \(token [0-9a-f]{16}\)\n$/);
    const denied = await cli(['token', 'list'], { ...t, MAILSHARE_TOKEN: tenantToken });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^mailshare: PERMISSION_DENIED: role tenant-admin:acme may not do this.*\n$/);
    const list = await cli(['token', 'list'], t);
    const id = tenantToken.slice(4, 20);
    expect(list.stdout).toMatch(new RegExp(`^${id}\\s+tenant-admin:acme\\s`, 'm'));
    const bad = await cli(['token', 'create', '--role', 'superuser'], t);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: role: unknown role "superuser".*\n$/);
    expect((await cli(['token', 'revoke', id], t)).stdout).toBe(`revoked ${id}\n`);
    const after = await cli(['token', 'revoke', id], t);
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/NOT_FOUND: token .* does not exist/);
    const unauth = await cli(['token', 'whoami'], { ...t, MAILSHARE_TOKEN: 'garbage' });
    expect(unauth.code).toBe(1);
    expect(unauth.stderr).toMatch(/^mailshare: not authenticated: invalid bearer token/);
  });
});
