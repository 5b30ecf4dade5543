import * as grpc from '@grpc/grpc-js';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi } from '../harness/api.js';
import type { DovecotInstance } from '../harness/dovecot.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap, message } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import type { InProcessServer } from '../harness/server.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };

let cluster: GatewayCluster;
let server: InProcessServer;
let dovecots: DovecotInstance[];
let placement: PlacementServiceClient;
/** Gateway of each user's home node (the test connects there or elsewhere on purpose). */
let gw: { n1: string; n2: string };

const locate = (user: string, assign = false) => unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign }, server.adminToken);

async function pin(user: string, node: string): Promise<void> {
  await cluster.pin(user, node);
  expect((await locate(user)).node).toBe(node);
}

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true });
  ({ server, dovecots } = cluster);
  gw = { n1: cluster.gateways[0]!.address(), n2: cluster.gateways[1]!.address() };
  placement = cluster.placement;
  await pin('alice', 'n1');
  await pin('bob', 'n2');
  await pin('carol', 'n2');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

function flow(address: string, user: keyof typeof USERS): ImapFlow {
  const [host, port] = address.split(':');
  return new ImapFlow({ host: host!, port: Number(port), secure: false, auth: { user, pass: USERS[user] }, logger: false, disableAutoIdle: true });
}

async function append(c: RawImap, mailbox: string, msg: string, flags = ''): Promise<string> {
  c.write(`ap APPEND "${mailbox}" (${flags}) {${msg.length}+}\r\n${msg}\r\n`);
  return c.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m);
}

describe('shared folders through the gateways', () => {
  it('alice shares Projects with bob (lr): bob lists, selects and reads it from another node; APPEND needs i', async () => {
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('CREATE Projects')).toMatch(/OK/);
    expect(await append(alice, 'Projects', message('plan A'))).toMatch(/^ap OK/m);
    expect(await alice.cmd('SETACL Projects bob lr')).toMatch(/^t\d+ OK/m);
    const acl = await alice.cmd('GETACL Projects');
    expect(acl).toMatch(/^\* ACL "Projects" .*"bob" "lr"/m);
    expect(acl).toMatch(/"alice" "lrswipkxteacd"/);

    // bob is on n2 and connects through n2's gateway; alice's mail is served by n1.
    const bob = flow(gw.n2, 'bob');
    await bob.connect();
    const shared = bob.namespaces?.shared;
    expect(shared && shared[0]?.prefix).toBe('Shared/');
    const names = (await bob.list()).map((m) => m.path);
    expect(names).toContain('Shared/alice/Projects');
    expect(names).toContain('INBOX');
    const box = await bob.mailboxOpen('Shared/alice/Projects');
    expect(box.exists).toBe(1);
    const subjects: string[] = [];
    for await (const m of bob.fetch('1:*', { envelope: true, source: true })) subjects.push(m.envelope!.subject!);
    expect(subjects).toEqual(['plan A']);
    await bob.logout();

    const raw = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await raw.cmd('MYRIGHTS Shared/alice/Projects')).toMatch(/^\* MYRIGHTS "Shared\/alice\/Projects" "lr"/m);
    expect(await append(raw, 'Shared/alice/Projects', message('from bob'))).toMatch(/^ap NO \[NOPERM\]/m);
    // The session survives the refusal, literal and all.
    expect(await raw.cmd('NOOP')).toMatch(/^t\d+ OK/m);

    expect(await alice.cmd('SETACL Projects bob +i')).toMatch(/^t\d+ OK/m);
    expect(await append(raw, 'Shared/alice/Projects', message('from bob'))).toMatch(/^ap OK/m);
    const status = await alice.cmd('STATUS Projects (MESSAGES)');
    expect(status).toMatch(/MESSAGES 2/);
    raw.close();
    alice.close();
    // bob's node never served alice: every access to her mailbox went to n1 (as alice, via the master user).
    const { readFileSync } = await import('node:fs');
    const logins = (i: number) => readFileSync(`${dovecots[i]!.dir}/dovecot.log`, 'utf8').match(/(?:Login|Logged in): user=<alice>/g)?.length ?? 0;
    expect(logins(1)).toBe(0);
    expect(logins(0)).toBeGreaterThanOrEqual(3);
  });

  it('a user without rights sees nothing of the mailbox', async () => {
    const carol = await RawImap.login(gw.n1, 'carol', USERS.carol);
    const list = await carol.cmd('LIST "" "*"');
    expect(list).not.toMatch(/Shared/);
    expect(await carol.cmd('SELECT Shared/alice/Projects')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    expect(await carol.cmd('STATUS Shared/alice/Projects (MESSAGES)')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    expect(await carol.cmd('MYRIGHTS Shared/alice/Projects')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    expect(await carol.cmd('GETACL Shared/alice/Projects')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    expect(await carol.cmd('SELECT Shared/alice/Nothing')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    carol.close();
  });

  it('a revoke reaches a session that has the mailbox selected', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await bob.cmd('SELECT Shared/alice/Projects')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('FETCH 1 (FLAGS)')).toMatch(/^t\d+ OK/m);
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('DELETEACL Projects bob')).toMatch(/^t\d+ OK/m);
    await waitFor(async () => /NONEXISTENT/.test(await bob.cmd('FETCH 1 (FLAGS)')), 5000, 'revoke seen');
    expect(await bob.cmd('LIST "" "Shared/*"')).not.toMatch(/Projects/);
    expect(await alice.cmd('SETACL Projects bob lr')).toMatch(/^t\d+ OK/m);
    bob.close();
    alice.close();
  });

  it('without "s" reading does not mark mail \\Seen; without "t" \\Deleted is left unset (OK, as on a read-only mailbox); with "s" \\Seen sticks', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    const sel = await bob.cmd('SELECT Shared/alice/Projects');
    expect(sel).toMatch(/READ-ONLY/);
    expect(await bob.cmd('FETCH 1 (BODY[])')).toMatch(/plan A/);
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    await alice.cmd('SELECT Projects');
    expect(await alice.cmd('FETCH 1 (FLAGS)')).not.toMatch(/\\Seen/);
    // RFC 4314 §4: STORE does not fail for flags the user may not change; they are left as they are.
    expect(await bob.cmd('STORE 1 +FLAGS (\\Deleted)')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('FETCH 1 (FLAGS)')).not.toMatch(/\\Deleted/);

    expect(await alice.cmd('SETACL Projects bob +s')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('SELECT Shared/alice/Projects')).toMatch(/READ-WRITE/);
    expect(await bob.cmd('STORE 1 +FLAGS (\\Seen)')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('FETCH 1 (FLAGS)')).toMatch(/\\Seen/);
    expect(await bob.cmd('EXPUNGE')).toMatch(/^t\d+ NO \[NOPERM\]/m);
    bob.close();
    alice.close();
  });

  it('IDLE on a shared folder sees a new message within a second', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    const sel = await bob.cmd('SELECT Shared/alice/Projects');
    const exists = Number(/\* (\d+) EXISTS/.exec(sel)![1]);
    bob.write('idle IDLE\r\n');
    await bob.until(/^\+ /m);
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    const t0 = Date.now();
    expect(await append(alice, 'Projects', message('live'))).toMatch(/^ap OK/m);
    await bob.until(new RegExp(`^\\* ${exists + 1} EXISTS`, 'm'), 5000);
    expect(Date.now() - t0).toBeLessThan(1000 + 500);
    bob.write('DONE\r\n');
    expect(await bob.until(/^idle (OK|NO|BAD)/m)).toMatch(/idle OK/);
    bob.close();
    alice.close();
  });

  it('with write rights but no "s": RFC822 fetches leave \\Seen alone and keep their names; flags the user may not set are left off APPEND and COPY', async () => {
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    for (const box of ['Peek', 'Peek2']) expect(await alice.cmd(`CREATE ${box}`)).toMatch(/^t\d+ OK/m);
    expect(await append(alice, 'Peek', message('peek me', 'secret body'))).toMatch(/^ap OK/m);
    expect(await alice.cmd('SETACL Peek bob lriw')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('SETACL Peek2 bob lri')).toMatch(/^t\d+ OK/m);
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    await waitFor(async () => /Peek2/.test(await bob.cmd('LIST "" "Shared/alice/*"')), 5000, 'shares visible');
    // A write right opens the mailbox read-write, where Dovecot would set \Seen on RFC822 fetches.
    expect(await bob.cmd('SELECT Shared/alice/Peek')).toMatch(/READ-WRITE/);
    // Pipelined with a BODY.PEEK[] fetch, whose answer must keep its own name.
    bob.write('p1 FETCH 1 (BODY.PEEK[])\r\np2 FETCH 1 (UID RFC822)\r\np3 FETCH 1 (RFC822.SIZE RFC822.TEXT)\r\n');
    const got = await bob.until(/^p3 (OK|NO|BAD)[^\r]*\r\n/m);
    const [p1, p2, p3] = got.split(/^p\d [^\r]*\r\n/m);
    expect(p1).toMatch(/BODY\[\] \{\d+\}\r\n/);
    expect(p2).toMatch(/\(UID \d+ RFC822 \{\d+\}\r\nFrom: test@example.com/);
    expect(p2).not.toMatch(/BODY\[/);
    expect(p3).toMatch(/RFC822\.SIZE \d+ RFC822\.TEXT \{\d+\}\r\nsecret body/);
    for (const tag of ['p1', 'p2', 'p3']) expect(got).toMatch(new RegExp(`^${tag} OK`, 'm'));
    await alice.cmd('SELECT Peek');
    expect(await alice.cmd('FETCH 1 (FLAGS)')).not.toMatch(/\\Seen/);

    // APPEND: "w" lets \Flagged and keywords through; \Seen (s) and \Deleted (t) are left off.
    expect(await append(bob, 'Shared/alice/Peek', message('flagged'), '\\Seen \\Deleted \\Flagged $Work')).toMatch(/^ap OK/m);
    await alice.cmd('NOOP');
    const flags = await alice.cmd('FETCH 2 (FLAGS)');
    expect(flags).toMatch(/\\Flagged/);
    expect(flags).toMatch(/\$Work/);
    expect(flags).not.toMatch(/\\Seen|\\Deleted/);

    // COPY within alice's mailboxes into one where bob has only "lri": no flags come along.
    expect(await alice.cmd('STORE 1:2 +FLAGS (\\Seen \\Flagged)')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('COPY 1:2 Shared/alice/Peek2')).toMatch(/^t\d+ OK/m);
    await alice.cmd('SELECT Peek2');
    const copied = await alice.cmd('FETCH 1:* (FLAGS)');
    expect(copied.match(/^\* \d+ FETCH/gm)).toHaveLength(2);
    expect(copied).not.toMatch(/\\Seen|\\Flagged|\$Work/);
    bob.close();
    alice.close();
  });

  it('ESEARCH answers carry the client\'s tag, in own and shared mailboxes (RFC 4731 §3.1)', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    await bob.cmd('SELECT INBOX');
    expect(await bob.cmd('SEARCH RETURN (COUNT) ALL')).toMatch(/^\* ESEARCH \(TAG "t3"\) COUNT \d+\r$/m);
    await bob.cmd('SELECT Shared/alice/Projects');
    expect(await bob.cmd('UID SEARCH RETURN (MIN COUNT) ALL')).toMatch(/^\* ESEARCH \(TAG "t5"\) UID MIN 1 COUNT \d+\r$/m);
    // A search that stays (RFC 5267 CONTEXT=SEARCH): its updates and CANCELUPDATE name the client's tag.
    await bob.cmd('SELECT INBOX');
    expect(await bob.cmd('SEARCH RETURN (UPDATE) ALL')).toMatch(/^t7 OK/m);
    const other = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await append(other, 'INBOX', message('update me'))).toMatch(/^ap OK/m);
    other.close();
    expect(await bob.cmd('NOOP')).toMatch(/^\* ESEARCH \(TAG "t7"\) ADDTO/m);
    expect(await bob.cmd('CANCELUPDATE "t7"')).toMatch(/^t9 OK/m);
    expect(await bob.cmd('CANCELUPDATE "nosuch"')).toMatch(/^t10 NO/m);
    bob.close();
  });

  it('names outside ASCII travel as modified UTF-7 both ways', async () => {
    const admin = connectApi(server.address, server.adminToken);
    await admin.directory.setGroupMembers({ tenant: 'acme', name: 'team', members: ['bob'], expectedRevision: 0 });
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('CREATE "Caf&AOk-"')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('SETACL "Caf&AOk-" group:team lr')).toMatch(/^t\d+ OK/m);
    const got = await admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'alice/Café', actor: '' });
    expect(got.mailbox).toBe('alice/Café');
    admin.close();
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    await waitFor(async () => /Shared\/alice\/Caf&AOk-/.test(await bob.cmd('LIST "" "Shared/alice/%"')), 5000, 'group share visible');
    expect(await bob.cmd('SELECT "Shared/alice/Caf&AOk-"')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('STATUS "Shared/alice/Caf&AOk-" (MESSAGES)')).toMatch(/^\* STATUS "Shared\/alice\/Caf&AOk-" \(MESSAGES 0\)/m);
    bob.close();
    alice.close();
  });

  it('COPY and MOVE between own and shared mailboxes on other nodes keep flags and internal dates', async () => {
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('SETACL Projects bob lrswite')).toMatch(/^t\d+ OK/m);
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    bob.write(`ap APPEND INBOX (\\Flagged $Work) "01-Jan-2025 08:30:00 +0000" {${message('to copy').length}+}\r\n${message('to copy')}\r\n`);
    expect(await bob.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
    const sel = await bob.cmd('SELECT INBOX');
    const n = Number(/\* (\d+) EXISTS/.exec(sel)![1]);
    const copy = await bob.cmd(`COPY ${n} Shared/alice/Projects`);
    expect(copy).toMatch(/^t\d+ OK \[COPYUID \d+ \d+ \d+\] COPY completed/m);
    const dstUid = /COPYUID \d+ \d+ (\d+)/.exec(copy)![1];

    await alice.cmd('SELECT Projects');
    const f = await alice.cmd(`UID FETCH ${dstUid} (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])`);
    expect(f).toMatch(/\\Flagged/);
    expect(f).toMatch(/\$Work/);
    expect(f).toMatch(/INTERNALDATE "01-Jan-2025 08:30:00 \+0000"/);
    expect(f).toMatch(/Subject: to copy/);

    // And back again with MOVE: the source message goes only after the append succeeded.
    const shared = await bob.cmd('SELECT Shared/alice/Projects');
    const before = Number(/\* (\d+) EXISTS/.exec(shared)![1]);
    const mv = await bob.cmd(`UID MOVE ${dstUid} INBOX`);
    expect(mv).toMatch(/^\* OK \[COPYUID \d+ \d+ \d+\]/m);
    expect(mv).toMatch(/^\* \d+ EXPUNGE/m);
    expect(mv).toMatch(/^t\d+ OK MOVE completed/m);
    await alice.cmd('UNSELECT');
    expect(await alice.cmd('STATUS Projects (MESSAGES)')).toMatch(new RegExp(`MESSAGES ${before - 1}\\)`));
    expect(await bob.cmd('STATUS INBOX (MESSAGES)')).toMatch(new RegExp(`MESSAGES ${n + 1}\\)`));

    // Without "i" on the target nothing is copied.
    expect(await alice.cmd('SETACL Projects bob -i')).toMatch(/^t\d+ OK/m);
    await bob.cmd('SELECT INBOX');
    expect(await bob.cmd(`COPY 1 Shared/alice/Projects`)).toMatch(/^t\d+ NO \[NOPERM\]/m);
    bob.close();
    alice.close();
  });

  it('CREATE below, RENAME and DELETE over IMAP keep mailshare in step, with the rights they need', async () => {
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('CREATE Team')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('SETACL Team bob lr')).toMatch(/^t\d+ OK/m);
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await bob.cmd('CREATE Shared/alice/Team/Sub')).toMatch(/^t\d+ NO \[NOPERM\]/m);
    expect(await alice.cmd('SETACL Team bob +kx')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('CREATE Shared/alice/Team/Sub')).toMatch(/^t\d+ OK/m);
    // The new mailbox is registered with its parent's ACL, so bob sees it at once.
    expect(await bob.cmd('LIST "" "Shared/alice/Team/*"')).toMatch(/"Shared\/alice\/Team\/Sub"/);
    expect(await bob.cmd('MYRIGHTS Shared/alice/Team/Sub')).toMatch(/"lrkxc"/);
    expect(await bob.cmd('DELETE Shared/alice/Team/Sub')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('LIST "" "Shared/alice/Team/*"')).not.toMatch(/Sub/);
    expect(await alice.cmd('LIST "" "Team/*"')).not.toMatch(/Sub/);

    // alice renames: the ACL follows the mailbox, in IMAP and in mailshare.
    expect(await alice.cmd('RENAME Team Crew')).toMatch(/^t\d+ OK/m);
    const admin = connectApi(server.address, server.adminToken);
    const crew = await admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'alice/Crew', actor: '' });
    expect(crew.acl.find((e) => e.identifier === 'bob')?.rights).toMatch(/^lrkx/);
    await expect(admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'alice/Team', actor: '' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    expect(await bob.cmd('LIST "" "Shared/alice/*"')).toMatch(/"Shared\/alice\/Crew"/);
    expect(await alice.cmd('DELETE Crew')).toMatch(/^t\d+ OK/m);
    await expect(admin.mailbox.getMailbox({ tenant: 'acme', mailbox: 'alice/Crew', actor: '' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    expect(await bob.cmd('SELECT Shared/alice/Crew')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    admin.close();
    bob.close();
    alice.close();
  });

  it("keeps a session that has a shared mailbox open when the owner moves: its next command runs on the owner's new node", async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await bob.cmd('SELECT Shared/alice/Projects')).toMatch(/^t\d+ OK/m);
    const before = await locate('alice');
    await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: before.node === 'n1' ? 'n2' : 'n1', timeoutMs: 2000 }, server.adminToken);
    // Whether the move event or bob's next command comes first, nothing reaches alice's old node
    // after it let her go: the command waits for the session to move (gateway-migration.test.ts).
    bob.write('late NOOP\r\n');
    expect(await bob.until(/^late (OK|NO|BAD)[^\r]*\r\n/m, 5000)).toMatch(/^late OK/m);
    expect(await bob.cmd('FETCH 1 (UID)')).toMatch(/^\* 1 FETCH \(UID \d+\)/m);
    expect(bob.closed).toBe(false);
    bob.close();
    const { readFileSync } = await import('node:fs');
    const after = await locate('alice');
    expect(after.epoch).toBeGreaterThan(before.epoch);
    expect(readFileSync(`${dovecots[after.node === 'n1' ? 0 : 1]!.dir}/dovecot.log`, 'utf8')).toMatch(/(?:Login|Logged in): user=<alice>/);
  });

  it('an owner\'s move leaves the rest of a reader\'s session alone: own mailboxes go on, the shared one reopens on the new node', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await bob.cmd('STATUS Shared/alice/Projects (MESSAGES)')).toMatch(/^\* STATUS "Shared\/alice\/Projects" \(MESSAGES \d+\)/m);
    expect(await bob.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    const before = await locate('alice');
    await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: before.node === 'n1' ? 'n2' : 'n1', timeoutMs: 2000 }, server.adminToken);
    await waitFor(async () => (await locate('alice')).epoch !== before.epoch, 5000, 'alice moved');
    expect(await bob.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('FETCH 1:* (FLAGS)')).toMatch(/^t\d+ OK/m);
    expect(await bob.cmd('STATUS Shared/alice/Projects (MESSAGES)')).toMatch(/^\* STATUS "Shared\/alice\/Projects" \(MESSAGES \d+\)/m);
    expect(bob.closed).toBe(false);
    bob.close();
  });

  it('offers QRESYNC and STATUS=SIZE, in shared mailboxes too, and says [CLOSED] when a SELECT moves between nodes', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await bob.cmd('CAPABILITY')).toMatch(/^\* CAPABILITY .*\bQRESYNC\b.*\bSTATUS=SIZE\b/m);
    expect(await bob.cmd('ENABLE QRESYNC')).toMatch(/^\* ENABLED QRESYNC/m);
    expect(await bob.cmd('STATUS Shared/alice/Projects (MESSAGES SIZE HIGHESTMODSEQ)')).toMatch(/^\* STATUS "Shared\/alice\/Projects" \(MESSAGES \d+ HIGHESTMODSEQ \d+ SIZE \d+\)/m);
    const first = await bob.cmd('SELECT Shared/alice/Projects');
    const validity = /\[UIDVALIDITY (\d+)\]/.exec(first)![1];
    const modseq = /\[HIGHESTMODSEQ (\d+)\]/.exec(first)![1];
    const last = Number(/\[UIDNEXT (\d+)\]/.exec(first)![1]) - 1;
    expect(await bob.cmd('SELECT INBOX')).toMatch(/^\* OK \[CLOSED\]/m);
    // Resynchronise the shared mailbox as a QRESYNC client does (RFC 7162 §3.2.5).
    const again = await bob.cmd(`SELECT Shared/alice/Projects (QRESYNC (${validity} ${modseq} 1:${last}))`);
    expect(again).toMatch(/^\* OK \[CLOSED\]/m);
    expect(again).toMatch(/^t\d+ OK \[READ-(ONLY|WRITE)\]/m);
    expect(await bob.cmd('UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)')).toMatch(/^t\d+ OK/m);
    bob.close();
  });

  it('tells IMAP users what they lack in IMAP words, never the API\'s field names', async () => {
    const bob = await RawImap.login(gw.n2, 'bob', USERS.bob);
    const out = await bob.cmd('SETACL Shared/alice/Projects carol lr');
    expect(out).toMatch(/^t\d+ NO \[NOPERM\] You need the "a" right on this mailbox for that\r$/m);
    expect(out).not.toMatch(/actor|alice\/Projects/);
    bob.close();
  });
});
