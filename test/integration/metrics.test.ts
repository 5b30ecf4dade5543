import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../harness/server.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap } from '../harness/imap.js';
import { python } from '../harness/lines.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { Sidecar } from '../../src/sidecar/sidecar.js';
import { httpGet, scrape } from '../harness/metrics.js';
import { waitFor } from '../harness/process.js';

/**
 * Prometheus metrics of a real cluster (etcd, a coordinator, two gateways
 * with their Dovecots): every scrape passes `promtool check metrics`, and
 * the figures move with real traffic (IMAP logins and commands, a shared
 * folder opened across nodes, LMTP deliveries, gRPC calls).
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
let cluster: GatewayCluster;
const coordinator = (): string => cluster.server.httpAddress!;
const gatewayMetrics = (i: number): string => cluster.gateways[i]!.metricsAddress()!;

const DELIVER = `
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
s = smtplib.LMTP(host, port, timeout=30)
refused = s.sendmail('sender@example.com', sys.argv[3].split(','), 'Subject: metrics\\r\\n\\r\\nhello\\r\\n')
s.quit()
print(len(refused))
`;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    protocols: ['lmtp'],
    serverFlags: { httpListen: '127.0.0.1:0' },
    gateway: () => ({ metricsListen: '127.0.0.1:0', loginPenalty: { maxMs: 0, maxUserMs: 0 } }),
  });
  await cluster.pin('alice', 'n1');
  await cluster.pin('bob', 'n2');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

describe('coordinator /metrics', () => {
  it('shows the nodes, their users against the bounded-load capacity, etcd, and the event streams', async () => {
    const m = await scrape(coordinator());
    expect(m.value('mailshare_nodes', { state: 'active' })).toBe(2);
    expect(m.value('mailshare_nodes', { state: 'down' })).toBe(0);
    expect(m.value('mailshare_node_users', { node: 'n1' })).toBe(1);
    expect(m.value('mailshare_node_users', { node: 'n2' })).toBe(1);
    expect(m.value('mailshare_assignments')).toBe(2);
    // (1 + 0.25) × (2 + 1) × ½ → 2 each.
    expect(m.value('mailshare_node_capacity_users', { node: 'n1' })).toBe(2);
    expect(m.value('mailshare_etcd_up')).toBe(1);
    expect(m.value('mailshare_etcd_head_revision')).toBeGreaterThan(0);
    expect(m.value('mailshare_etcd_request_duration_seconds_count', { method: 'KV/Range' })).toBeGreaterThan(0);
    expect(m.value('mailshare_etcd_request_duration_seconds_count', { method: 'KV/Txn' })).toBeGreaterThan(0);
    // Each gateway's agent holds one event stream (a Follow: it keeps the users it serves) and one keepalive stream.
    expect(m.value('mailshare_rpc_streams_open', { service: 'mailshare.v1.EventService', method: 'Follow' })).toBe(2);
    expect(m.value('mailshare_rpc_streams_open', { service: 'mailshare.v1.PlacementService', method: 'KeepAlive' })).toBe(2);
    const lag = m.value('mailshare_event_stream_lag_revisions', { consumer: 'node:n1' });
    expect(lag).toBeDefined();
    expect(lag).toBeLessThan(50);
    expect(m.value('process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts gRPC calls by service, method and code as they happen', async () => {
    const before = await scrape(coordinator());
    const key = { service: 'mailshare.v1.MailboxService', method: 'GetMailbox' };
    const admin = connectApi(cluster.server.address, cluster.server.adminToken);
    try {
      for (let i = 0; i < 3; i++) await expect(admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'nobody/Nothing', actor: '' })).rejects.toThrow();
    } finally {
      admin.close();
    }
    const after = await scrape(coordinator());
    const count = (m: typeof before): number => m.value('mailshare_rpc_duration_seconds_count', { ...key, code: 'NOT_FOUND' }) ?? 0;
    expect(count(after) - count(before)).toBe(3);
    expect((after.value('mailshare_rpc_handled_total', { ...key, type: 'unary', code: 'NOT_FOUND' }) ?? 0) - (before.value('mailshare_rpc_handled_total', { ...key, type: 'unary', code: 'NOT_FOUND' }) ?? 0)).toBe(3);
  });

  it('answers only its own paths', async () => {
    expect((await httpGet(coordinator(), '/nothing')).status).toBe(404);
    expect((await httpGet(coordinator(), '/metrics', 'POST')).status).toBe(405);
  });
});

describe('gateway /metrics', () => {
  it('moves with IMAP traffic: logins by result, sessions, commands, bytes, owner connections', async () => {
    const before = await scrape(gatewayMetrics(0));
    const logins = (m: typeof before, result: string): number => m.value('mailshare_gateway_logins_total', { protocol: 'imap', result }) ?? 0;
    const commands = (m: typeof before, command: string): number => m.value('mailshare_gateway_imap_command_duration_seconds_count', { command }) ?? 0;

    const wrong = await RawImap.connect(cluster.gateways[0]!.address());
    expect(await wrong.cmd('LOGIN alice not-her-password')).toMatch(/^t1 NO/m);
    wrong.close();
    const bob = await RawImap.login(cluster.gateways[1]!.address(), 'bob', USERS.bob);
    expect(await bob.cmd('CREATE Team')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('SETACL Team alice lr')).toMatch(/^t\d+ OK/m);
    bob.close();
    const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice);
    try {
      expect(await alice.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('UID FETCH 1:* (FLAGS)')).toMatch(/^t\d+ OK/m);
      await waitFor(async () => /Team/.test(await alice.cmd('LIST "" "Shared/bob/*"')), 5000, 'share visible');
      // Bob lives on n2: his folder is opened over an owner connection to n2's Dovecot.
      expect(await alice.cmd('SELECT Shared/bob/Team')).toMatch(/^t\d+ OK/m);

      const during = await scrape(gatewayMetrics(0));
      expect(logins(during, 'ok') - logins(before, 'ok')).toBe(1);
      expect(logins(during, 'failed') - logins(before, 'failed')).toBe(1);
      expect(during.value('mailshare_gateway_sessions', { protocol: 'imap' })).toBe(1);
      expect(during.value('mailshare_gateway_connections', { protocol: 'imap' })).toBe(1);
      expect(commands(during, 'SELECT') - commands(before, 'SELECT')).toBe(1);
      // Read-only rights (lr): the shared folder was opened with EXAMINE on bob's node.
      expect(commands(during, 'EXAMINE') - commands(before, 'EXAMINE')).toBe(1);
      expect(during.value('mailshare_gateway_imap_command_duration_seconds_count', { command: 'UID FETCH' })).toBeGreaterThanOrEqual(1);
      expect(during.value('mailshare_gateway_owner_connections', { state: 'in_use' })).toBe(1);
      const received = (m: typeof before): number => m.value('mailshare_gateway_client_bytes_total', { protocol: 'imap', direction: 'received' }) ?? 0;
      const sent = (m: typeof before): number => m.value('mailshare_gateway_client_bytes_total', { protocol: 'imap', direction: 'sent' }) ?? 0;
      expect(received(during) - received(before)).toBeGreaterThan(60);
      expect(sent(during) - sent(before)).toBeGreaterThan(200);
    } finally {
      alice.close();
    }
    await waitFor(async () => (await scrape(gatewayMetrics(0))).value('mailshare_gateway_sessions', { protocol: 'imap' }) === 0, 5000, 'session gone');
  });

  it('counts LMTP recipients by final reply, delivered and refused', async () => {
    const before = await scrape(gatewayMetrics(0));
    const [host, port] = cluster.gateways[0]!.lmtpAddress()!.split(':');
    // alice is on n1 (this gateway's node), bob on n2; nosuch is refused (550).
    expect((await python(DELIVER, [host!, port!, 'alice,bob,nosuch'])).trim()).toBe('1');
    const after = await scrape(gatewayMetrics(0));
    const delta = (result: string): number => (after.value('mailshare_gateway_lmtp_recipients_total', { result }) ?? 0) - (before.value('mailshare_gateway_lmtp_recipients_total', { result }) ?? 0);
    expect(delta('delivered')).toBe(2);
    expect(delta('rejected')).toBe(1);
    expect(delta('temporary')).toBe(0);
  });

  it("shows the node's lease and view of the cluster", async () => {
    const agent = cluster.gateways[1]!.agent;
    const was = { cached: agent.cachedAssignments, followed: agent.followedUsers };
    const m = await scrape(gatewayMetrics(1));
    expect(m.value('mailshare_serving')).toBe(1);
    const left = m.value('mailshare_lease_remaining_seconds')!;
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(5);
    expect(m.value('mailshare_event_stream_silence_seconds')).toBeLessThan(3);
    expect(m.value('mailshare_cache_revision')).toBeGreaterThan(0);
    // The gateway keeps its node's users and those it follows, not the cluster's (a follow may end while scraping).
    expect([was.cached, agent.cachedAssignments]).toContain(m.value('mailshare_cached_assignments'));
    expect([was.followed, agent.followedUsers]).toContain(m.value('mailshare_followed_users'));
    expect(agent.followsUsers).toBe(true);
  });
});

describe('deploy/prometheus', () => {
  const dir = path.join(REPO_ROOT, 'deploy/prometheus');
  const promtool = (...args: string[]): { code: number | null; out: string } => {
    const r = spawnSync('promtool', args, { cwd: dir, encoding: 'utf8' });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('passes promtool: the scrape config, the alert rules, and their unit tests', () => {
    for (const args of [['check', 'config', 'prometheus.yml'], ['check', 'rules', 'alerts.yml'], ['test', 'rules', 'alerts.test.yml']]) {
      const r = promtool(...args);
      expect(r.code, `promtool ${args.join(' ')}: ${r.out}`).toBe(0);
    }
  });

  it('alerts only on metrics the coordinator, the gateways and mailshare agent export', async () => {
    const names = new Set(readFileSync(path.join(dir, 'alerts.yml'), 'utf8').match(/\bmailshare_[a-z_]+/g));
    expect(names.size).toBeGreaterThan(5);
    // An agent beside n1's Dovecot, as a third node (the other tests are done with the node counts).
    const admin = connectApi(cluster.server.address, cluster.server.adminToken);
    const token = await nodeTokens(admin)('n3');
    admin.close();
    const d = cluster.dovecots[0]!;
    const agent = new Sidecar({ coordinators: [cluster.server.address], token, node: { name: 'n3', imap: d.address }, doveadm: { config: path.join(d.dir, 'dovecot.conf') }, metricsListen: '127.0.0.1:0' });
    await agent.start();
    try {
      const exported = (await scrape(coordinator())).text + (await scrape(gatewayMetrics(0))).text + (await scrape(agent.metricsAddress()!)).text;
      for (const name of names) expect(exported, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    } finally {
      await agent.close();
    }
  });
});
