import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap, message } from '../harness/imap.js';

/**
 * Extensions whose commands name mailboxes, through the gateways.
 * LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819):
 * the shared namespace's entries follow the selection and return options,
 * and their STATUS comes from the owner's node, only where the reader may
 * read (RFC 4314 §4). alice is on n1, bob on n2 (he connects through n2's
 * gateway, so every shared entry's STATUS crosses nodes). CATENATE
 * (RFC 4469): flags as the rights allow, URLs read with the reader's access
 * wherever the mailbox they name lives.
 * NOTIFY (RFC 5465): reports of shared mailboxes come from the owner's node,
 * named as the reader sees them, only while the reader may read them.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
let cluster: GatewayCluster;
let bob: RawImap;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true });
  await cluster.pin('alice', 'n1');
  await cluster.pin('bob', 'n2');
  const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice);
  for (const box of ['Team', 'Team/Sub', 'Private']) expect(await alice.cmd(`CREATE ${box}`)).toMatch(/^t\d+ OK/m);
  for (const text of ['one', 'two']) {
    const m = message(text);
    alice.write(`ap APPEND Team {${m.length}+}\r\n${m}\r\n`);
    expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
  }
  expect(await alice.cmd('SETACL Team bob lr')).toMatch(/^t\d+ OK/m);
  // Visible but not readable: listed, never its STATUS.
  expect(await alice.cmd('SETACL Team/Sub bob l')).toMatch(/^t\d+ OK/m);
  expect(await alice.cmd('CREATE Drop')).toMatch(/^t\d+ OK/m);
  expect(await alice.cmd('SETACL Drop bob lri')).toMatch(/^t\d+ OK/m);
  const secret = message('alice only');
  alice.write(`ap APPEND INBOX {${secret.length}+}\r\n${secret}\r\n`);
  expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
  alice.close();
  bob = await RawImap.login(cluster.gateways[1]!.address(), 'bob', USERS.bob);
}, 60_000);
afterAll(async () => {
  bob?.close();
  await cluster?.stop();
});

const lines = (out: string, re: RegExp): string[] => out.split('\r\n').filter((l) => re.test(l));

describe('LIST-EXTENDED and LIST-STATUS through the gateway', () => {
  it('offers both', async () => {
    expect(await bob.cmd('CAPABILITY')).toMatch(/^\* CAPABILITY .*\bLIST-EXTENDED\b.*\bLIST-STATUS\b/m);
  });

  it('RETURN (STATUS …): each readable shared mailbox gets its STATUS from the owner, after its LIST line', async () => {
    const out = await bob.cmd('LIST "" "Shared/*" RETURN (STATUS (MESSAGES UIDNEXT))');
    expect(out).toMatch(/^t\d+ OK/m);
    const all = out.split('\r\n');
    const team = all.findIndex((l) => /^\* LIST \([^)]*\) "\/" "Shared\/alice\/Team"$/.test(l));
    expect(team).toBeGreaterThanOrEqual(0);
    expect(all[team + 1]).toBe('* STATUS "Shared/alice/Team" (MESSAGES 2 UIDNEXT 3)');
    // Listed (l) but not readable (no r): no STATUS; parents never have one.
    expect(lines(out, /^\* LIST .*"Shared\/alice\/Team\/Sub"$/)).toHaveLength(1);
    expect(lines(out, /^\* STATUS /).sort()).toEqual(['* STATUS "Shared/alice/Drop" (MESSAGES 0 UIDNEXT 1)', '* STATUS "Shared/alice/Team" (MESSAGES 2 UIDNEXT 3)']);
    expect(out).not.toMatch(/Private/);
  });

  it('RETURN (STATUS …) for the user\'s own mailboxes comes from the home Dovecot as it is', async () => {
    const out = await bob.cmd('LIST "" "INBOX" RETURN (STATUS (MESSAGES))');
    expect(out).toMatch(/^\* LIST \([^)]*\) "\/" "?INBOX"?\r\n\* STATUS "?INBOX"? \(MESSAGES \d+\)/m);
  });

  it('(SUBSCRIBED): shared mailboxes count as subscribed, their parent levels do not', async () => {
    const out = await bob.cmd('LIST (SUBSCRIBED) "" "Shared/*"');
    expect(out).toMatch(/^t\d+ OK/m);
    expect(lines(out, /^\* LIST /).sort()).toEqual([
      '* LIST (\\HasChildren \\Subscribed) "/" "Shared/alice/Team"',
      '* LIST (\\HasNoChildren \\Subscribed) "/" "Shared/alice/Drop"',
      '* LIST (\\HasNoChildren \\Subscribed) "/" "Shared/alice/Team/Sub"',
    ]);
  });

  it('(SUBSCRIBED RECURSIVEMATCH): a level whose subscribed descendants were not matched says so (CHILDINFO)', async () => {
    const out = await bob.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Shared/%"');
    expect(lines(out, /^\* LIST /)).toEqual(['* LIST (\\Noselect \\HasChildren) "/" "Shared/alice" ("CHILDINFO" ("SUBSCRIBED"))']);
  });

  it('RETURN (SUBSCRIBED CHILDREN) and several patterns at once', async () => {
    const out = await bob.cmd('LIST "" ("INBOX" "Shared/alice/Team") RETURN (SUBSCRIBED CHILDREN)');
    expect(lines(out, /^\* LIST .*Shared/)).toEqual(['* LIST (\\HasChildren \\Subscribed) "/" "Shared/alice/Team"']);
    expect(lines(out, /^\* LIST .*INBOX/)).toHaveLength(1);
  });

  it('(SPECIAL-USE) lists no shared mailbox; a bad option is a tagged BAD with nothing added', async () => {
    expect(await bob.cmd('LIST (SPECIAL-USE) "" "*"')).not.toMatch(/Shared/);
    const bad = await bob.cmd('LIST (BOGUS) "" "*"');
    expect(bad).toMatch(/^t\d+ BAD/m);
    expect(bad).not.toMatch(/^\* LIST/m);
    expect(await bob.cmd('LIST "" "*" RETURN (BOGUS)')).toMatch(/^t\d+ BAD/m);
  });
});

describe('CATENATE through the gateway', () => {
  const text = (s: string): string => `TEXT {${s.length}+}\r\n${s}`;

  it('is offered, with URL-PARTIAL', async () => {
    const caps = await bob.cmd('CAPABILITY');
    expect(caps).toMatch(/^\* CAPABILITY .*\bCATENATE\b/m);
    expect(caps).toMatch(/^\* CAPABILITY .*\bURL-PARTIAL\b/m);
  });

  it('appends TEXT parts to a shared mailbox with i, leaving off flags the rights do not allow', async () => {
    const head = 'From: bob@example.com\r\nSubject: joined\r\n\r\n';
    const out = await bob.cmd(`APPEND Shared/alice/Drop (\\Seen \\Flagged) CATENATE (${text(head)} ${text('part two\r\n')})`);
    expect(out).toMatch(/^t\d+ OK/m);
    const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice);
    try {
      await alice.cmd('SELECT Drop');
      const got = await alice.cmd('FETCH 1 (FLAGS BODY.PEEK[])');
      expect(got).toContain(`${head}part two\r\n`);
      // lri: neither s nor w, so neither \Seen nor \Flagged.
      expect(got).toMatch(/FLAGS \((\\Recent)?\)/);
    } finally {
      alice.close();
    }
  });

  it("URL parts are read with the user's own access: into a shared mailbox, /INBOX is the user's INBOX, never the owner's", async () => {
    const mine = message('bob own words', 'bob body text');
    bob.write(`ap APPEND INBOX {${mine.length}+}\r\n${mine}\r\n`);
    expect(await bob.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
    const uid = Number(/UIDNEXT (\d+)/.exec(await bob.cmd('STATUS INBOX (UIDNEXT)'))![1]) - 1;
    const out = await bob.cmd(`APPEND Shared/alice/Drop CATENATE (URL "/INBOX/;UID=${uid}/;SECTION=TEXT" ${text('-- sent on\r\n')})`);
    expect(out).toMatch(/^t\d+ OK/m);
    const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice);
    try {
      await alice.cmd('SELECT Drop');
      const got = await alice.cmd('FETCH * BODY.PEEK[]');
      expect(got).toContain('bob body text');
      expect(got).toContain('-- sent on');
      expect(got).not.toContain('alice only');
    } finally {
      alice.close();
    }
  });

  it('a URL naming a shared mailbox is read from its owner\'s node; without r, or with a wrong UIDVALIDITY, it is NO [BADURL]', async () => {
    // alice's first message's header, then a body of bob's.
    const out = await bob.cmd(`APPEND INBOX CATENATE (URL "/Shared/alice/Team/;UID=1/;SECTION=HEADER" ${text('quoted by bob\r\n')})`);
    expect(out).toMatch(/^t\d+ OK/m);
    await bob.cmd('SELECT INBOX');
    const got = await bob.cmd('FETCH * BODY.PEEK[]');
    expect(got).toMatch(/Subject: one\r\n[\s\S]*\r\n\r\nquoted by bob/);
    expect(await bob.cmd('APPEND INBOX CATENATE (URL "/Shared/alice/Team/Sub/;UID=1")')).toMatch(/^t\d+ NO \[BADURL/m);
    expect(await bob.cmd('APPEND INBOX CATENATE (URL "/Shared/alice/Team;UIDVALIDITY=1/;UID=1")')).toMatch(/^t\d+ NO \[BADURL/m);
    expect(await bob.cmd('APPEND Shared/alice/Drop CATENATE (URL "/Shared/alice/Team/;UID=999")')).toMatch(/^t\d+ NO \[BADURL/m);
  });

  it('needs i, and is checked like any APPEND', async () => {
    expect(await bob.cmd(`APPEND Shared/alice/Team CATENATE (${text('x\r\n')})`)).toMatch(/^t\d+ NO \[NOPERM\]/m);
    expect(await bob.cmd('APPEND Shared/alice/Drop CATENATE (TEXT "not a literal")')).toMatch(/^t\d+ BAD/m);
    expect(await bob.cmd('APPEND Shared/alice/Drop (\\Seen)')).toMatch(/^t\d+ BAD/m);
  });

  it('in the user\'s own mailboxes, URLs name the user\'s own messages', async () => {
    const m = message('bob keeps this');
    bob.write(`ap APPEND INBOX {${m.length}+}\r\n${m}\r\n`);
    expect(await bob.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
    const uid = /UIDNEXT (\d+)/.exec(await bob.cmd('STATUS INBOX (UIDNEXT)'))![1]!;
    expect(await bob.cmd(`APPEND INBOX CATENATE (URL "/INBOX/;UID=${Number(uid) - 1}/;SECTION=HEADER" ${text('appended body\r\n')})`)).toMatch(/^t\d+ OK/m);
    await bob.cmd('SELECT INBOX');
    expect(await bob.cmd('FETCH * BODY.PEEK[TEXT]')).toContain('appended body');
  });
});

describe('NOTIFY through the gateway', () => {
  it('reports a shared mailbox changing on its owner\'s node, named as the reader sees it, until the right to read is gone', async () => {
    const carolless = await RawImap.login(cluster.gateways[1]!.address(), 'bob', USERS.bob);
    const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', USERS.alice);
    try {
      expect(await carolless.cmd('CAPABILITY')).toMatch(/^\* CAPABILITY .*\bNOTIFY\b/m);
      const set = await carolless.cmd('NOTIFY SET STATUS (MAILBOXES (INBOX Shared/alice/Team Shared/alice/Team/Sub) (MessageNew MessageExpunge))');
      expect(set).toMatch(/^t\d+ OK/m);
      // The initial STATUS of each mailbox the user may read (Team/Sub has l only: none).
      expect(set).toMatch(/^\* STATUS "Shared\/alice\/Team" \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+[^)]*\)/m);
      expect(set).not.toMatch(/Team\/Sub/);
      // (INBOX, the user's own, is the home Dovecot's: Dovecot's own suite tests that part, npm run test:imap-compliance.)

      const m = message('three');
      alice.write(`ap APPEND Team {${m.length}+}\r\n${m}\r\n`);
      expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
      // Unsolicited: bob sends nothing.
      expect(await carolless.until(/^\* STATUS "Shared\/alice\/Team" \([^)]*MESSAGES 3[^)]*\)\r\n/m, 10_000)).toBeTruthy();

      // alice takes back the right to read: no more reports of Team.
      expect(await alice.cmd('SETACL Team bob l')).toMatch(/^t\d+ OK/m);
      await new Promise((r) => setTimeout(r, 500));
      alice.write(`ap APPEND Team {${m.length}+}\r\n${m}\r\n`);
      expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
      const noop = await carolless.cmd('NOOP');
      await new Promise((r) => setTimeout(r, 1000));
      expect(noop + (await carolless.cmd('NOOP'))).not.toMatch(/MESSAGES 4/);
      expect(await alice.cmd('SETACL Team bob lr')).toMatch(/^t\d+ OK/m);

      expect(await carolless.cmd('NOTIFY NONE')).toMatch(/^t\d+ OK/m);
      expect(await carolless.cmd('NOTIFY SET (MAILBOXES Shared/alice/Team (Bogus))')).toMatch(/^t\d+ (NO|BAD)/m);
      expect(await carolless.cmd('NOTIFY SET (NOWHERE (MessageNew))')).toMatch(/^t\d+ BAD/m);
    } finally {
      carolless.close();
      alice.close();
    }
  }, 30_000);
});
