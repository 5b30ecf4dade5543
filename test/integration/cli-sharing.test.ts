import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startTestNode } from '../harness/node-client.js';
import { waitFor } from '../harness/process.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

let etcd: EtcdCluster;
let server: InProcessServer;
const dir = tempDir('mailshare-cli-sharing-');
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

const ms = async (...args: string[]) => {
  const r = await runCli(args, { env, cwd: dir.path });
  return r;
};
const ok = async (...args: string[]) => {
  const r = await ms(...args);
  expect(r.stderr, `mailshare ${args.join(' ')}`).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
};
const json = async (...args: string[]) => JSON.parse(await ok(...args, '-o', 'json'));

describe('global options', () => {
  it('are taken before the command too; a command without them refuses them', async () => {
    const noAddr = { MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path };
    const before = await runCli(['--addr', server.address, '--timeout', '5s', 'tenant', 'list'], { env: noAddr, cwd: dir.path });
    expect(before.stderr).toBe('');
    expect(before.code).toBe(0);
    // Its own flag wins over one given before the command.
    const both = await runCli(['--addr', '127.0.0.1:1', 'node', 'list', '--addr', server.address], { env: noAddr, cwd: dir.path });
    expect(both.code).toBe(0);
    const server_ = await runCli(['--credentials', 'x.json', 'server'], { env: noAddr, cwd: dir.path });
    expect(server_.code).toBe(2);
    expect(server_.stderr).toBe('mailshare: --credentials: not an option of "mailshare server"; give it after the command\n');
  });
});

describe('sharing from the CLI (README examples)', () => {
  it('runs the documented flow: tenant, mailbox, ACL forms, groups, share list, audit', async () => {
    expect(await ok('tenant', 'create', 'acme')).toMatch(/^tenant:\s+acme$/m);
    const updated = await json('tenant', 'update', 'acme', '--no-allow-anyone', '--max-shares', '20');
    expect(updated.settings).toEqual({ allowAnyone: false, maxSharesPerMailbox: 20 });
    expect((await json('tenant', 'update', 'acme', '--allow-anyone', '--expected-revision', String(updated.revision))).settings.allowAnyone).toBe(true);
    expect(await ok('tenant', 'get', 'acme')).toMatch(/^max shares:\s+20$/m);
    expect(await ok('tenant', 'list')).toMatch(/^acme\s+-\s+true\s+20\s/m);
    expect(await ok('mailbox', 'create', 'acme', 'alice', 'Projects')).toMatch(/^mailbox:\s+alice\/Projects$/m);
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', 'bob', 'lrs')).toBe('bob lrs\n');
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', 'bob', '+w')).toBe('bob lrsw\n');
    // Negative identifiers and rights to remove need no "--" (which still works).
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', '-bob', 'w')).toBe('-bob w\n');
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', 'bob', '-s')).toBe('bob lrw\n');
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', '-oscar', 'r', '-o', 'json')).toMatch(/"identifier": "-oscar"/);
    expect(await ok('acl', 'delete', 'acme', 'alice/Projects', '-oscar')).toBe('deleted -oscar\n');
    expect(await ok('acl', 'set', 'acme', 'alice/Projects', '--', '-group:temps', 'w')).toBe('-group:temps w\n');
    expect(await ok('acl', 'delete', 'acme', 'alice/Projects', '-group:temps', '-ojson')).toMatch(/"identifier": "-group:temps"/);
    expect(await ok('acl', 'rights', 'acme', 'alice/Projects', 'bob')).toBe('lr\n');
    expect((await json('group', 'set', 'acme', 'sales', 'bob', 'carol')).members).toEqual(['bob', 'carol']);
    expect((await json('group', 'add', 'acme', 'sales', 'dave')).members).toEqual(['bob', 'carol', 'dave']);
    // Several members in one change (one revision), duplicates and members already there once.
    const before = (await json('group', 'get', 'acme', 'sales')).revision;
    const added = await json('group', 'add', 'acme', 'sales', 'erin', 'frank', 'erin', 'bob');
    expect(added.members).toEqual(['bob', 'carol', 'dave', 'erin', 'frank']);
    expect(added.revision).toBeGreaterThan(before);
    expect((await json('group', 'remove', 'acme', 'sales', 'bob', 'erin', 'frank')).members).toEqual(['carol', 'dave']);
    const badMember = await ms('group', 'add', 'acme', 'sales', 'gina', 'Not A User');
    expect(badMember.code).toBe(1);
    expect(badMember.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: members\[1\]: [^\n]*\n$/);
    expect((await json('group', 'get', 'acme', 'sales')).members).toEqual(['carol', 'dave']);
    expect(await ok('group', 'list', 'acme')).toMatch(/^sales\s+carol dave$/m);
    expect(await ok('group', 'get', 'acme', 'sales')).toBe('group:sales (2 members, revision ' + (await json('group', 'get', 'acme', 'sales')).revision + ')\n  carol\n  dave\n');
    await ok('group', 'set', 'acme', 'temp');
    expect(await ok('group', 'delete', 'acme', 'temp')).toBe('deleted group:temp\n');
    await ok('acl', 'set', 'acme', 'alice/Projects', 'group:sales', 'lr');

    const acl = await json('acl', 'get', 'acme', 'alice/Projects');
    expect(acl.entries).toEqual([
      { identifier: 'alice', rights: 'lrswipkxteacd' },
      { identifier: 'bob', rights: 'lrw' },
      { identifier: 'group:sales', rights: 'lr' },
      { identifier: '-bob', rights: 'w' },
    ]);
    expect(await ok('acl', 'listrights', 'acme', 'alice/Projects', 'alice')).toBe('la r s w i p k x t e c d\n');
    expect((await json('share', 'list', 'acme', 'carol')).mailboxes).toEqual([
      expect.objectContaining({ mailbox: 'alice/Projects', rights: 'lr' }),
    ]);
    expect(await ok('share', 'list', 'acme', 'bob')).toMatch(/^alice\/Projects\s+lr$/m);

    await ok('acl', 'delete', 'acme', 'alice/Projects', 'group:sales');
    expect((await json('share', 'list', 'acme', 'carol')).mailboxes).toEqual([]);

    const renamed = await json('mailbox', 'rename', 'acme', 'alice/Projects', 'Work');
    expect(renamed.mailboxes[0].mailbox).toBe('alice/Work');
    expect((await json('mailbox', 'list', 'acme', 'alice')).mailboxes.map((m: { name: string }) => m.name)).toEqual(['Work']);
    expect(await ok('mailbox', 'list', 'acme')).toMatch(/^alice\/Work\s+[0-9a-f]{16}\s+alice=lrswipkxteacd bob=lrw -bob=w$/m);
    const rev = (await json('mailbox', 'get', 'acme', 'alice/Work')).revision;
    const stale = await ms('acl', 'set', 'acme', 'alice/Work', 'carol', 'l', '--expected-revision', String(rev - 1));
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/^mailshare: ABORTED: expected_revision: /);
    await ok('acl', 'set', 'acme', 'alice/Work', 'carol', 'l', '--expected-revision', String(rev));
    expect((await json('mailbox', 'get', 'acme', 'alice/Work')).acl).toContainEqual({ identifier: 'bob', rights: 'lrw' });

    const audit = await json('audit', 'list', 'acme');
    expect(audit.records.map((r: { action: string }) => r.action)).toContain('RenameMailbox');
    expect(await ok('audit', 'list', 'acme')).toMatch(/SetAcl\s+alice\/Projects bob\s+lrs -> lrsw/);

    await ok('mailbox', 'delete', 'acme', 'alice/Work');
    const refused = await ms('tenant', 'delete', 'acme');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^mailshare: FAILED_PRECONDITION: id: tenant "acme" still has groups; delete them first, or delete with force \(mailshare tenant delete --force\)\n$/);
    // A dry run checks as the real call (refused without --force) and says what would go.
    expect((await ms('tenant', 'delete', 'acme', '--dry-run')).stderr).toBe(refused.stderr);
    expect(await ok('tenant', 'delete', 'acme', '--force', '--dry-run')).toMatch(/^would delete tenant acme with 0 mailboxes, \d+ groups; nothing written\n$/);
    expect((await json('tenant', 'list')).tenants.map((t: { id: string }) => t.id)).toContain('acme');
    expect(await ok('tenant', 'delete', 'acme', '--force')).toBe('deleted tenant acme\n');
    expect((await json('tenant', 'list')).tenants).toEqual([]);
  }, 90_000);

  it.each([
    [['acl', 'set', 'acme2', 'alice/P', 'bob', 'lrq'], 1, /^mailshare: INVALID_ARGUMENT: rights: unknown right "q"/],
    [['acl', 'set', 'acme2', 'alice/P', 'Bob!', 'lr'], 1, /^mailshare: INVALID_ARGUMENT: identifier: /],
    [['acl', 'get', 'acme2', 'nobody'], 1, /^mailshare: INVALID_ARGUMENT: mailbox: "nobody" is not OWNER\/NAME/],
    [['acl', 'get', 'acme2', 'alice/Nope'], 1, /^mailshare: NOT_FOUND: mailbox: mailbox "alice\/Nope" does not exist/],
    [['mailbox', 'create', 'acme2', 'alice', 'a//b'], 1, /^mailshare: INVALID_ARGUMENT: name: /],
    [['tenant', 'create', 'Acme'], 1, /^mailshare: INVALID_ARGUMENT: id: "Acme" is not a tenant id/],
    [['tenant', 'create', 'x', '--max-shares', '99'], 1, /^mailshare: INVALID_ARGUMENT: settings.max_shares_per_mailbox: must be between 1 and 50/],
    [['tenant', 'create', 'x', '--max-shares', 'many'], 2, /^mailshare: option '--max-shares <n>' argument 'many' is invalid/],
    [['acl', 'set', 'acme2', 'alice/P', 'bob', 'lr', '--expected', '3'], 2, /^mailshare: unknown option '--expected'/],
    [['mailbox', 'delete', 'acme2', 'alice/P', '--expected-revision', 'x'], 2, /argument 'x' is invalid/],
  ])('%j → exit %i with one line naming the problem', async (args, code, message) => {
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'acme2', domains: [] }).catch(() => undefined);
      await api.mailbox.createMailbox({ tenant: 'acme2', owner: 'alice', name: 'P', actor: '' }).catch(() => undefined);
    } finally {
      api.close();
    }
    const r = await ms(...(args as string[]));
    expect(r.code).toBe(code);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^mailshare: [^\n]+\n$/);
    expect(r.stderr).toMatch(message as RegExp);
  });

  it('acl set with empty rights is refused (exit 2), pointing to acl delete, and the entry stays', async () => {
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'acme3', domains: [] }).catch(() => undefined);
      await api.mailbox.createMailbox({ tenant: 'acme3', owner: 'alice', name: 'P', actor: '' }).catch(() => undefined);
      await api.acl.setAcl({ tenant: 'acme3', mailbox: 'alice/P', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
      const r = await ms('acl', 'set', 'acme3', 'alice/P', 'bob', '');
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe("mailshare: rights: empty; to remove bob's entry use: mailshare acl delete acme3 alice/P bob\n");
      const acl = await api.acl.getAcl({ tenant: 'acme3', mailbox: 'alice/P', actor: '' });
      expect(acl.entries).toContainEqual(expect.objectContaining({ identifier: 'bob', rights: 'lr' }));
    } finally {
      api.close();
    }
  });
});

describe('acl explain', () => {
  it("says why a user has the rights they have: every entry, the rules, visibility, and the owner's node", async () => {
    const api = connectApi(server.address, server.adminToken);
    const nodeToken = (await api.auth.createToken({ role: 'node:imap1', description: '' })).token;
    const node = await startTestNode(server.address, nodeToken, { name: 'imap1', ttlSeconds: 5 });
    try {
      await api.directory.createTenant({ id: 'expl', domains: [] });
      await api.mailbox.createMailbox({ tenant: 'expl', owner: 'alice', name: 'Team', actor: '' });
      for (const [identifier, rights] of [['bob', 'lr'], ['group:sales', 'lrsw'], ['-group:temps', 'w'], ['carol', 'lrswi'], ['authenticated', 'l']] as const) {
        await api.acl.setAcl({ tenant: 'expl', mailbox: 'alice/Team', identifier, rights, expectedRevision: 0, actor: '' });
      }
      await api.directory.setGroupMembers({ tenant: 'expl', name: 'sales', members: ['bob', 'dave'], expectedRevision: 0 });
      await api.directory.setGroupMembers({ tenant: 'expl', name: 'temps', members: ['bob'], expectedRevision: 0 });
      await waitFor(async () => /^imap1\s+active\s/m.test(await ok('node', 'list')), 5000, 'imap1 listed');
      const at = await json('user', 'locate', 'expl', 'alice', '--assign');
      expect(at).toMatchObject({ node: 'imap1', assigned: true });

      const bob = await json('acl', 'explain', 'expl', 'alice/Team', 'bob');
      expect(bob).toMatchObject({ user: 'bob', rights: 'lrs', granted: 'lrsw', denied: 'w', owner: false, listed: true, exists: true, groups: ['sales', 'temps'] });
      expect(bob.entries.map((e: { identifier: string; applies: boolean; reason: string }) => [e.identifier, e.applies, e.reason])).toEqual([
        ['alice', false, 'other-user'],
        ['authenticated', true, 'authenticated'],
        ['bob', true, 'user'],
        ['carol', false, 'other-user'],
        ['group:sales', true, 'group'],
        ['-group:temps', true, 'group'],
      ]);
      expect(bob).toMatchObject({ ownerNode: 'imap1', ownerEpoch: at.epoch, userNode: '' });
      // The same rights as `acl rights` (MyRights).
      expect(await ok('acl', 'rights', 'expl', 'alice/Team', 'bob')).toBe('lrs\n');

      const text = await ok('acl', 'explain', 'expl', 'alice/Team', 'bob');
      expect(text).toMatch(/^bob on alice\/Team \(tenant expl, revision \d+\): lrs$/m);
      expect(text).toMatch(/^-\s+-group:temps\s+w\s+applies: bob is in group temps$/m);
      expect(text).toMatch(/^\s+carol\s+lrswi\s+does not apply: another user$/m);
      expect(text).toMatch(/^granted lrsw, taken away w: lrs$/m);
      expect(text).toMatch(/^rule: the rights of every entry that applies are added up/m);
      expect(text).toMatch(new RegExp(`^served by: imap1 \\(epoch ${at.epoch}\\), the owner's node; bob's node: \\(none\\)$`, 'm'));

      // Someone in no group, outside every entry but authenticated: listed with l only.
      const erin = await json('acl', 'explain', 'expl', 'alice/Team', 'erin');
      expect(erin).toMatchObject({ rights: 'l', listed: true, groups: [] });
      expect(erin.entries.find((e: { identifier: string }) => e.identifier === 'group:sales')).toMatchObject({ applies: false, reason: 'not-in-group' });
      // Without any revealing right the mailbox does not exist for the user; the owner keeps l and a.
      await api.acl.deleteAcl({ tenant: 'expl', mailbox: 'alice/Team', identifier: 'authenticated', expectedRevision: 0, actor: '' });
      const gone = await json('acl', 'explain', 'expl', 'alice/Team', 'erin');
      expect(gone).toMatchObject({ rights: '', listed: false, exists: false });
      expect(gone.rules).toContainEqual(expect.stringMatching(/does not exist for erin \(RFC 4314 §6\)/));
      expect(await ok('acl', 'explain', 'expl', 'alice/Team', 'erin')).toMatch(/^visible: no: the mailbox does not exist for the user$/m);
      await api.acl.setAcl({ tenant: 'expl', mailbox: 'alice/Team', identifier: '-alice', rights: 'lrs', expectedRevision: 0, actor: '' });
      const owner = await json('acl', 'explain', 'expl', 'alice/Team', 'alice');
      expect(owner.owner).toBe(true);
      expect(owner.rights).toContain('l');
      expect(owner.rights).toContain('a');
      expect(owner.rights).not.toContain('r');
      expect(owner.rules).toContainEqual('alice owns the mailbox: l and a are kept whatever the entries say');

      // Bad input: one line on stderr naming the field, exit 1.
      const badUser = await ms('acl', 'explain', 'expl', 'alice/Team', 'Not A User');
      expect([badUser.code, badUser.stdout]).toEqual([1, '']);
      expect(badUser.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: user: [^\n]*\n$/);
      const missing = await ms('acl', 'explain', 'expl', 'alice/Nope', 'bob');
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/^mailshare: NOT_FOUND: [^\n]*\n$/);
    } finally {
      node.stop();
      api.close();
    }
  });
});

describe('acl set|delete --dry-run', () => {
  it('checks and computes as the real change, writes nothing, and says whose effective rights would change', async () => {
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'dry', domains: [] });
      await api.mailbox.createMailbox({ tenant: 'dry', owner: 'alice', name: 'P', actor: '' });
      await api.acl.setAcl({ tenant: 'dry', mailbox: 'alice/P', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'dry', mailbox: 'alice/P', identifier: 'group:sales', rights: 'lr', expectedRevision: 0, actor: '' });
      await api.directory.setGroupMembers({ tenant: 'dry', name: 'sales', members: ['carol', 'dave', 'bob'], expectedRevision: 0 });
      const before = await api.acl.getAcl({ tenant: 'dry', mailbox: 'alice/P', actor: '' });
      const audits = (await api.audit.listAudit({ tenant: 'dry', pageSize: 1000, pageToken: '' })).records.length;

      expect(await ok('acl', 'set', 'dry', 'alice/P', 'group:sales', '+s', '--dry-run')).toBe(
        'would make group:sales lrs (now lr); nothing written\neffective rights that would change:\n  bob: lr -> lrs\n  carol: lr -> lrs\n  dave: lr -> lrs\n',
      );
      const del = await json('acl', 'delete', 'dry', 'alice/P', 'group:sales', '--dry-run');
      expect(del).toMatchObject({ identifier: 'group:sales', dryRun: true, before: 'lr', revision: before.revision });
      expect(del.changes).toEqual([
        { who: 'carol', before: 'lr', after: '' },
        { who: 'dave', before: 'lr', after: '' },
      ]);
      expect(await ok('acl', 'set', 'dry', 'alice/P', 'authenticated', 'l', '--dry-run')).toMatch(/^ {2}anyone else: \(none\) -> l$/m);
      expect(await ok('acl', 'set', 'dry', 'alice/P', 'bob', 'lr', '--dry-run')).toMatch(/^no user's effective rights would change$/m);
      // Refused as the real call would be.
      await api.directory.updateTenant({ id: 'dry', settings: { allowAnyone: false, maxSharesPerMailbox: 20 }, expectedRevision: 0 });
      const refused = await ms('acl', 'set', 'dry', 'alice/P', 'anyone', 'l', '--dry-run');
      expect([refused.code, refused.stdout]).toEqual([1, '']);
      expect(refused.stderr).toMatch(/^mailshare: PERMISSION_DENIED: identifier: this tenant does not allow sharing with anyone\n$/);
      // Nothing was written: same ACL, same revision, no audit record.
      expect(await api.acl.getAcl({ tenant: 'dry', mailbox: 'alice/P', actor: '' })).toEqual(before);
      // (the one record since is the tenant's own update)
      expect((await api.audit.listAudit({ tenant: 'dry', pageSize: 1000, pageToken: '' })).records.map((r) => r.action).slice(audits)).toEqual(['UpdateTenant']);
    } finally {
      api.close();
    }
  });
});

describe('group set|add|remove --dry-run', () => {
  it("says whose rights on which mailbox a membership change would alter, and writes nothing", async () => {
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'gdry', domains: [] });
      for (const name of ['Team', 'Other']) await api.mailbox.createMailbox({ tenant: 'gdry', owner: 'alice', name, actor: '' });
      await api.acl.setAcl({ tenant: 'gdry', mailbox: 'alice/Team', identifier: 'group:sales', rights: 'lrs', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'gdry', mailbox: 'alice/Other', identifier: '-group:sales', rights: 's', expectedRevision: 0, actor: '' });
      await api.acl.setAcl({ tenant: 'gdry', mailbox: 'alice/Other', identifier: 'erin', rights: 'lrs', expectedRevision: 0, actor: '' });
      const g = await api.directory.setGroupMembers({ tenant: 'gdry', name: 'sales', members: ['bob'], expectedRevision: 0 });

      expect(await ok('group', 'add', 'gdry', 'sales', 'erin', '--dry-run')).toBe(
        'would make group:sales bob erin; nothing written\neffective rights that would change:\n  erin on alice/Other: lrs -> lr\n  erin on alice/Team: (none) -> lrs\n',
      );
      const removed = await json('group', 'remove', 'gdry', 'sales', 'bob', '--dry-run');
      expect(removed).toMatchObject({ name: 'sales', members: [], dryRun: true, revision: g.revision });
      expect(removed.effects).toEqual([{ mailbox: 'alice/Team', user: 'bob', before: 'lrs', after: '' }]);
      expect(await ok('group', 'set', 'gdry', 'sales', 'bob', '--dry-run')).toMatch(/^no user's effective rights would change$/m);
      // Refused as the real change is: a bad member, nothing written.
      const bad = await ms('group', 'add', 'gdry', 'sales', 'Not A User', '--dry-run');
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: members\[0\]: [^\n]*\n$/);
      expect(await api.directory.getGroup({ tenant: 'gdry', name: 'sales' })).toMatchObject({ members: ['bob'], revision: g.revision });
      expect((await api.acl.myRights({ tenant: 'gdry', mailbox: 'alice/Team', user: 'erin' })).rights).toBe('');
    } finally {
      api.close();
    }
  });
});

describe('mailbox create|rename|delete --dry-run', () => {
  it('checks as the real call, says what it would do (and whose access a delete ends), writes nothing', async () => {
    const api = connectApi(server.address, server.adminToken);
    try {
      await api.directory.createTenant({ id: 'mdry', domains: [] });
      await api.mailbox.createMailbox({ tenant: 'mdry', owner: 'alice', name: 'A', actor: '' });
      await api.mailbox.createMailbox({ tenant: 'mdry', owner: 'alice', name: 'A/Sub', actor: '' });
      await api.acl.setAcl({ tenant: 'mdry', mailbox: 'alice/A', identifier: 'bob', rights: 'lr', expectedRevision: 0, actor: '' });
      const list = async () => (await api.mailbox.listMailboxes({ tenant: 'mdry', owner: '', pageSize: 0, pageToken: '' })).mailboxes.map((m) => `${m.mailbox}@${m.revision}`);
      const before = await list();

      expect(await ok('mailbox', 'create', 'mdry', 'alice', 'New', '--dry-run')).toBe('would create alice/New; nothing written\n');
      const dup = await ms('mailbox', 'create', 'mdry', 'alice', 'A', '--dry-run');
      expect([dup.code, dup.stderr]).toEqual([1, 'mailshare: ALREADY_EXISTS: name: mailbox "alice/A" already exists\n']);
      expect(await ok('mailbox', 'rename', 'mdry', 'alice/A', 'B', '--dry-run')).toBe('would rename to alice/B\nwould rename to alice/B/Sub\nnothing written\n');
      const taken = await ms('mailbox', 'rename', 'mdry', 'alice/A/Sub', 'A', '--dry-run');
      expect(taken.code).toBe(1);
      expect(await ok('mailbox', 'delete', 'mdry', 'alice/A', '--dry-run')).toBe('would delete alice/A; nothing written\naccess that would end:\n  alice: lrswipkxteacd\n  bob: lr\n');
      expect(await list()).toEqual(before);
    } finally {
      api.close();
    }
  });
});
