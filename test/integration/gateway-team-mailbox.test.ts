import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap, message } from '../harness/imap.js';

/**
 * A support team opens one shared folder together: alice shares Support
 * with a group of 20 users, and 10 sessions of each, all from one address
 * (an office behind NAT), select it at once through the two gateways. Each
 * session reaches alice's mailbox through a connection as alice, which
 * Dovecot counts per user and client address (mail_max_userip_connections,
 * raised by deploy/local-cluster.sh and this harness). Sessions that are
 * not in the folder hold no connection to alice's node: they take one from
 * the gateway's pool per command and give it back.
 */
const TEAM = Array.from({ length: 20 }, (_, i) => `agent${i}`);
/** Sessions per user (TEAM_PER_USER): 10, so 200 sessions in all. */
const PER_USER = Number(process.env.TEAM_PER_USER ?? 10);
const USERS: Record<string, string> = { alice: 'alice-pw', ...Object.fromEntries(TEAM.map((u) => [u, `${u}-pw`])) };
let cluster: GatewayCluster;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true, maxUserIpConnections: Number(process.env.TEAM_LIMIT ?? 1000) });
  await cluster.pin('alice', 'n1');
  const { connectApi } = await import('../harness/api.js');
  const admin = connectApi(cluster.server.address, cluster.server.adminToken);
  await admin.directory.setGroupMembers({ tenant: 'acme', name: 'support', members: TEAM, expectedRevision: 0 });
  admin.close();
  const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice!);
  expect(await alice.cmd('CREATE Support')).toMatch(/^t\d+ OK/m);
  const m = message('ticket 1');
  alice.write(`ap APPEND Support {${m.length}+}\r\n${m}\r\n`);
  await alice.until(/^ap OK/m);
  expect(await alice.cmd('SETACL Support group:support lrswi')).toMatch(/^t\d+ OK/m);
  alice.close();
}, 90_000);
afterAll(async () => {
  await cluster?.stop();
});

describe('a team mailbox', () => {
  it(`${TEAM.length * PER_USER} sessions of ${TEAM.length} users from one address select it at once through two gateways, and all work`, async () => {
    const gateways = cluster.gateways.map((g) => g.address());
    const sessions = await Promise.all(
      TEAM.flatMap((u, i) => Array.from({ length: PER_USER }, (_, k) => k).map(async (k) => {
        const c = await RawImap.login(gateways[(i + k) % 2]!, u, USERS[u]!);
        const selected = await c.cmd('SELECT Shared/alice/Support', 20_000);
        return { c, selected };
      })),
    );
    const failed = sessions.filter((s) => !/^t\d+ OK/m.test(s.selected)).map((s) => s.selected.trim().split('\r\n').pop());
    expect(failed).toEqual([]);
    // All of them read and flag in the folder together.
    const fetched = await Promise.all(sessions.map((s) => s.c.cmd('FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])', 20_000)));
    expect(fetched.every((f) => /ticket 1/.test(f))).toBe(true);
    for (const s of sessions) s.c.close();
  }, 90_000);

  it('sessions that only look at the folder (STATUS, APPEND) share a few connections to its owner\'s node', async () => {
    const gateways = cluster.gateways.map((g) => g.address());
    const [, alicePort] = cluster.dovecots[0]!.address.split(':');
    // Established connections to alice's Dovecot, whoever opened them.
    const toAlice = (): number => execFileSync('ss', ['-Htn', 'state', 'established', `( dport = :${alicePort} )`]).toString().trim().split('\n').filter(Boolean).length;
    const before = toAlice();
    const sessions = await Promise.all(TEAM.flatMap((u, i) => [0, 1, 2].map(async (k) => RawImap.login(gateways[(i + k) % 2]!, u, USERS[u]!))));
    const statuses = await Promise.all(sessions.map((c) => c.cmd('STATUS Shared/alice/Support (MESSAGES)', 20_000)));
    expect(statuses.filter((st) => !/\(MESSAGES \d+\)/.test(st))).toEqual([]);
    const m = message('from the team');
    const appended = await Promise.all(sessions.slice(0, 10).map(async (c) => {
      c.write(`ap APPEND Shared/alice/Support {${m.length}+}\r\n${m}\r\n`);
      return c.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m, 20_000);
    }));
    expect(appended.every((a) => /^ap OK/m.test(a))).toBe(true);
    // 60 sessions, all still open and idle: a few kept per gateway (4 per owner and address), not 60.
    const kept = cluster.gateways.reduce((n, g) => n + g.owners.size, 0);
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(8);
    expect(toAlice() - before).toBeLessThanOrEqual(12);
    // And a session that then opens the folder gets a connection of its own, as before.
    expect(await sessions[0]!.cmd('SELECT Shared/alice/Support')).toMatch(/^t\d+ OK/m);
    expect(await sessions[0]!.cmd('FETCH 1 (FLAGS)')).toMatch(/^\* 1 FETCH/m);
    for (const c of sessions) c.close();
  }, 90_000);
});
