import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DovecotInstance } from '../harness/dovecot.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap, message } from '../harness/imap.js';
import { scrape } from '../harness/metrics.js';
import { waitFor } from '../harness/process.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw', frank: 'frank-pw', gina: 'gina-pw' };

let cluster: GatewayCluster;
let dovecots: DovecotInstance[];
let gw: { n1: string; n2: string };

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    tap: true,
    gateway: () => ({ metricsListen: '127.0.0.1:0', ...(process.env.MIGRATION_DEBUG ? { logger: { info: console.log, warn: console.log, debug: () => undefined } } : {}) }),
  });
  ({ dovecots } = cluster);
  gw = { n1: cluster.gateways[0]!.address(), n2: cluster.gateways[1]!.address() };
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const locate = (user: string) => unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user, mailbox: '', assign: false }, cluster.server.adminToken);
const move = (user: string, to: string) => unaryCall(cluster.placement.move.bind(cluster.placement), { tenant: 'acme', user, toNode: to, timeoutMs: 3000 }, cluster.server.adminToken);

/**
 * What a client knows of its selected mailbox: the UID at each sequence
 * number (undefined: told EXISTS, UID not fetched), kept from the untagged
 * responses it receives, as RFC 3501 §7.4.1 says a client must.
 */
class ClientModel {
  uids: Array<number | undefined> = [];
  apply(text: string): void {
    for (const line of text.split('\r\n')) {
      let m: RegExpExecArray | null;
      if ((m = /^\* (\d+) EXPUNGE$/.exec(line))) this.uids.splice(Number(m[1]) - 1, 1);
      else if ((m = /^\* (\d+) EXISTS$/.exec(line))) while (this.uids.length < Number(m[1])) this.uids.push(undefined);
      else if ((m = /^\* VANISHED ([\d:,]+)$/.exec(line))) {
        const gone = new Set(expand(m[1]!));
        this.uids = this.uids.filter((u) => u === undefined || !gone.has(u));
      } else if ((m = /^\* (\d+) FETCH \(.*\bUID (\d+)/.exec(line))) this.uids[Number(m[1]) - 1] = Number(m[2]);
    }
  }
}

function expand(set: string): number[] {
  return set.split(',').flatMap((p) => {
    const [a, b] = p.split(':').map(Number);
    const out: number[] = [];
    for (let u = a!; u <= (b ?? a!); u++) out.push(u);
    return out;
  });
}

/** The sequence ↔ UID map as the server has it for this session now. */
async function serverMap(c: RawImap): Promise<number[]> {
  const out = await c.cmd('FETCH 1:* (UID)');
  return [...out.matchAll(/^\* (\d+) FETCH \(UID (\d+)\)/gm)].map((m) => Number(m[2]));
}

async function append(c: RawImap, mailbox: string, subject: string): Promise<void> {
  const msg = message(subject);
  expect(await c.cmd(`APPEND ${mailbox} {${msg.length}+}\r\n${msg}`)).toMatch(/^t\d+ OK/m);
}

/** Commands (tagged responses) each node's Dovecot has answered so far. */
const answered = (): number[] => cluster.taps.map((t) => t.tags.length);

/** The user's own Dovecot, for changes behind the gateway's back (another client on the same node). */
const direct = (node: string, user: keyof typeof USERS): Promise<RawImap> => RawImap.login(dovecots[node === 'n1' ? 0 : 1]!.address, user, USERS[user]);

describe('session migration', () => {
  it('moves a session with INBOX selected to the new node: the client stays connected and its sequence numbers keep meaning the same messages', async () => {
    await cluster.pin('alice', 'n1');
    // Through the gateway of the *other* node: the session is relayed to n1, then to n2.
    const c = await RawImap.login(gw.n2, 'alice', USERS.alice);
    for (let i = 1; i <= 6; i++) await append(c, 'INBOX', `m${i}`);
    const sel = await c.cmd('SELECT INBOX');
    expect(sel).toMatch(/^\* 6 EXISTS/m);
    const model = new ClientModel();
    model.apply(await c.cmd('FETCH 1:* (UID)'));
    expect(model.uids).toHaveLength(6);
    const before = await c.cmd('FETCH 3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
    expect(before).toContain('Subject: m3');

    const atMove = answered();
    expect((await move('alice', 'n2')).node).toBe('n2');
    // Nothing reached n1 after the release; the next command runs on n2.
    const noop = await c.cmd('NOOP');
    expect(noop).toMatch(/^t\d+ OK/m);
    expect(c.closed).toBe(false);
    const after = answered();
    expect(after[0]).toBe(atMove[0]);
    expect(after[1]).toBeGreaterThan(atMove[1]!);
    const fetched = await c.cmd('FETCH 3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
    expect(fetched).toContain('Subject: m3');
    expect(fetched).toContain(`UID ${model.uids[2]}`);
    expect(await serverMap(c)).toEqual(model.uids);
    expect((await locate('alice')).node).toBe('n2');
    const metrics = await scrape(cluster.gateways[1]!.metricsAddress()!);
    expect(metrics.value('mailshare_gateway_session_migrations_total', { outcome: 'migrated' })).toBeGreaterThanOrEqual(1);
    c.close();
  });

  it('reconciles a mailbox that changed behind the client (expunged and added elsewhere) with EXPUNGE and EXISTS', async () => {
    await cluster.pin('bob', 'n1');
    const c = await RawImap.login(gw.n1, 'bob', USERS.bob);
    for (let i = 1; i <= 8; i++) await append(c, 'INBOX', `b${i}`);
    await c.cmd('SELECT INBOX');
    const model = new ClientModel();
    model.apply(await c.cmd('FETCH 1:* (UID)'));
    const [u2, u5, u6] = [model.uids[1], model.uids[4], model.uids[5]];
    // Another client on bob's node expunges three and adds two; bob's client, silent, hears nothing yet.
    const other = await direct('n1', 'bob');
    await other.cmd('SELECT INBOX');
    expect(await other.cmd('STORE 2,5:6 +FLAGS.SILENT (\\Deleted)')).toMatch(/OK/);
    expect(await other.cmd('EXPUNGE')).toMatch(/OK/);
    await append(other, 'INBOX', 'b9');
    await append(other, 'INBOX', 'b10');
    expect(await other.cmd('STORE 1 +FLAGS.SILENT (\\Flagged)')).toMatch(/OK/);
    other.close();

    expect((await move('bob', 'n2')).node).toBe('n2');
    const noop = await c.cmd('NOOP');
    expect(c.closed).toBe(false);
    // Highest first, in the client's numbering: 6, 5, 2; then the two new messages; and message 1's new flag.
    expect(noop).toMatch(/^\* 6 EXPUNGE\r\n\* 5 EXPUNGE\r\n\* 2 EXPUNGE\r\n\* 7 EXISTS\r\n/m);
    expect(noop).toMatch(/^\* 1 FETCH \(FLAGS \([^)]*\\Flagged/m);
    model.apply(noop);
    expect(model.uids).not.toContain(u2);
    expect(model.uids).not.toContain(u5);
    expect(model.uids).not.toContain(u6);
    model.apply(await c.cmd('FETCH 6:* (UID)'));
    // The client's map is what a fresh SELECT shows.
    const fresh = await RawImap.login(gw.n1, 'bob', USERS.bob);
    await fresh.cmd('SELECT INBOX');
    expect(await serverMap(fresh)).toEqual(model.uids);
    fresh.close();
    c.close();
  });

  it('keeps an IDLE open across the move: the message delivered after it is announced by EXISTS, and DONE ends the IDLE', async () => {
    await cluster.pin('carol', 'n1');
    const c = await RawImap.login(gw.n2, 'carol', USERS.carol);
    await append(c, 'INBOX', 'c1');
    await c.cmd('SELECT INBOX');
    c.write('idle1 IDLE\r\n');
    await c.until(/^\+ [^\r]*\r\n/m);
    expect((await move('carol', 'n2')).node).toBe('n2');
    // Delivered on the new node (another session lands there).
    await waitFor(async () => (await locate('carol')).node === 'n2', 5000, 'carol on n2');
    const writer = await RawImap.login(gw.n1, 'carol', USERS.carol);
    await append(writer, 'INBOX', 'c2');
    writer.close();
    const pushed = await c.until(/^\* 2 EXISTS\r\n/m, 10_000);
    // No second continuation, no tagged end: the client's IDLE goes on.
    expect(pushed).not.toMatch(/^\+ /m);
    expect(pushed).not.toMatch(/^idle1 /m);
    c.write('DONE\r\n');
    expect(await c.until(/^idle1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^idle1 OK/m);
    expect(await c.cmd('FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])')).toContain('Subject: c2');
    c.close();
  });

  it('learns the UIDs of mail announced during an IDLE, so that session moves too', async () => {
    await cluster.pin('dave', 'n1');
    const c = await RawImap.login(gw.n2, 'dave', USERS.dave);
    await append(c, 'INBOX', 'd0');
    await c.cmd('SELECT INBOX');
    const model = new ClientModel();
    model.apply(await c.cmd('FETCH 1:* (UID)'));
    const n = model.uids.length;
    c.write('idle2 IDLE\r\n');
    await c.until(/^\+ [^\r]*\r\n/m);
    const writer = await RawImap.login(gw.n1, 'dave', USERS.dave);
    await append(writer, 'INBOX', 'during idle');
    writer.close();
    model.apply(await c.until(new RegExp(`^\\* ${n + 1} EXISTS\r\n`, 'm'), 10_000));
    // Its UID is not known to the client: it may FETCH it later, by sequence number.
    expect(model.uids[n]).toBeUndefined();
    await new Promise((r) => setTimeout(r, 200));
    expect((await move('dave', 'n2')).node).toBe('n2');
    const writer2 = await RawImap.login(gw.n1, 'dave', USERS.dave);
    await append(writer2, 'INBOX', 'after move');
    writer2.close();
    const pushed = await c.until(new RegExp(`^\\* ${n + 2} EXISTS\r\n`, 'm'), 10_000);
    expect(pushed).not.toMatch(/^\* BYE/m);
    expect(pushed).not.toMatch(/^(\+ |idle2 )/m);
    c.write('DONE\r\n');
    expect(await c.until(/^idle2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^idle2 OK/m);
    const tail = await c.cmd(`FETCH ${n + 1}:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])`);
    expect(tail).toContain('Subject: during idle');
    expect(tail).toContain('Subject: after move');
    c.close();
  });

  it('mail arriving at the new node while the moved session is set up there is announced to the client', async () => {
    await cluster.pin('gina', 'n1');
    const c = await RawImap.login(gw.n2, 'gina', USERS.gina);
    await append(c, 'INBOX', 'g1');
    await c.cmd('SELECT INBOX');
    // The migration's FETCH of the flags at the new node waits until mail arrives there (another client).
    const held = cluster.taps[1]!.hold(/ FETCH 1:\* \(FLAGS\)\r\n/);
    try {
      expect((await move('gina', 'n2')).node).toBe('n2');
      await Promise.race([held.reached, new Promise((_, reject) => setTimeout(() => reject(new Error('the flags were never fetched at the new node')), 10_000))]);
      const other = await direct('n2', 'gina');
      await append(other, 'INBOX', 'g2');
      other.close();
    } finally {
      held.release();
    }
    // Dovecot tells of it in that FETCH's answer: the client hears it then, not never.
    const out = await c.until(/^\* 2 EXISTS\r\n/m, 10_000);
    expect(out).not.toMatch(/^\* BYE/m);
    expect(await c.cmd('FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])')).toContain('Subject: g2');
    expect(await serverMap(c)).toHaveLength(2);
    c.close();
  });

  it("a flag changed by another client while the gateway learns a mailbox's UIDs reaches the client", async () => {
    await cluster.pin('gina', 'n1');
    const c = await RawImap.login(gw.n1, 'gina', USERS.gina);
    await append(c, 'INBOX', 'to be flagged');
    // The gateway's own UID SEARCH after the SELECT waits until another client on the node flags message 1.
    const held = cluster.taps[0]!.hold(/ UID SEARCH RETURN \(ALL\) ALL\r\n/);
    const other = await direct('n1', 'gina');
    try {
      await other.cmd('SELECT INBOX');
      c.write('s1 SELECT INBOX\r\n');
      await Promise.race([held.reached, new Promise((_, reject) => setTimeout(() => reject(new Error('no UID SEARCH after the SELECT')), 10_000))]);
      expect(await other.cmd('STORE 1 +FLAGS.SILENT (\\Flagged)')).toMatch(/^t\d+ OK/m);
    } finally {
      held.release();
      other.close();
    }
    // Dovecot tells of it with the gateway's SEARCH: the client hears it then, not never.
    const out = await c.until(/^\* 1 FETCH \([^\r]*\\Flagged[^\r]*\)\r\n/m, 10_000);
    expect(out).toMatch(/^s1 OK/m);
    expect(await c.cmd('NOOP')).not.toMatch(/^\* \d+ FETCH/m);
    c.close();
  });

  it('a DONE sent while the session moves ends the IDLE with OK', async () => {
    await cluster.pin('dave', 'n1');
    const c = await RawImap.login(gw.n1, 'dave', USERS.dave);
    await c.cmd('SELECT INBOX');
    c.write('i IDLE\r\n');
    await c.until(/^\+ [^\r]*\r\n/m);
    const moving = move('dave', 'n2');
    c.write('DONE\r\n');
    expect(await c.until(/^i (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^i OK/m);
    await moving;
    expect(await c.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    expect(c.closed).toBe(false);
    c.close();
  });

  it('speaks VANISHED to a QRESYNC client, and the flags changed since its MODSEQ', async () => {
    await cluster.pin('erin', 'n1');
    const c = await RawImap.login(gw.n2, 'erin', USERS.erin);
    for (let i = 1; i <= 4; i++) await append(c, 'INBOX', `e${i}`);
    expect(await c.cmd('ENABLE QRESYNC')).toMatch(/^\* ENABLED QRESYNC/m);
    const sel = await c.cmd('SELECT INBOX');
    expect(sel).toMatch(/HIGHESTMODSEQ/);
    const model = new ClientModel();
    model.apply(await c.cmd('FETCH 1:* (UID)'));
    const other = await direct('n1', 'erin');
    await other.cmd('SELECT INBOX');
    await other.cmd('STORE 3 +FLAGS.SILENT (\\Deleted)');
    await other.cmd('EXPUNGE');
    await other.cmd('STORE 1 +FLAGS.SILENT (\\Answered)');
    other.close();
    expect((await move('erin', 'n2')).node).toBe('n2');
    const noop = await c.cmd('NOOP');
    expect(noop).toContain(`* VANISHED ${model.uids[2]}\r\n`);
    expect(noop).not.toMatch(/EXPUNGE/);
    // Only what changed since the client's MODSEQ: message 1, with its MODSEQ (CONDSTORE is on).
    expect(noop).toMatch(/^\* 1 FETCH \(UID \d+ FLAGS \([^)]*\\Answered[^)]*\) MODSEQ \(\d+\)\)/m);
    expect(noop).not.toMatch(/^\* 2 FETCH/m);
    model.apply(noop);
    expect(await serverMap(c)).toEqual(model.uids);
    c.close();
  });

  it('moves the connection to an owner whose shared folder is selected when the owner moves', async () => {
    await cluster.pin('frank', 'n1');
    await cluster.pin('alice', 'n2');
    const owner = await RawImap.login(gw.n1, 'frank', USERS.frank);
    expect(await owner.cmd('CREATE Team')).toMatch(/OK/);
    for (let i = 1; i <= 3; i++) await append(owner, 'Team', `t${i}`);
    expect(await owner.cmd('SETACL Team alice lrs')).toMatch(/^t\d+ OK/m);
    owner.close();
    const reader = await RawImap.login(gw.n2, 'alice', USERS.alice);
    expect(await reader.cmd('SELECT Shared/frank/Team')).toMatch(/^\* 3 EXISTS/m);
    const model = new ClientModel();
    model.apply(await reader.cmd('FETCH 1:* (UID)'));
    expect((await move('frank', 'n2')).node).toBe('n2');
    const noop = await reader.cmd('NOOP');
    expect(noop).toMatch(/^t\d+ OK/m);
    expect(reader.closed).toBe(false);
    expect(await reader.cmd('FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])')).toContain('Subject: t2');
    expect(await serverMap(reader)).toEqual(model.uids);
    reader.close();
  });

  it('falls back to BYE [UNAVAILABLE] when the mailbox cannot be the same (UIDVALIDITY changed)', async () => {
    await cluster.pin('bob', 'n1');
    const c = await RawImap.login(gw.n2, 'bob', USERS.bob);
    expect(await c.cmd('CREATE Again')).toMatch(/OK/);
    await append(c, 'Again', 'a1');
    await c.cmd('SELECT Again');
    const other = await direct('n1', 'bob');
    await other.cmd('DELETE Again');
    await other.cmd('CREATE Again');
    other.close();
    await move('bob', 'n2');
    await c.until(/^\* BYE \[UNAVAILABLE\][^\r]*\r\n/m, 10_000);
    await waitFor(() => c.closed, 5000, 'session closed');
    const metrics = await scrape(cluster.gateways[1]!.metricsAddress()!);
    expect(metrics.value('mailshare_gateway_session_migrations_total', { outcome: 'fell_back' })).toBeGreaterThanOrEqual(1);
  });

  it('falls back to BYE [UNAVAILABLE] while a saved search result ($, RFC 5182) is in use, and migrates again once the mailbox is reselected', async () => {
    await cluster.pin('erin', 'n1');
    const c = await RawImap.login(gw.n2, 'erin', USERS.erin);
    await c.cmd('SELECT INBOX');
    expect(await c.cmd('SEARCH RETURN (SAVE) ALL')).toMatch(/^t\d+ OK/m);
    await move('erin', 'n2');
    await c.until(/^\* BYE \[UNAVAILABLE\][^\r]*\r\n/m, 10_000);
    // A new SELECT forgets the saved result: that session moves.
    const d = await RawImap.login(gw.n2, 'erin', USERS.erin);
    await d.cmd('SELECT INBOX');
    await d.cmd('SEARCH RETURN (SAVE) ALL');
    await d.cmd('SELECT INBOX');
    await move('erin', 'n1');
    expect(await d.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    expect(d.closed).toBe(false);
    d.close();
  });

  it("moves sessions off a Dovecot that was killed (its gateway alive) once the node let its users go", async () => {
    await cluster.pin('alice', 'n1');
    const c = await RawImap.login(gw.n2, 'alice', USERS.alice);
    await append(c, 'INBOX', 'k1');
    await c.cmd('SELECT INBOX');
    const model = new ClientModel();
    model.apply(await c.cmd('FETCH 1:* (UID)'));
    expect(model.uids.length).toBeGreaterThan(0);
    const started = Date.now();
    // Master and children: the session's connection to it closes at once.
    dovecots[0]!.killAll();
    // The connection's end is seen at once (a command in flight then would be answered NO
    // [UNAVAILABLE]); a command sent after it waits while the session follows alice: n1's
    // gateway sees its Dovecot dead and lets alice go, and the session asks for her new node.
    await new Promise((r) => setTimeout(r, 300));
    const noop = await c.cmd('NOOP', 20_000);
    expect(noop).toMatch(/^t\d+ OK/m);
    expect(c.closed).toBe(false);
    expect((await locate('alice')).node).toBe('n2');
    expect(await serverMap(c)).toEqual(model.uids);
    console.log(`session moved off a killed Dovecot in ${Date.now() - started} ms`);
    c.close();
  }, 40_000);
});
