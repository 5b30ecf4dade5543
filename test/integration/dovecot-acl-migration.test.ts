import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotEntry, folderDirectory, formatDovecotAclFile } from '../../src/cli/dovecot-acl.js';
import { parseRights } from '../../src/domain/rights.js';
import { connectApi } from '../harness/api.js';
import { mailRoot, startDovecot } from '../harness/dovecot.js';
import { python } from '../harness/lines.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * `mailshare import dovecot-acl` / `export dovecot-acl`, the real binary
 * against a real coordinator, on Maildir++ trees written as Dovecot lays
 * them out (one directory per user, `.Folder.Sub` directories with
 * cur/new/tmp, a dovecot-acl file in each shared one).
 */
let etcd: EtcdCluster;
let server: InProcessServer;
const dir = tempDir('mailshare-dovecot-acl-');
let env: Record<string, string>;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path };
});
afterAll(async () => {
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

const ms = (...args: string[]) => runCli(args, { env, cwd: dir.path, timeoutMs: 120_000 });

/** A folder directory as Dovecot makes it (Maildir++), with an ACL file when given. */
function folder(root: string, user: string, name: string, acl?: string): void {
  const d = path.join(root, user, folderDirectory(name, 'maildir'));
  for (const sub of ['cur', 'new', 'tmp']) mkdirSync(path.join(d, sub), { recursive: true });
  if (acl !== undefined) writeFileSync(path.join(d, 'dovecot-acl'), acl);
}

const aclOf = async (api: ReturnType<typeof connectApi>, tenant: string, mailbox: string) =>
  Object.fromEntries((await api.acl.getAcl({ tenant, mailbox, actor: '' })).entries.map((e) => [e.identifier, e.rights]));

describe('mailshare import dovecot-acl', () => {
  it('registers the shared folders with their ACLs, says what it could not carry over and where the rules differ; a second run changes nothing', async () => {
    const api = connectApi(server.address, server.adminToken);
    const root = path.join(dir.path, 'mail');
    try {
      await api.directory.createTenant({ id: 'dc', domains: ['dc.test'] });
      await api.directory.setGroupMembers({ tenant: 'dc', name: 'temps', members: ['bob'], expectedRevision: 0 });
      folder(root, 'alice', 'INBOX', 'owner lrwstipekxa\nuser=bob lr\n');
      folder(root, 'alice', 'Projects/2026', 'owner lrwstipekxa\nuser=bob@dc.test lr\ngroup=temps lrsw\n-group=temps w\nauthenticated l\n');
      folder(root, 'alice', 'Entwürfe', 'owner lrwstipekxa\ngroup-override=admins lrwstipekxa\nuser=carol lr :x-flag\nuser=Not-A-User lr\nbogus line\n');
      folder(root, 'alice', 'Private');
      folder(root, 'bob', 'Public', 'owner lrwstipekxa\n');
      folder(root, 'bob', 'Drafts');
      writeFileSync(path.join(dir.path, 'global-acl'), 'Public* anyone lr\n');

      const dry = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'dc', '--global', path.join(dir.path, 'global-acl'), '--dry-run', '-o', 'json');
      expect([dry.code, dry.stderr]).toEqual([0, '']);
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, foldersScanned: 7, mailboxes: 4, created: 4, failed: 0 });
      expect((await api.mailbox.listMailboxes({ tenant: 'dc', owner: '', pageSize: 0, pageToken: '' })).mailboxes).toEqual([]);

      const run = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'dc', '--global', path.join(dir.path, 'global-acl'));
      expect([run.code, run.stderr]).toEqual([0, '']);
      expect(run.stdout).toMatch(/^7 folders scanned, 4 with ACLs: create 4 mailboxes, set \d+ entries, remove \d+; 0 already as in Dovecot$/m);
      expect(run.stdout).toContain('alice/Entwürfe: group-override=admins has no RFC 4314 equivalent: imported as group:admins, without its override of user entries');
      expect(run.stdout).toContain('alice/Entwürfe: named rights :x-flag of user=carol have no RFC 4314 equivalent; dropped');
      expect(run.stdout).toContain('alice/Entwürfe: user=Not-A-User is not a user id of this tenant; entry skipped');
      expect(run.stdout).toContain('alice/Entwürfe: dovecot-acl line 5: unknown identifier "bogus", line skipped');
      // bob is in temps: in Dovecot his own entry replaces what the group gives; RFC 4314 adds them up.
      expect(run.stdout).toContain(`alice/Projects/2026: bob: Dovecot "lr", mailshare "lrs"`);

      expect((await api.mailbox.listMailboxes({ tenant: 'dc', owner: '', pageSize: 0, pageToken: '' })).mailboxes.map((m) => m.mailbox).sort()).toEqual([
        'alice/Entwürfe',
        'alice/INBOX',
        'alice/Projects/2026',
        'bob/Public',
      ]);
      expect(await aclOf(api, 'dc', 'alice/Projects/2026')).toEqual({ alice: 'lrswipkxteacd', bob: 'lr', 'group:temps': 'lrsw', authenticated: 'l', '-group:temps': 'w' });
      expect(await aclOf(api, 'dc', 'alice/Entwürfe')).toEqual({ alice: 'lrswipkxteacd', 'group:admins': 'lrswipkxteacd', carol: 'lr' });
      expect(await aclOf(api, 'dc', 'bob/Public')).toEqual({ bob: 'lrswipkxteacd', anyone: 'lr' });
      expect((await api.acl.myRights({ tenant: 'dc', mailbox: 'alice/Projects/2026', user: 'bob' })).rights).toBe('lrs');

      // Resumable: a second run finds everything in place.
      const again = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'dc', '--global', path.join(dir.path, 'global-acl'), '-o', 'json');
      expect(JSON.parse(again.stdout)).toMatchObject({ created: 0, entriesSet: 0, entriesRemoved: 0, unchanged: 4 });
      // A changed file is followed: an entry gone in Dovecot goes here too.
      writeFileSync(path.join(root, 'alice', 'dovecot-acl'), 'owner lrwstipekxa\n');
      expect(JSON.parse((await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'dc', '--global', path.join(dir.path, 'global-acl'), '-o', 'json')).stdout)).toMatchObject({ entriesRemoved: 1, unchanged: 3 });
      expect(await aclOf(api, 'dc', 'alice/INBOX')).toEqual({ alice: 'lrswipkxteacd' });

      // The import's one change per mailbox is ReplaceAcl: audited with the ACL before and after.
      const audit = await api.audit.listAudit({ tenant: 'dc', pageSize: 1000, pageToken: '' });
      expect(audit.records.filter((r) => r.action === 'ReplaceAcl' && r.target === 'bob/Public').map((r) => [r.before, r.after])).toEqual([['bob=lrswipkxtea', 'anyone=lr bob=lrswipkxtea']]);
      // ReplaceAcl refuses what it cannot take, naming the entry, and changes nothing.
      const refused = async (entries: Array<{ identifier: string; rights: string }>, tenant = 'dc', mailbox = 'bob/Public') =>
        api.acl.replaceAcl({ tenant, mailbox, entries, expectedRevision: 0 }).then(() => 'accepted', (e: { code: number; details: string }) => `${e.code} ${e.details}`);
      expect(await refused([{ identifier: 'bob', rights: 'lr' }, { identifier: 'bob', rights: 'l' }])).toBe('3 entries[1].identifier: bob is given twice');
      expect(await refused([{ identifier: 'carol', rights: '+w' }])).toMatch(/^3 entries\[0\]\.rights: /);
      expect(await refused([{ identifier: 'carol', rights: '' }])).toBe('3 entries[0].rights: empty; leave the entry out');
      expect(await refused([{ identifier: 'Bad Id', rights: 'l' }])).toMatch(/^3 entries\[0\]\.identifier: /);
      expect(await aclOf(api, 'dc', 'bob/Public')).toEqual({ bob: 'lrswipkxteacd', anyone: 'lr' });

      // Bad input: one line, exit 2 or 1, nothing written.
      const noRoot = await ms('import', 'dovecot-acl', '--mail-root', path.join(dir.path, 'nope'), '--tenant', 'dc');
      expect([noRoot.code, noRoot.stdout]).toEqual([2, '']);
      expect(noRoot.stderr).toMatch(/^mailshare: --mail-root: \S+ is not a directory\n$/);
      const noTenant = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'ghost');
      expect(noTenant.code).toBe(1);
      expect(noTenant.stderr).toMatch(/^mailshare: NOT_FOUND: [^\n]*\n$/);
    } finally {
      api.close();
    }
  });

  it('round trip: import, then export into the same folders, writes the very files it read', async () => {
    const api = connectApi(server.address, server.adminToken);
    const root = path.join(dir.path, 'trip');
    try {
      await api.directory.createTenant({ id: 'trip', domains: [] });
      const users = ['ann', 'ben', 'cat', 'dan'];
      const files = new Map<string, string>();
      let seed = 7;
      const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
      for (let i = 0; i < 240; i++) {
        const owner = users[i % users.length]!;
        const name = i % 40 === 0 ? 'INBOX' : `${['Team', 'Projekte', 'Ärger', 'Work'][rnd(4)]}/${i}`;
        const entries: DovecotEntry[] = [{ kind: 'owner', negative: false, rights: parseRights('lrswipkxtea'), named: [] }];
        const other = users.filter((u) => u !== owner);
        if (rnd(2)) entries.push({ kind: 'user', name: other[rnd(other.length)]!, negative: false, rights: parseRights(['lr', 'lrs', 'lrswi'][rnd(3)]!), named: [] });
        if (rnd(2)) entries.push({ kind: 'user', name: other[rnd(other.length)]!, negative: true, rights: parseRights('w'), named: [] });
        if (rnd(2)) entries.push({ kind: 'group', name: ['sales', 'ops'][rnd(2)]!, negative: false, rights: parseRights('lr'), named: [] });
        if (rnd(3) === 0) entries.push({ kind: 'group', name: 'temps', negative: true, rights: parseRights('r'), named: [] });
        if (rnd(3) === 0) entries.push({ kind: 'authenticated', negative: false, rights: parseRights('l'), named: [] });
        if (rnd(4) === 0) entries.push({ kind: 'anyone', negative: false, rights: parseRights('lr'), named: [] });
        // One entry per identifier, as Dovecot keeps them.
        const seen = new Set<string>();
        const unique = entries.filter((e) => {
          const k = `${e.negative}${e.kind}${e.name}`;
          return !seen.has(k) && seen.add(k);
        });
        const text = formatDovecotAclFile(unique);
        if (files.has(`${owner}/${name}`)) continue;
        folder(root, owner, name, text);
        files.set(`${owner}/${name}`, text);
      }
      const imported = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'trip', '--parallel', '8', '-o', 'json');
      expect([imported.code, imported.stderr]).toEqual([0, '']);
      expect(JSON.parse(imported.stdout)).toMatchObject({ mailboxes: files.size, failed: 0, notes: [] });
      // Export into the same tree with the files gone.
      for (const ref of files.keys()) {
        const [owner, ...rest] = ref.split('/');
        rmSync(path.join(root, owner!, folderDirectory(rest.join('/'), 'maildir'), 'dovecot-acl'));
      }
      const exported = await ms('export', 'dovecot-acl', '--mail-root', root, '--tenant', 'trip');
      expect([exported.code, exported.stderr, exported.stdout]).toEqual([0, '', `wrote ${files.size} dovecot-acl files\n`]);
      for (const [ref, text] of files) {
        const [owner, ...rest] = ref.split('/');
        expect(readFileSync(path.join(root, owner!, folderDirectory(rest.join('/'), 'maildir'), 'dovecot-acl'), 'utf8'), ref).toBe(text);
      }
      // Nothing else was written into the tree.
      const stray = readdirSync(root, { recursive: true }).map(String).filter((f) => f.endsWith('.mailshare-tmp'));
      expect(stray).toEqual([]);
    } finally {
      api.close();
    }
  });

  it("imports the files real Dovecot wrote for IMAP SETACL, and its report matches the rights Dovecot itself gives (MYRIGHTS)", async () => {
    const api = connectApi(server.address, server.adminToken);
    const mail = mailRoot();
    const root = mail.path;
    const users = { alice: 'pw', bob: 'pw', carol: 'pw', dave: 'pw' };
    const dovecot = await startDovecot({ name: 'acl', mailRoot: root, users, master: { user: 'gateway', password: 'm' }, acl: true });
    try {
      // Dovecot's groups come from the userdb (acl_groups): bob is in temps, carol in sales.
      const passwd = path.join(dovecot.dir, 'users.passwd');
      writeFileSync(passwd, readFileSync(passwd, 'utf8').replace(/^(bob:.*)$/m, '$1userdb_acl_groups=temps').replace(/^(carol:.*)$/m, '$1userdb_acl_groups=sales'));
      const [host, port] = dovecot.address.split(':');
      const imap = (user: string, commands: string[][]) =>
        python(
          `
import imaplib, json, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], 'pw')
out = []
for c in json.loads(sys.argv[4]):
    typ, data = m._simple_command(*c) if c[0] != 'MYRIGHTS' else m._simple_command('MYRIGHTS', c[1])
    out.append([typ, [d.decode() if isinstance(d, bytes) else str(d) for d in m.response('MYRIGHTS')[1] if d] if c[0] == 'MYRIGHTS' else [d.decode() if isinstance(d, bytes) else str(d) for d in data]])
m.logout()
print(json.dumps(out))
`,
          [host!, port!, user, JSON.stringify(commands)],
        ).then((o) => JSON.parse(o) as Array<[string, unknown]>);
      const q = (s: string): string => `"${s}"`;
      const set = await imap('alice', [
        ['CREATE', q('Projects/2026')],
        ['SETACL', q('Projects/2026'), 'bob', 'lrw'],
        ['SETACL', q('Projects/2026'), '$temps', 'lrw'],
        ['SETACL', q('Projects/2026'), '-$temps', 'w'],
        ['SETACL', q('Projects/2026'), 'authenticated', 'l'],
        ['CREATE', q('Team')],
        ['SETACL', q('Team'), '$sales', 'lrs'],
        ['SETACL', q('Team'), 'carol', 'lr'],
        ['SETACL', q('Team'), 'dave', 'lr'],
      ]);
      expect(set.map(([typ]) => typ), JSON.stringify(set)).toEqual(Array(9).fill('OK'));
      // What Dovecot wrote is what the import reads.
      expect(readFileSync(path.join(root, 'alice', '.Projects.2026', 'dovecot-acl'), 'utf8')).toMatch(/^user=bob lrw$/m);

      await api.directory.createTenant({ id: 'real', domains: [] });
      await api.directory.setGroupMembers({ tenant: 'real', name: 'temps', members: ['bob'], expectedRevision: 0 });
      await api.directory.setGroupMembers({ tenant: 'real', name: 'sales', members: ['carol'], expectedRevision: 0 });
      const r = await ms('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'real', '-o', 'json');
      expect([r.code, r.stderr]).toEqual([0, '']);
      const report = JSON.parse(r.stdout) as { mailboxes: number; differences: Array<{ mailbox: string; what: string }>; notes: unknown[] };
      expect(report).toMatchObject({ mailboxes: 2, notes: [] });

      // Dovecot's own answer for each user, against the import's report and mailshare's rights.
      for (const [user, mailbox] of [['bob', 'Projects/2026'], ['carol', 'Team'], ['dave', 'Team'], ['carol', 'Projects/2026']] as const) {
        const [typ, lines] = ((await imap(user, [['MYRIGHTS', q(`shared/alice/${mailbox}`)]])) as Array<[string, string[]]>)[0]!;
        expect(typ, `${user} MYRIGHTS`).toBe('OK');
        const dovecotRights = /"?shared\/alice\/[^"]*"?\s+(\S+)/.exec(lines[0]!)![1]!;
        const ours = (await api.acl.myRights({ tenant: 'real', mailbox: `alice/${mailbox}`, user })).rights.replace(/[cd]/g, '');
        const sorted = (x: string): string => [...x].sort().join('');
        const reported = report.differences.find((d) => d.mailbox === `alice/${mailbox}` && d.what.startsWith(`${user}:`));
        if (sorted(dovecotRights) === sorted(ours)) expect(reported, `${user} on ${mailbox}: Dovecot ${dovecotRights}, mailshare ${ours}`).toBeUndefined();
        else expect(sorted(/Dovecot "([^"]*)"/.exec(reported?.what ?? '')?.[1] ?? 'not reported'), `${user} on ${mailbox}`).toBe(sorted(dovecotRights));
      }
      // The difference of this setup: carol's own entry replaces her group's rights in Dovecot.
      expect(report.differences).toContainEqual({ mailbox: 'alice/Team', what: 'carol: Dovecot "lr", mailshare "lrs"' });
    } finally {
      await dovecot.stop();
      mail.remove();
      api.close();
    }
  });
});
