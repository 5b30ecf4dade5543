import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { type Command, Option } from 'commander';
import { effectiveRights } from '../domain/acl.js';
import { USER_ID_PATTERN } from '../domain/ids.js';
import { type Rights, formatRights, parseRights } from '../domain/rights.js';
import { AclServiceClient } from '../gen/mailshare/v1/acl.js';
import { DirectoryServiceClient } from '../gen/mailshare/v1/directory.js';
import { MailboxServiceClient } from '../gen/mailshare/v1/mailbox.js';
import type { ConnectionFlags } from './connection.js';
import { type DovecotEntry, dovecotRights, folderDirectory, formatDovecotAclFile, maildirFolder, parseDovecotAclFile, parseGlobalAclFile } from './dovecot-acl.js';
import { CliError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson } from './io.js';
import { type Calls, allPages, withService } from './run.js';

type Layout = 'maildir' | 'fs';
type Flags = ConnectionFlags & { output: OutputFormat; mailRoot: string; tenant: string; layout: Layout; global?: string; dryRun?: boolean; parallel: number };

/** A folder found under the mail root with the ACL entries Dovecot gives it. */
interface Folder {
  readonly owner: string;
  readonly name: string;
  /** Its dovecot-acl file's entries, then the global file's that match it. */
  readonly entries: DovecotEntry[];
}

/** Something the import could not carry over as it was, or carried over differently. */
interface Note {
  readonly mailbox: string;
  readonly what: string;
}

const MAILDIR_INTERNALS = new Set(['cur', 'new', 'tmp']);

/** Every folder directory of one user (INBOX is the user's directory itself). */
function foldersOf(userDir: string, layout: Layout): Array<{ name: string; dir: string }> {
  const out = [{ name: 'INBOX', dir: userDir }];
  if (layout === 'maildir') {
    for (const d of readdirSync(userDir, { withFileTypes: true })) {
      const name = d.isDirectory() ? maildirFolder(d.name) : undefined;
      if (name) out.push({ name, dir: path.join(userDir, d.name) });
    }
    return out;
  }
  const walk = (dir: string, prefix: string): void => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      if (!d.isDirectory() || MAILDIR_INTERNALS.has(d.name) || d.name.startsWith('.')) continue;
      const name = prefix ? `${prefix}/${d.name}` : d.name;
      out.push({ name, dir: path.join(dir, d.name) });
      walk(path.join(dir, d.name), name);
    }
  };
  walk(userDir, '');
  return out;
}

/** Reads the tree: folders with an ACL file (or a matching global rule), and what could not be read. */
function scanMailRoot(root: string, layout: Layout, globalFile: string | undefined): { folders: Folder[]; notes: Note[]; scanned: number } {
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new CliError(`--mail-root: ${root} is not a directory`, 2);
  const global = globalFile === undefined ? undefined : parseGlobalAclFile(readFileSync(globalFile, 'utf8'));
  const notes: Note[] = (global?.errors ?? []).map((e) => ({ mailbox: '-', what: `${globalFile}:${e.line}: ${e.why}, line skipped` }));
  const folders: Folder[] = [];
  let scanned = 0;
  for (const u of readdirSync(root, { withFileTypes: true })) {
    if (!u.isDirectory()) continue;
    if (!USER_ID_PATTERN.test(u.name)) {
      notes.push({ mailbox: u.name, what: `directory ${u.name} is not a user id mailshare takes; skipped` });
      continue;
    }
    for (const f of foldersOf(path.join(root, u.name), layout)) {
      scanned++;
      const ref = `${u.name}/${f.name}`;
      const file = path.join(f.dir, 'dovecot-acl');
      const entries: DovecotEntry[] = [];
      if (existsSync(file)) {
        const parsed = parseDovecotAclFile(readFileSync(file, 'utf8'));
        entries.push(...parsed.entries);
        for (const e of parsed.errors) notes.push({ mailbox: ref, what: `dovecot-acl line ${e.line}: ${e.why}, line skipped` });
      }
      for (const rule of global?.rules ?? []) {
        if (!rule.pattern.test(f.name)) continue;
        // Dovecot applies global entries after the mailbox's own: one for the same identifier replaces it here.
        const i = entries.findIndex((e) => e.kind === rule.entry.kind && e.name === rule.entry.name && e.negative === rule.entry.negative);
        if (i >= 0) {
          notes.push({ mailbox: ref, what: `the global rule "${rule.source}" replaces the mailbox's own entry for the same identifier` });
          entries.splice(i, 1);
        }
        entries.push(rule.entry);
      }
      if (entries.length > 0 || existsSync(file)) folders.push({ owner: u.name, name: f.name, entries });
    }
  }
  return { folders, notes, scanned };
}

/**
 * A folder's entries as a mailshare ACL (identifier → rights): `owner` is
 * the owner's own entry, `user=NAME` is NAME, `group=` and
 * `group-override=` are `group:NAME`, `anyone` and `authenticated` as they
 * are, "-" before any of them negative. What has no equivalent is noted.
 */
function toMailshareAcl(f: Folder, userOf: (name: string) => string | undefined): { acl: Map<string, Rights>; notes: string[] } {
  const acl = new Map<string, Rights>();
  const notes: string[] = [];
  for (const e of f.entries) {
    let id: string | undefined;
    if (e.kind === 'owner') id = f.owner;
    else if (e.kind === 'user') {
      id = userOf(e.name!);
      if (id === undefined) notes.push(`user=${e.name} is not a user id of this tenant; entry skipped`);
    } else if (e.kind === 'group' || e.kind === 'group-override') {
      if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(e.name!)) {
        notes.push(`${e.kind}=${e.name} is not a group name mailshare takes; entry skipped`);
        continue;
      }
      id = `group:${e.name}`;
      if (e.kind === 'group-override') notes.push(`group-override=${e.name} has no RFC 4314 equivalent: imported as group:${e.name}, without its override of user entries`);
    } else id = e.kind;
    if (id === undefined) continue;
    if (e.named.length > 0) notes.push(`named rights :${e.named.join(',')} of ${e.kind}${e.name !== undefined ? `=${e.name}` : ''} have no RFC 4314 equivalent; dropped`);
    const key = `${e.negative ? '-' : ''}${id}`;
    if (acl.has(key)) notes.push(`two entries become ${key}: their rights are added up`);
    acl.set(key, ((acl.get(key) ?? 0) | e.rights) as Rights);
  }
  for (const [k, r] of acl) if (r === 0) acl.delete(k);
  return { acl, notes };
}

/**
 * Where the two rules give a user different rights: the owner, each user
 * the ACL names (with the groups the tenant says they are in), a member of
 * each named group, and any other logged-in user.
 */
function ruleDifferences(folder: Folder, acl: Map<string, Rights>, groupsOf: (user: string) => ReadonlySet<string>, userOf: (name: string) => string | undefined): string[] {
  // Dovecot's user names as the users mailshare knows them (user=bob@acme.test is bob).
  const f: Folder = { ...folder, entries: folder.entries.map((e) => (e.kind === 'user' ? { ...e, name: userOf(e.name!) ?? e.name! } : e)) };
  const named = new Set<string>();
  const groups = new Set<string>();
  for (const e of f.entries) {
    if (e.kind === 'user') named.add(e.name!);
    if (e.kind === 'group' || e.kind === 'group-override') groups.add(e.name!);
  }
  const subjects: Array<{ label: string; user: string; groups: ReadonlySet<string> }> = [
    { label: `${f.owner} (owner)`, user: f.owner, groups: groupsOf(f.owner) },
    ...[...named].filter((u) => u !== f.owner).map((u) => ({ label: u, user: u, groups: groupsOf(u) })),
    ...[...groups].map((g) => ({ label: `a member of group ${g}`, user: '\0member', groups: new Set([g]) })),
    { label: 'any other logged-in user', user: '\0other', groups: new Set<string>() },
  ];
  const out: string[] = [];
  for (const s of subjects) {
    const dovecot = dovecotRights(f.entries, { user: s.user, groups: s.groups, owner: s.user === f.owner });
    const ours = effectiveRights(acl, { user: s.user, groups: s.groups }, f.owner);
    if (dovecot !== ours) out.push(`${s.label}: Dovecot "${formatRights(dovecot)}", mailshare "${formatRights(ours)}"`);
  }
  return out;
}

/** Runs `fn` over items, `parallel` at a time. */
async function eachParallel<T>(items: readonly T[], parallel: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

const isCode = (err: unknown, code: number): boolean => typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;

/** A progress bar on a terminal (stderr), redrawn at most every 1 % of the work. */
function progress(io: CliIo, done: number, total: number, what: string): void {
  if (!io.isTty || io.env.CI) return;
  if (done !== total && done % Math.max(1, Math.floor(total / 100)) !== 0) return;
  const width = 30;
  const filled = Math.round((done / Math.max(1, total)) * width);
  io.err(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${what} ${done}/${total}${done === total ? '\n' : ''}`);
}

const layoutOption = (): Option => new Option('--layout <layout>', 'maildir: Maildir++ (.Projects.2026); fs: a directory per level').choices(['maildir', 'fs']).default('maildir');
const parallelOption = (): Option =>
  new Option('--parallel <n>', 'mailboxes worked on at once').default(16).argParser((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 256) throw new CliError(`--parallel: ${v} is not a number from 1 to 256`, 2);
    return n;
  });

/** `mailshare import dovecot-acl` and `mailshare export dovecot-acl`. */
export function registerDovecotMigration(program: Command, io: CliIo): void {
  addConnectionOptions(
    program
      .command('import')
      .description('bring shares from another system into mailshare')
      .command('dovecot-acl')
      .description("register every mailbox that has a Dovecot dovecot-acl file under a mail root, and set its ACL (re-running changes nothing)")
      .requiredOption('--mail-root <dir>', 'the mail root: one directory per user (mail_location = maildir:DIR/%u)')
      .requiredOption('--tenant <tenant>', 'the tenant the users belong to')
      .addOption(layoutOption())
      .option('--global <file>', "Dovecot's global ACL file (lines MAILBOX-PATTERN IDENTIFIER RIGHTS)")
      .option('--dry-run', 'say what would change, change nothing')
      .addOption(parallelOption())
      .addOption(outputOption()),
  ).action(async (flags: Flags) => {
    const scan = scanMailRoot(flags.mailRoot, flags.layout, flags.global);
    await withService(io, flags, DirectoryServiceClient, async (dir) => {
      const tenant = await dir.getTenant({ id: flags.tenant });
      const domains = new Set(tenant.domains);
      const userOf = (name: string): string | undefined => {
        const at = name.lastIndexOf('@');
        const local = at > 0 && domains.has(name.slice(at + 1)) ? name.slice(0, at) : name;
        return USER_ID_PATTERN.test(local) ? local : undefined;
      };
      const groups = await allPages(async (pageToken) => {
        const r = await dir.listGroups({ tenant: flags.tenant, pageSize: 1000, pageToken });
        return { items: r.groups, next: r.nextPageToken };
      });
      const memberOf = new Map<string, Set<string>>();
      for (const g of groups) for (const m of g.members) (memberOf.get(m) ?? memberOf.set(m, new Set()).get(m)!).add(g.name);
      const groupsOf = (u: string): ReadonlySet<string> => memberOf.get(u) ?? new Set();

      const notes = [...scan.notes];
      const differences: Note[] = [];
      const plans = scan.folders.map((f) => {
        const ref = `${f.owner}/${f.name}`;
        const { acl, notes: n } = toMailshareAcl(f, userOf);
        for (const what of n) notes.push({ mailbox: ref, what });
        for (const what of ruleDifferences(f, acl, groupsOf, userOf)) differences.push({ mailbox: ref, what });
        return { ref, folder: f, acl };
      });
      const counts = { mailboxes: plans.length, created: 0, entriesSet: 0, entriesRemoved: 0, unchanged: 0, failed: 0 };
      const failures: Note[] = [];
      await withService(io, flags, MailboxServiceClient, async (mb) =>
        withService(io, flags, AclServiceClient, async (aclApi) => {
          await eachParallel(plans, flags.parallel, async (p, i) => {
            try {
              const r = await applyPlan(mb, aclApi, flags.tenant, p.ref, p.folder, p.acl, flags.dryRun === true);
              if (r.created) counts.created++;
              counts.entriesSet += r.set;
              counts.entriesRemoved += r.removed;
              if (!r.created && r.set === 0 && r.removed === 0) counts.unchanged++;
            } catch (err) {
              counts.failed++;
              failures.push({ mailbox: p.ref, what: (err as { details?: string }).details ?? String(err) });
            }
            progress(io, i + 1, plans.length, flags.dryRun ? 'checked' : 'imported');
          });
        }),
      );
      const report = { dryRun: flags.dryRun === true, foldersScanned: scan.scanned, ...counts, notes, differences, failures };
      if (flags.output === 'json') printJson(io, report);
      else {
        const verb = flags.dryRun ? 'would ' : '';
        const lines = [
          `${scan.scanned} folders scanned, ${plans.length} with ACLs: ${verb}create ${counts.created} mailboxes, ${verb}set ${counts.entriesSet} entries, ${verb}remove ${counts.entriesRemoved}; ${counts.unchanged} already as in Dovecot${counts.failed ? `; ${counts.failed} failed` : ''}`,
        ];
        if (notes.length) lines.push(`not carried over as they were (${notes.length}):`, ...notes.map((n) => `  ${n.mailbox}: ${n.what}`));
        if (differences.length) lines.push(`rights that differ between Dovecot's precedence rule and mailshare's (RFC 4314 §2) rule (${differences.length}):`, ...differences.map((n) => `  ${n.mailbox}: ${n.what}`));
        if (failures.length) lines.push(`failed (${failures.length}):`, ...failures.map((n) => `  ${n.mailbox}: ${n.what}`));
        io.out(`${lines.join('\n')}\n`);
      }
      if (counts.failed > 0) throw new CliError(`import: ${counts.failed} mailboxes failed; run it again (what landed stays)`, 1);
    });
  });

  addConnectionOptions(
    program
      .command('export')
      .description('write mailshare shares out for another system')
      .command('dovecot-acl')
      .description("write a Dovecot dovecot-acl file into the folder directory of every mailbox of a tenant (the way back)")
      .requiredOption('--mail-root <dir>', 'the mail root: one directory per user (mail_location = maildir:DIR/%u)')
      .requiredOption('--tenant <tenant>', 'the tenant')
      .addOption(layoutOption())
      .option('--dry-run', 'say which files would be written, write nothing')
      .addOption(outputOption()),
  ).action(async (flags: Flags) => {
    if (!existsSync(flags.mailRoot) || !statSync(flags.mailRoot).isDirectory()) throw new CliError(`--mail-root: ${flags.mailRoot} is not a directory`, 2);
    await withService(io, flags, MailboxServiceClient, async (mb) => {
      const all = await allPages(async (pageToken) => {
        const r = await mb.listMailboxes({ tenant: flags.tenant, owner: '', pageSize: 1000, pageToken });
        return { items: r.mailboxes, next: r.nextPageToken };
      });
      const written: string[] = [];
      const missing: string[] = [];
      for (const m of all) {
        const dir = path.join(flags.mailRoot, m.owner, folderDirectory(m.name, flags.layout));
        if (!existsSync(dir)) {
          missing.push(`${m.owner}/${m.name}`);
          continue;
        }
        const entries: DovecotEntry[] = m.acl.map(({ identifier, rights }) => {
          const negative = identifier.startsWith('-');
          const id = negative ? identifier.slice(1) : identifier;
          const letters = parseRights(rights.replace(/[cd]/g, ''));
          if (id === m.owner) return { kind: 'owner', negative, rights: letters, named: [] };
          if (id === 'anyone' || id === 'authenticated') return { kind: id, negative, rights: letters, named: [] };
          if (id.startsWith('group:')) return { kind: 'group', name: id.slice(6), negative, rights: letters, named: [] };
          return { kind: 'user', name: id, negative, rights: letters, named: [] };
        });
        const file = path.join(dir, 'dovecot-acl');
        if (!flags.dryRun) {
          mkdirSync(dir, { recursive: true });
          const tmp = `${file}.mailshare-tmp`;
          writeFileSync(tmp, formatDovecotAclFile(entries));
          renameSync(tmp, file);
        }
        written.push(file);
      }
      if (flags.output === 'json') printJson(io, { dryRun: flags.dryRun === true, written, noFolder: missing });
      else {
        const lines = [`${flags.dryRun ? 'would write' : 'wrote'} ${written.length} dovecot-acl files`];
        if (missing.length) lines.push(`no folder directory for (${missing.length}):`, ...missing.map((r) => `  ${r}`));
        io.out(`${lines.join('\n')}\n`);
      }
    });
  });
}

/** One mailbox: registered if needed, then its ACL made the import's in one guarded change (ReplaceAcl) when it differs. */
async function applyPlan(
  mb: Calls<MailboxServiceClient>,
  acl: Calls<AclServiceClient>,
  tenant: string,
  ref: string,
  folder: Folder,
  target: Map<string, Rights>,
  dryRun: boolean,
): Promise<{ created: boolean; set: number; removed: number }> {
  const read = (entries: Array<{ identifier: string; rights: string }>): Map<string, Rights> => new Map(entries.map((e) => [e.identifier, parseRights(e.rights.replace(/[cd]/g, ''))]));
  let current: Map<string, Rights>;
  let created = false;
  let revision = 0;
  try {
    const got = await acl.getAcl({ tenant, mailbox: ref, actor: '' });
    current = read(got.entries);
    revision = got.revision;
  } catch (err) {
    if (!isCode(err, status.NOT_FOUND)) throw err;
    created = true;
    // A new mailbox's ACL: its owner with every right.
    current = new Map([[folder.owner, parseRights('lrswipkxtea')]]);
    if (!dryRun) {
      try {
        revision = (await mb.createMailbox({ tenant, owner: folder.owner, name: folder.name, actor: '' })).revision;
      } catch (e) {
        if (!isCode(e, status.ALREADY_EXISTS)) throw e;
        // Registered meanwhile (another import): what it has now.
        const got = await acl.getAcl({ tenant, mailbox: ref, actor: '' });
        current = read(got.entries);
        revision = got.revision;
      }
    }
  }
  let set = 0;
  let removed = 0;
  for (const [identifier, rights] of target) if (current.get(identifier) !== rights) set++;
  for (const identifier of current.keys()) if (!target.has(identifier)) removed++;
  if (!dryRun && set + removed > 0) {
    // Guarded by the revision read: a change made meanwhile by someone else fails this mailbox (run again).
    await acl.replaceAcl({ tenant, mailbox: ref, entries: [...target].map(([identifier, r]) => ({ identifier, rights: formatRights(r) })), expectedRevision: revision });
  }
  return { created, set, removed };
}
