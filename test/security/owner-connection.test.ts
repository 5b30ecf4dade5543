import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawImap, message } from '../harness/imap.js';
import { VICTIM_USERS, type VictimCluster, startVictimCluster } from '../harness/victim-cluster.js';

/**
 * Regression tests for the ways a reader of one shared mailbox could make
 * the owner's connection (logged in as the owner through the master user)
 * run commands of the reader's choosing. Setup as the report had it: alice
 * on n1, bob on n2; alice shares Projects with bob as "lr" and Team as
 * "lri", and has Secret, Victim and an INBOX that bob must never reach.
 * Every effect is checked on alice's Dovecot directly.
 */
const USERS = VICTIM_USERS;
let victim: VictimCluster;
let gwBob: string;
let aliceDovecot: string;
let SECRET: string;
let before: string;

const snapshot = (): Promise<string> => victim.snapshot();

beforeAll(async () => {
  victim = await startVictimCluster();
  ({ gwBob, aliceDovecot, secret: SECRET } = victim);
  // Opening Projects once as bob changes \Recent; the snapshot leaves that out anyway.
  const bob = await RawImap.login(gwBob, 'bob', USERS.bob);
  expect(await bob.cmd('SELECT Shared/alice/Projects')).toMatch(/^t\d+ OK/m);
  bob.close();
  before = await snapshot();
  expect(before).toContain('Secret');
}, 120_000);
afterAll(async () => {
  await victim?.stop();
});

/** Logs bob in, optionally opens alice's Projects, sends `attack` raw, then a NOOP; returns all bob received. */
async function attack(bytes: string[], opts: { select?: boolean; waitFor?: RegExp } = {}): Promise<string> {
  const bob = await RawImap.login(gwBob, 'bob', USERS.bob);
  let seen = '';
  try {
    if (opts.select) seen += await bob.cmd('SELECT Shared/alice/Projects');
    for (const b of bytes) {
      bob.write(b);
      // A synchronizing literal: go on only after the server asked for it (as a client would).
      if (/\{\d+\}\r?\n$/.test(b)) seen += await bob.until(/^\+ /m);
    }
    if (opts.waitFor) seen += await bob.until(opts.waitFor);
    bob.write('zz NOOP\r\n');
    seen += await bob.until(/^zz (OK|NO|BAD)[^\r]*\r\n/m);
    return seen;
  } finally {
    bob.close();
  }
}

async function expectAliceUntouched(out: string): Promise<void> {
  expect(out).not.toContain(SECRET);
  expect(await snapshot()).toBe(before);
}

describe('a reader cannot act as the owner (C1)', () => {
  it('bare LF in the arguments of commands on a selected shared mailbox ends the command, never smuggles one', async () => {
    for (const line of [
      'f1 SEARCH ALL\nx1 SELECT Secret\nx2 FETCH 1:* (FLAGS BODY.PEEK[])\r\n',
      'f1 SEARCH ALL\nx1 DELETE Victim\r\n',
      'f1 FETCH 1 (FLAGS)\nx1 DELETE Secret\r\n',
      'f1 UID SEARCH ALL\nx1 SELECT INBOX\nx2 FETCH 1:* (BODY.PEEK[])\r\n',
      'f1 SORT (DATE) UTF-8 ALL\nx1 CREATE PWNED\r\n',
      'f1 THREAD REFERENCES UTF-8 ALL\nx1 CREATE PWNED\r\n',
      'n1 NOOP\nx1 STORE 1:* +FLAGS (\\Deleted)\nx2 EXPUNGE\r\n',
    ]) {
      await expectAliceUntouched(await attack([line], { select: true }));
    }
  });

  it('bare LF in STATUS items and SELECT parameters', async () => {
    await expectAliceUntouched(await attack(['t1 STATUS Shared/alice/Projects (MESSAGES)\nx1 CREATE PWNED\r\n']));
    await expectAliceUntouched(await attack(['s1 SELECT Shared/alice/Projects (CONDSTORE)\nx1 CREATE PWNED2\r\n']));
  });

  it('a literal inside an open quoted string is text, and the string ends with its line', async () => {
    const out = await attack(['f1 SEARCH TEXT "x{47+}\r\n\r\nx1 SELECT INBOX\r\nx2 FETCH 1:* (BODY.PEEK[])\r\n"\r\n'], { select: true });
    expect(out).toMatch(/^f1 BAD Missing '"'/m);
    await expectAliceUntouched(out);
    // The same without any SELECT, through STATUS items.
    await expectAliceUntouched(await attack(['t2 STATUS Shared/alice/Projects (MESSAGES "x{30}\r\n\r\nx1 CREATE PWNED-status\r\n")\r\n']));
  });

  it('literals are values: one in a STATUS item list is refused, one holding CRLF stays one value', async () => {
    const payload = '\r\nx1 CREATE PWNED-lit\r\n';
    const sync = await attack([`t3 STATUS Shared/alice/Projects ({${payload.length}}\r\n`, `${payload})\r\n`]);
    expect(sync).toMatch(/^t3 BAD/m);
    await expectAliceUntouched(sync);
    const nonsync = await attack([`f1 SEARCH TEXT {${payload.length}+}\r\n${payload}\r\n`], { select: true });
    expect(nonsync).toMatch(/^f1 OK/m);
    await expectAliceUntouched(nonsync);
  });

  it('ENABLE takes atoms only; nothing of a refused ENABLE is replayed on owner connections', async () => {
    const lit = 'CONDSTORE\r\nx1 CREATE PWNED-enable\r\n';
    const out = await attack([`e1 ENABLE {${lit.length}+}\r\n${lit}\r\n`, 's1 SELECT Shared/alice/Projects\r\n'], { waitFor: /^s1 OK/m });
    expect(out).toMatch(/^e1 BAD/m);
    await expectAliceUntouched(out);
  });

  it('after IDLE only the line DONE is passed on; anything else ends IDLE with BAD', async () => {
    const bob = await RawImap.login(gwBob, 'bob', USERS.bob);
    await bob.cmd('SELECT Shared/alice/Projects');
    bob.write('i1 IDLE\r\n');
    await bob.until(/^\+ /m);
    bob.write('DONE\nx2 CREATE PWNED-idle\r\n');
    const done = await bob.until(/^x2 (OK|NO|BAD)[^\r]*\r\n/m);
    expect(done).toMatch(/^i1 OK/m);
    bob.write('i2 IDLE\r\n');
    await bob.until(/^\+ /m);
    bob.write('DONE x3 DELETE Victim\r\n');
    expect(await bob.until(/^i2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^i2 BAD Expected DONE\./m);
    expect(await bob.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    bob.close();
    await expectAliceUntouched(done);
  });

  it('UID without a command is a BAD and the session goes on', async () => {
    const out = await attack(['u1 UID\r\n', 'u2 UID\r\n'], { select: true });
    expect(out).toMatch(/^u1 BAD/m);
    expect(out).toMatch(/^u2 BAD/m);
    expect(out).toMatch(/^zz OK/m);
    expect((await attack(['u3 UID\r\n'])).match(/^u3 BAD/m)).not.toBeNull();
  });

  it('every refused line gets a tagged answer, and commands the owner connection cannot take are refused', async () => {
    const out = await attack(['c1 COMPRESS BOGUS\r\n', 'c2 STARTTLS\r\n', 'c3 LOGIN alice alice-pw\r\n', 'c4 FETCH 1 (BODY[] X-EVIL)\r\n', 'c5 SEARCH NOSUCHKEY\r\n', 'c6 STORE 1 +FLAGS ("\\\\Seen")\r\n'], { select: true });
    for (const tag of ['c1 NO', 'c2 BAD', 'c3 BAD', 'c4 BAD', 'c5 BAD', 'c6 BAD']) expect(out).toContain(`\r\n${tag}`);
    await expectAliceUntouched(out);
  });
});

describe('MULTIAPPEND filters every message\'s flags (M3)', () => {
  it('flags the user may not set are left off each message, with or without a date', async () => {
    const m1 = message('m1');
    const m2 = message('m2');
    const bob = await RawImap.login(gwBob, 'bob', USERS.bob);
    bob.write(`a1 APPEND Shared/alice/Team (\\Deleted \\Seen) {${m1.length}+}\r\n${m1} (\\Deleted \\Seen \\Flagged $Evil) {${m2.length}+}\r\n${m2}\r\n`);
    expect(await bob.until(/^a1 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a1 OK/m);
    bob.write(`a2 APPEND Shared/alice/Team (\\Seen) "01-Jan-2026 10:00:00 +0000" {${m1.length}+}\r\n${m1} (\\Deleted \\Flagged $Evil) "02-Jan-2026 10:00:00 +0000" {${m2.length}}\r\n`);
    await bob.until(/^\+ /m);
    bob.write(`${m2}\r\n`);
    expect(await bob.until(/^a2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a2 OK/m);
    // A broken second message makes the whole APPEND fail: nothing of it is appended.
    bob.write(`a3 APPEND Shared/alice/Team {${m1.length}+}\r\n${m1} (\\Seen) "not a date" {${m2.length}+}\r\n${m2}\r\n`);
    expect(await bob.until(/^a3 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a3 (BAD|NO)/m);
    expect(await bob.cmd('NOOP')).toMatch(/^t\d+ OK/m);
    bob.close();
    const alice = await RawImap.login(aliceDovecot, 'alice', USERS.alice);
    const sel = await alice.cmd('SELECT Team');
    expect(sel).toMatch(/^\* 4 EXISTS/m);
    const flags = await alice.cmd('FETCH 1:* (FLAGS INTERNALDATE)');
    expect(flags).not.toMatch(/\\Deleted|\\Seen|\\Flagged|\$Evil/);
    expect(flags).toMatch(/02-Jan-2026 10:00:00 \+0000/);
    alice.close();
  });
});
