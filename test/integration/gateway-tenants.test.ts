import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { connectApi } from '../harness/api.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap, message } from '../harness/imap.js';

/**
 * Many tenants on one cluster, found by login domain: acme (acme.test, and
 * mail.acme.test as a second domain) and globex (globex.test) on the same
 * gateways and Dovecots, whose users are named user@primary-domain (a stock
 * multi-domain Dovecot). n1's gateway has no default tenant; n2's takes
 * logins without a domain as acme's.
 */
const USERS = { 'alice@acme.test': 'alice-pw', 'bob@acme.test': 'bob-pw', 'dave@globex.test': 'dave-pw', 'dave@acme.test': 'dave-acme-pw' };
let cluster: GatewayCluster;
let g1: string;
let g2: string;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, gateway: (node) => ({ tenant: node === 'n1' ? undefined : 'acme', loginPenalty: { baseMs: 10 } }) });
  const admin = connectApi(cluster.server.address, cluster.server.adminToken);
  await admin.directory.createTenant({ id: 'acme', domains: ['acme.test', 'mail.acme.test'] });
  const last = await admin.directory.createTenant({ id: 'globex', domains: ['globex.test'] });
  admin.close();
  for (const g of cluster.gateways) await g.agent.waitForRevision(last.revision);
  [g1, g2] = cluster.gateways.map((g) => g.address()) as [string, string];
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const locate = (tenant: string, user: string) => unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant, user, mailbox: '', assign: false }, cluster.server.adminToken);
async function login(gateway: string, user: string, password: string): Promise<{ c: RawImap; out: string }> {
  const c = await RawImap.connect(gateway);
  return { c, out: await c.cmd(`LOGIN "${user}" "${password}"`) };
}

describe('tenants by login domain', () => {
  it('user@domain logs in as that tenant\'s user (its id the local part), through any gateway, by any of its domains', async () => {
    const a = await login(g1, 'alice@acme.test', 'alice-pw');
    expect(a.out).toMatch(/^t\d+ OK/m);
    expect(await a.c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    a.c.close();
    expect((await locate('acme', 'alice')).node).not.toBe('');
    const alias = await login(g2, 'alice@Mail.Acme.Test', 'alice-pw');
    expect(alias.out).toMatch(/^t\d+ OK/m);
    alias.c.close();
    const d = await login(g1, 'dave@globex.test', 'dave-pw');
    expect(d.out).toMatch(/^t\d+ OK/m);
    d.c.close();
    expect((await locate('globex', 'dave')).node).not.toBe('');
    expect((await locate('acme', 'dave')).node).toBe('');
    const wrong = await login(g1, 'alice@acme.test', 'nope');
    expect(wrong.out).toMatch(/^t\d+ NO \[AUTHENTICATIONFAILED\]/m);
    wrong.c.close();
  });

  it('a domain no tenant owns is refused like a wrong password, with nothing written to etcd', async () => {
    const etcd = createEtcdClient({ endpoints: cluster.etcd.endpoints });
    try {
      const before = Number((await etcd.get('probe').exec()).header.revision);
      for (const g of [g1, g2]) {
        const r = await login(g, 'nobody@unknown.test', 'x');
        expect(r.out).toMatch(/^t\d+ NO \[AUTHENTICATIONFAILED\]/m);
        r.c.close();
      }
      expect(Number((await etcd.get('probe').exec()).header.revision)).toBe(before);
    } finally {
      etcd.close();
    }
  });

  it('a login without a domain: refused without a default tenant, the default tenant\'s user with one', async () => {
    const none = await login(g1, 'bob', 'bob-pw');
    expect(none.out).toMatch(/^t\d+ NO \[AUTHENTICATIONFAILED\]/m);
    none.c.close();
    const dflt = await login(g2, 'bob', 'bob-pw');
    expect(dflt.out).toMatch(/^t\d+ OK/m);
    expect(await dflt.c.cmd('SELECT INBOX')).toMatch(/^t\d+ OK/m);
    dflt.c.close();
    expect((await locate('acme', 'bob')).node).not.toBe('');
  });

  it('shares stay within the tenant: bob sees alice\'s folder, dave of globex does not', async () => {
    await cluster.pin('alice', 'n1');
    await cluster.pin('bob', 'n2');
    const alice = (await login(g1, 'alice@acme.test', 'alice-pw')).c;
    expect(await alice.cmd('CREATE Team')).toMatch(/^t\d+ OK/m);
    const m = message('for the team');
    alice.write(`ap APPEND Team {${m.length}+}\r\n${m}\r\n`);
    expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
    expect(await alice.cmd('SETACL Team bob lr')).toMatch(/^t\d+ OK/m);
    alice.close();
    // bob reads it on alice's node, through the owner connection as alice@acme.test.
    const bob = (await login(g2, 'bob@acme.test', 'bob-pw')).c;
    expect(await bob.cmd('LIST "" "Shared/*"')).toMatch(/"Shared\/alice\/Team"/);
    expect(await bob.cmd('SELECT Shared/alice/Team')).toMatch(/^\* 1 EXISTS/m);
    expect(await bob.cmd('FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]')).toMatch(/for the team/);
    bob.close();
    const dave = (await login(g1, 'dave@globex.test', 'dave-pw')).c;
    expect(await dave.cmd('LIST "" "Shared/*"')).not.toMatch(/alice/);
    expect(await dave.cmd('SELECT Shared/alice/Team')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    expect(await dave.cmd('GETACL Shared/alice/Team')).toMatch(/^t\d+ NO/m);
    dave.close();
  });

  it('an ACL identifier with a domain is the tenant\'s user when the domain is the tenant\'s own; another tenant\'s is refused and nothing stored', async () => {
    const alice = (await login(g1, 'alice@acme.test', 'alice-pw')).c;
    try {
      expect(await alice.cmd('SETACL Team carol@mail.acme.test lr')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('SETACL Team dave@globex.test lr')).toMatch(/^t\d+ NO \[CANNOT\] .*own organisation/m);
      expect(await alice.cmd('SETACL Team -eve@unknown.test r')).toMatch(/^t\d+ NO \[CANNOT\]/m);
      const acl = await alice.cmd('GETACL Team');
      expect(acl).toMatch(/"carol" "lr"/);
      expect(acl).not.toMatch(/dave|globex|eve/);
      expect(await alice.cmd('DELETEACL Team carol@acme.test')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('GETACL Team')).not.toMatch(/carol/);
    } finally {
      alice.close();
    }
  });
});

describe('isolation between tenants', () => {
  /** Every command that names a mailbox, on `box`; APPEND and COPY write, the rest read or change. */
  const commands = (box: string): string[] => [
    `SELECT "${box}"`,
    `EXAMINE "${box}"`,
    `STATUS "${box}" (MESSAGES UIDNEXT)`,
    `CREATE "${box}/Sub"`,
    `DELETE "${box}"`,
    `RENAME "${box}" "${box}2"`,
    `SUBSCRIBE "${box}"`,
    `GETACL "${box}"`,
    `SETACL "${box}" alice lrswi`,
    `DELETEACL "${box}" anyone`,
    `LISTRIGHTS "${box}" alice`,
    `MYRIGHTS "${box}"`,
    `LIST "" "${box}*" RETURN (STATUS (MESSAGES))`,
    `NOTIFY SET STATUS (MAILBOXES "${box}" (MessageNew MessageExpunge))`,
  ];

  it("an acme user reaches nothing of globex's dave, under any name, with any command; acme's own dave is another person", async () => {
    // globex's dave shares Secret with everyone of globex.
    const gdave = (await login(g1, 'dave@globex.test', 'dave-pw')).c;
    expect(await gdave.cmd('CREATE Secret')).toMatch(/^t\d+ OK/m);
    const secret = message('globex only');
    gdave.write(`ap APPEND Secret {${secret.length}+}\r\n${secret}\r\n`);
    expect(await gdave.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap OK/m);
    expect(await gdave.cmd('SETACL Secret anyone lrswi')).toMatch(/^t\d+ OK/m);
    const before = await gdave.cmd('STATUS Secret (MESSAGES UIDNEXT HIGHESTMODSEQ)');
    gdave.close();

    const names = ['Shared/dave/Secret', 'Shared/dave@globex.test/Secret', 'Shared/dave%40globex.test/Secret', 'Shared/globex/dave/Secret', 'Shared/dave/Secret&AC8-x', 'Shared/DAVE/Secret'];
    for (const g of [g1, g2]) {
      const alice = (await login(g, 'alice@acme.test', 'alice-pw')).c;
      try {
        const all = await alice.cmd('LIST "" "*"');
        expect(all).not.toMatch(/Secret|globex/);
        for (const box of names) {
          for (const cmd of commands(box)) {
            const out = await alice.cmd(cmd);
            expect(out, `${cmd} through ${g}`).not.toMatch(/globex only|\* STATUS "[^"]*Secret" \(MESSAGES [1-9]/);
            if (!/^(LIST|NOTIFY|SUBSCRIBE)/.test(cmd)) expect(out, `${cmd} through ${g}`).toMatch(/^t\d+ (NO|BAD)/m);
          }
          const m = message('from acme');
          alice.write(`ap APPEND "${box}" {${m.length}+}\r\n${m}\r\n`);
          expect(await alice.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m), `APPEND ${box}`).toMatch(/^ap (NO|BAD)/m);
          expect(await alice.cmd(`APPEND INBOX CATENATE (URL "/${box}/;UID=1")`), `CATENATE ${box}`).toMatch(/^t\d+ NO/m);
          await alice.cmd('SELECT INBOX');
          expect(await alice.cmd(`COPY 1:* "${box}"`), `COPY ${box}`).toMatch(/^t\d+ (NO|BAD)/m);
        }
        expect(await alice.cmd('SETACL INBOX dave@globex.test lr')).toMatch(/^t\d+ NO \[CANNOT\]/m);
      } finally {
        alice.close();
      }
    }
    // acme's own dave (dave@acme.test) has a mailbox of the same name: it is his, and alice may see it
    // only if he shares it.
    const adave = (await login(g2, 'dave@acme.test', 'dave-acme-pw')).c;
    expect(await adave.cmd('CREATE Secret')).toMatch(/^t\d+ OK/m);
    expect(await adave.cmd('STATUS Secret (MESSAGES)')).toMatch(/\(MESSAGES 0\)/);
    adave.close();
    const alice = (await login(g1, 'alice@acme.test', 'alice-pw')).c;
    expect(await alice.cmd('STATUS Shared/dave/Secret (MESSAGES)')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    alice.close();
    // globex's dave's mailbox is as it was.
    const again = (await login(g1, 'dave@globex.test', 'dave-pw')).c;
    const statusLine = (out: string): string | undefined => /^\* STATUS .*$/m.exec(out)?.[0];
    expect(statusLine(await again.cmd('STATUS Secret (MESSAGES UIDNEXT HIGHESTMODSEQ)'))).toBe(statusLine(before));
    expect(statusLine(before)).toMatch(/MESSAGES 1 /);
    again.close();
  }, 120_000);
  it("globex's dave reaches nothing of acme: neither alice's folder shared with bob nor her own", async () => {
    const dave = (await login(g2, 'dave@globex.test', 'dave-pw')).c;
    try {
      for (const box of ['Shared/alice/Team', 'Shared/alice@acme.test/Team', 'Shared/alice/INBOX', 'Shared/bob/INBOX']) {
        for (const cmd of commands(box)) {
          const out = await dave.cmd(cmd);
          expect(out, cmd).not.toMatch(/for the team|\* STATUS "[^"]*" \(MESSAGES [1-9]/);
          if (!/^(LIST|NOTIFY|SUBSCRIBE)/.test(cmd)) expect(out, cmd).toMatch(/^t\d+ (NO|BAD)/m);
        }
        expect(await dave.cmd(`APPEND INBOX CATENATE (URL "/${box}/;UID=1")`), box).toMatch(/^t\d+ NO/m);
      }
      expect(await dave.cmd('SETACL INBOX alice@acme.test lr')).toMatch(/^t\d+ NO \[CANNOT\]/m);
    } finally {
      dave.close();
    }
  }, 60_000);

  it('random identifiers and names that look like other tenants\' never land in an ACL nor open their mailboxes (seeded)', async () => {
    let seed = Number(process.env.FUZZ_SEED ?? 20261201);
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const parts = ['dave', 'bob', 'alice', '@', '@globex.test', '@acme.test', '@mail.acme.test', '@GLOBEX.TEST', '@globex.test.', '%40', '&AEA-', 'group:', '-', '.', 'x', 'anyone', '@@'];
    const alice = (await login(g1, 'alice@acme.test', 'alice-pw')).c;
    try {
      for (let i = 0; i < 150; i++) {
        let id = '';
        for (let k = 1 + rnd(4); k > 0; k--) id += parts[rnd(parts.length)];
        const out = await alice.cmd(`SETACL Team "${id}" lr`);
        expect(out, id).toMatch(/^t\d+ (OK|NO|BAD)/m);
      }
      const acl = await alice.cmd('GETACL Team');
      const ids = [...acl.matchAll(/"([^"]+)" "[a-z]*"/g)].map((m) => m[1]!);
      // Whatever was accepted names a user of acme, without a domain (or a group, anyone, authenticated).
      expect(ids.filter((x) => x.includes('@') || /globex/i.test(x))).toEqual([]);
      // Mailbox names built the same way never open globex's dave's Secret.
      const names = ['Shared/', 'dave', 'DAVE', '@globex.test', '&AEA-globex.test', '%40globex.test', '/', 'Secret', 'SECRET', '&AC8-', '.', 'globex/'];
      for (let i = 0; i < 150; i++) {
        let box = 'Shared/';
        for (let k = 1 + rnd(5); k > 0; k--) box += names[rnd(names.length)];
        const out = await alice.cmd(`STATUS "${box}" (MESSAGES)`);
        expect(out, box).not.toMatch(/\(MESSAGES [1-9]/);
        const sel = await alice.cmd(`EXAMINE "${box}"`);
        expect(sel, box).not.toMatch(/^t\d+ OK/m);
      }
    } finally {
      alice.close();
    }
  }, 60_000);

  it('within a tenant, the same commands do what the rights say: all on one\'s own mailbox, reads only on a folder shared lr', async () => {
    // bob holds lr on alice's Team (the sharing test above): reads work, every write is NOPERM.
    const expectShared: Record<string, RegExp> = {
      SELECT: /^\* OK \[READ-ONLY\]|^t\d+ OK \[READ-ONLY\]/m,
      EXAMINE: /^t\d+ OK/m,
      STATUS: /^\* STATUS "Shared\/alice\/Team" \(MESSAGES 1 UIDNEXT \d+\)/m,
      CREATE: /^t\d+ NO \[NOPERM\]/m,
      DELETE: /^t\d+ NO \[NOPERM\]/m,
      RENAME: /^t\d+ NO/m,
      SUBSCRIBE: /^t\d+ OK/m,
      GETACL: /^t\d+ NO \[NOPERM\]/m,
      SETACL: /^t\d+ NO \[NOPERM\]/m,
      DELETEACL: /^t\d+ NO \[NOPERM\]/m,
      LISTRIGHTS: /^t\d+ NO \[NOPERM\]/m,
      MYRIGHTS: /^\* MYRIGHTS "Shared\/alice\/Team" "lr"/m,
      LIST: /^\* STATUS "Shared\/alice\/Team" \(MESSAGES 1\)/m,
      NOTIFY: /^t\d+ OK/m,
    };
    for (const g of [g1, g2]) {
      const bob = (await login(g, 'bob@acme.test', 'bob-pw')).c;
      try {
        for (const cmd of commands('Shared/alice/Team')) {
          const verb = cmd.split(' ')[0]!;
          expect(await bob.cmd(cmd), `${cmd} through ${g}`).toMatch(expectShared[verb]!);
        }
        const m = message('from bob');
        bob.write(`ap APPEND "Shared/alice/Team" {${m.length}+}\r\n${m}\r\n`);
        expect(await bob.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^ap NO \[NOPERM\]/m);
        await bob.cmd('NOTIFY NONE');
      } finally {
        bob.close();
      }
    }
    // alice on a mailbox of her own: every command works (DELETE last).
    const alice = (await login(g1, 'alice@acme.test', 'alice-pw')).c;
    try {
      expect(await alice.cmd('CREATE Own')).toMatch(/^t\d+ OK/m);
      for (const cmd of commands('Own').filter((c) => !/^(DELETE|RENAME) /.test(c))) expect(await alice.cmd(cmd), cmd).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('NOTIFY NONE')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('RENAME Own Own2')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('DELETE Own2/Sub')).toMatch(/^t\d+ OK/m);
      expect(await alice.cmd('DELETE Own2')).toMatch(/^t\d+ OK/m);
    } finally {
      alice.close();
    }
  }, 60_000);
});
