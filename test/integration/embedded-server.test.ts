import { statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findProcesses, isAlive, waitFor } from '../harness/process.js';
import { runCli, spawnServer, type ServerProcess } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { scrape } from '../harness/metrics.js';

const dir = tempDir('mailshare-embedded-');
const running: ServerProcess[] = [];
afterAll(async () => {
  await Promise.all(running.map((s) => s.stop()));
  dir.remove();
});

/** The README flow: run in a directory, default data dir ./.mailshare, CLI finds the credentials there. */
const cwd = dir.path;
const dataDir = path.join(cwd, '.mailshare');
const env = { XDG_CONFIG_HOME: path.join(cwd, 'xdg') };
const cli = (...args: string[]) => runCli(args, { cwd, env });

describe('embedded etcd lifecycle (real binary)', () => {
  let adminTokenId = '';
  let nodeTokenId = '';

  it('starts on a fresh directory, writes 0600 credentials, and status reports healthy', async () => {
    const srv = await spawnServer(['--listen', '127.0.0.1:0'], { cwd, env });
    running.push(srv);
    expect(srv.stdout()).toMatch(/listening on 127\.0\.0\.1:\d+ \(embedded etcd http:\/\/127\.0\.0\.1:\d+, data .*\.mailshare\); credentials in .*credentials\.json/);
    expect(srv.etcdPid).toBeDefined();
    expect(isAlive(srv.etcdPid!)).toBe(true);
    expect(statSync(path.join(dataDir, 'credentials.json')).mode & 0o777).toBe(0o600);

    const text = await cli('status');
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/health:\s+healthy/);
    expect(text.stdout).toMatch(/etcd:\s+embedded, cluster [0-9a-f]+, leader mailshare/);
    expect(text.stdout).toMatch(/http:\/\/127\.0\.0\.1:\d+\s+healthy\s+mailshare\s+yes\s+3\.\d+\.\d+\s+\d/);

    const json = await cli('status', '-o', 'json');
    const st = JSON.parse(json.stdout);
    expect(st).toMatchObject({ addr: srv.addr, state: 'serving', healthy: true, embeddedEtcd: true });
    expect(st.etcd.endpoints).toHaveLength(1);
    expect(st.etcd.endpoints[0]).toMatchObject({ healthy: true, isLeader: true, memberName: 'mailshare' });
    expect(st.etcd.endpoints[0].dbSizeBytes).toBeGreaterThan(0);
    expect(st.etcd.leaderId).toBe(st.etcd.endpoints[0].memberId);

    adminTokenId = JSON.parse((await cli('token', 'whoami', '-o', 'json')).stdout).tokenId;
    const created = await cli('token', 'create', '--role', 'node', '--node', 'imap1', '--tenants', 'acme,beta', '--description', 'imap1', '-o', 'json');
    expect(created.code).toBe(0);
    nodeTokenId = JSON.parse(created.stdout).info.id;
  });

  it('on SIGTERM stops gRPC, then etcd, and exits 0 leaving no etcd behind', async () => {
    const srv = running.pop()!;
    const etcdPid = srv.etcdPid!;
    const { code, signal } = await srv.stop();
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(isAlive(etcdPid)).toBe(false);
    expect(findProcesses('etcd', dataDir)).toEqual([]);
    expect(srv.stderr()).toMatch(/shutting down[\s\S]*"component":"coordinator","msg":"stopped"[\s\S]*stopping embedded etcd/);
    const down = await cli('status');
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^mailshare: cannot reach mailshare server at 127\.0\.0\.1:\d+: .+\n$/);
  });

  it('finds its data again after a restart (tokens, bootstrap credentials), and serves /metrics with --http-listen', async () => {
    const srv = await spawnServer(['--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'], { cwd, env });
    running.push(srv);
    const http = /; http on (127\.0\.0\.1:\d+);/.exec(srv.stdout())?.[1];
    expect(http).toBeDefined();
    const m = await scrape(http!);
    expect(m.value('mailshare_etcd_up')).toBe(1);
    expect(JSON.parse((await cli('token', 'whoami', '-o', 'json')).stdout).tokenId).toBe(adminTokenId);
    const list = await cli('token', 'list', '-o', 'json');
    const ids = JSON.parse(list.stdout).tokens.map((t: { id: string }) => t.id);
    expect(ids).toContain(nodeTokenId);
    expect(ids).toContain(adminTokenId);
  });

  it('takes the embedded etcd down with it even when killed with SIGKILL', async () => {
    const srv = running.pop()!;
    const etcdPid = srv.etcdPid!;
    srv.child.kill('SIGKILL');
    await srv.exited;
    await waitFor(() => !isAlive(etcdPid), 10_000, 'etcd to die after its server');
  });

  it('cleans up the etcd it started when startup fails half way (port in use)', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const failedDir = path.join(dir.path, 'failed');
      const r = await runCli(['server', '--listen', `127.0.0.1:${port}`, '--data-dir', failedDir, '--log-format', 'json'], { cwd, env });
      expect(r.code).toBe(1);
      const lastLine = r.stderr.trim().split('\n').pop()!;
      expect(lastLine).toMatch(/^mailshare: listen: cannot listen on 127\.0\.0\.1:\d+/);
      expect(r.stderr).toMatch(/embedded etcd ready/);
      expect(findProcesses('etcd', failedDir)).toEqual([]);
    } finally {
      blocker.close();
    }
  });

  it('rejects invalid configuration with exit 2 and one line, starting nothing', async () => {
    const bad = path.join(dir.path, 'never');
    const r = await runCli(['server', '--listen', 'nowhere', '--data-dir', bad], { cwd, env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^mailshare: config: --listen: "nowhere" is not host:port.*\n$/);
    expect(r.stdout).toBe('');
    expect(findProcesses('etcd', bad)).toEqual([]);

    const noEtcd = await runCli(['server', '--listen', '127.0.0.1:0', '--data-dir', bad, '--etcd-binary', '/nonexistent/etcd', '--log-level', 'silent'], { cwd, env });
    expect(noEtcd.code).toBe(1);
    expect(noEtcd.stderr).toMatch(/^mailshare: cannot start etcd \(\/nonexistent\/etcd\)/);
  });
});
