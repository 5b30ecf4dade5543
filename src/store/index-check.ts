import type { Etcd3 } from 'etcd3';
import { shareGrantees } from '../domain/acl.js';
import type { AuditContext, AuditStore } from './audit-store.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';
import { decodeMailbox, isStoredRecord } from './mailbox-store.js';

/** One way the "shared with" index disagrees with the ACLs. */
export interface IndexDifference {
  /**
   * missing: the ACL grants l and no entry says so; stale: an entry no ACL
   * backs; wrong-id: the entry names another mailbox id; outdated: the
   * entry does not hold the mailbox's record as it is (an entry written
   * before entries held it, or one a failed write left behind).
   */
  readonly kind: 'missing' | 'stale' | 'wrong-id' | 'outdated';
  readonly grantee: string;
  /** OWNER/NAME */
  readonly mailbox: string;
}

export interface IndexReport {
  readonly tenant: string;
  /** Everything was read at this revision. */
  readonly revision: number;
  readonly mailboxes: number;
  /** Index entries read, and those the ACLs imply. */
  readonly entries: number;
  readonly expected: number;
  readonly missing: number;
  readonly stale: number;
  readonly wrongId: number;
  readonly outdated: number;
  /** The first differences, in key order (at most `detailLimit`). */
  readonly differences: IndexDifference[];
  /** With repair: mailboxes whose entries were put right, and those skipped because they changed since the check. */
  readonly repaired: number;
  readonly skipped: number;
}

/** A range read at `revision` in large pages (etcd 3.4 counts the rest of a range on every page). */
async function* scan(client: Etcd3, prefix: string, revision: number, page = 20_000): AsyncGenerator<{ key: string; value: Buffer; mod: number }> {
  let from = prefix;
  const end = prefixEnd(prefix);
  for (;;) {
    const res = await etcdOp('reading for the index check', () => client.getAll().inRange({ start: from, end }).revision(revision).limit(page).exec());
    for (const kv of res.kvs) yield { key: kv.key.toString(), value: kv.value, mod: Number(kv.mod_revision) };
    if (res.kvs.length < page) return;
    from = `${res.kvs[res.kvs.length - 1]!.key.toString()}\0`;
  }
}

/** Index entries put right per transaction (each also a compare; etcd allows 128 of each). */
const FIXES_PER_TXN = 60;

export interface Fix {
  /** The mailbox's record as the check saw it (mod revision; 0 when it does not exist). */
  mod: number;
  /** Index entries to write with the mailbox's stored record. */
  puts: Array<{ key: string; value: string; mod: number }>;
  deletes: Array<{ key: string; mod: number }>;
}

/**
 * Verifies a tenant's "shared with" index against its ACLs at one
 * revision: every mailbox's positive entries with l (but the owner's)
 * must have exactly one index entry holding the mailbox's record (as its
 * own key does), and no other
 * entry may exist. The index is written in each ACL change's own
 * transaction, so this should never find anything; it proves it on a
 * live system. Repairs go mailbox by mailbox, each one transaction
 * guarded by the revisions the check read (a mailbox changed since is
 * skipped: run the check again). Holds the expected entries of the tenant
 * in memory while it runs.
 */
export class IndexChecker {
  constructor(private readonly deps: { client: Etcd3; keys: Keys; audit: AuditStore }) {}

  /** Checks, and with `repair` puts right what it found. */
  async check(tenant: string, opts: { repair: boolean; ctx: AuditContext; detailLimit?: number }): Promise<IndexReport> {
    const found = await this.inspect(tenant, opts.detailLimit);
    return opts.repair ? { ...found.report, ...(await this.repair(found, opts.ctx)) } : found.report;
  }

  /** Reads and compares at one revision; writes nothing. */
  inspect(tenant: string, detailLimit = 20): Promise<Inspection> {
    return inspect(this.deps, tenant, detailLimit);
  }

  /**
   * Applies an inspection's fixes, mailbox by mailbox, each guarded by the
   * revisions the inspection read: a mailbox or entry changed since is
   * skipped (inspect again).
   */
  async repair(found: Inspection, ctx: AuditContext): Promise<{ repaired: number; skipped: number }> {
    const { client, keys, audit } = this.deps;
    const tenant = found.report.tenant;
    let repaired = 0;
    let skipped = 0;
    for (const [ref, fix] of found.fixes) {
      const slash = ref.indexOf('/');
      const mkey = keys.mailbox(tenant, ref.slice(0, slash), ref.slice(slash + 1));
      // A mailbox's fixes in transactions within etcd's 128 operations, each guarded by the
      // mailbox's revision as checked and by every index entry's.
      const items: Array<{ put?: Fix['puts'][number]; del?: Fix['deletes'][number] }> = [...fix.puts.map((p) => ({ put: p })), ...fix.deletes.map((d) => ({ del: d }))];
      let ok = true;
      for (let i = 0; i < items.length && ok; i += FIXES_PER_TXN) {
        const part = items.slice(i, i + FIXES_PER_TXN);
        let txn = fix.mod ? client.if(mkey, 'Mod', '==', fix.mod) : client.if(mkey, 'Create', '==', 0);
        for (const it of part) {
          if (it.put) txn = it.put.mod ? txn.and(it.put.key, 'Mod', '==', it.put.mod) : txn.and(it.put.key, 'Create', '==', 0);
          else txn = txn.and(it.del!.key, 'Mod', '==', it.del!.mod);
        }
        const puts = part.filter((it) => it.put).length;
        const ops = [
          ...part.map((it) => (it.put ? client.put(it.put.key).value(it.put.value) : client.delete().key(it.del!.key))),
          ...audit.ops({ tenant, ...ctx, action: 'RepairIndex', target: ref, before: `${part.length} entries wrong`, after: `${puts} put, ${part.length - puts} removed` }),
        ];
        const res = await etcdOp('repairing the index', () => txn.then(...ops).commit());
        ok = res.succeeded;
      }
      if (ok) repaired++;
      else skipped++;
    }
    return { repaired, skipped };
  }
}

/** What a check found, and how to put it right. */
export interface Inspection {
  readonly report: IndexReport;
  readonly fixes: ReadonlyMap<string, Fix>;
}

async function inspect(deps: { client: Etcd3; keys: Keys }, tenant: string, detailLimit: number): Promise<Inspection> {
  const { client, keys } = deps;
  const head = await etcdOp('reading the current revision', () => client.get(keys.healthProbe).exec());
  const revision = Number(head.header.revision);
  const mboxPrefix = keys.mailboxesPrefix(tenant);
  const sharedPrefix = keys.sharedTenantPrefix(tenant);

  // Expected entries (index key → the mailbox's stored record), each mailbox's id and record revision.
  const expected = new Map<string, string>();
  const ids = new Map<string, string>();
  const mailboxMod = new Map<string, number>();
  let mailboxes = 0;
  for await (const kv of scan(client, mboxPrefix, revision)) {
    const ref = keys.mailboxRefFromKey(tenant, kv.key);
    const slash = ref.indexOf('/');
    const owner = ref.slice(0, slash);
    const rec = decodeMailbox(tenant, owner, ref.slice(slash + 1), kv.value, kv.mod);
    if (!rec) continue;
    mailboxes++;
    mailboxMod.set(ref, kv.mod);
    ids.set(ref, rec.id);
    const stored = kv.value.toString();
    for (const g of shareGrantees(rec.acl, owner)) expected.set(`${sharedPrefix}${g}/${ref}`, stored);
  }
  const expectedCount = expected.size;

  const differences: IndexDifference[] = [];
  const fixes = new Map<string, Fix>();
  const fixOf = (ref: string): Fix => {
    let f = fixes.get(ref);
    if (!f) fixes.set(ref, (f = { mod: mailboxMod.get(ref) ?? 0, puts: [], deletes: [] }));
    return f;
  };
  const counts = { missing: 0, stale: 0, 'wrong-id': 0, outdated: 0 };
  const note = (kind: IndexDifference['kind'], key: string): string => {
    counts[kind]++;
    const rest = key.slice(sharedPrefix.length);
    const slash = rest.indexOf('/');
    const d = { kind, grantee: rest.slice(0, slash), mailbox: rest.slice(slash + 1) };
    if (differences.length < detailLimit) differences.push(d);
    return d.mailbox;
  };
  let entries = 0;
  for await (const kv of scan(client, sharedPrefix, revision)) {
    entries++;
    const want = expected.get(kv.key);
    if (want === undefined) {
      fixOf(note('stale', kv.key)).deletes.push({ key: kv.key, mod: kv.mod });
      continue;
    }
    expected.delete(kv.key);
    const value = kv.value.toString();
    if (value === want) continue;
    const rest = kv.key.slice(sharedPrefix.length);
    const ref = rest.slice(rest.indexOf('/') + 1);
    const id = isStoredRecord(kv.value) ? decodeMailbox(tenant, '', '', kv.value, 0)?.id : value;
    fixOf(note(id === ids.get(ref) ? 'outdated' : 'wrong-id', kv.key)).puts.push({ key: kv.key, value: want, mod: kv.mod });
  }
  for (const [key, value] of expected) fixOf(note('missing', key)).puts.push({ key, value, mod: 0 });
  differences.sort((a, b) => (a.mailbox < b.mailbox ? -1 : a.mailbox > b.mailbox ? 1 : a.grantee < b.grantee ? -1 : 1));

  return { report: { tenant, revision, mailboxes, entries, expected: expectedCount, missing: counts.missing, stale: counts.stale, wrongId: counts['wrong-id'], outdated: counts.outdated, differences, repaired: 0, skipped: 0 }, fixes };
}
