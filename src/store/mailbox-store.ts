import type { DeleteBuilder, Etcd3, IKeyValue, PutBuilder } from 'etcd3';
import {
  type Acl,
  aclEntries,
  deleteAcl,
  effectiveRights,
  setAcl,
  shareGrantees,
} from '../domain/acl.js';
import { DomainError } from '../domain/errors.js';
import { type Identifier, formatIdentifier } from '../domain/identifier.js';
import { MAILBOX_SEPARATOR, parseMailboxName } from '../domain/mailbox-name.js';
import { ALL_RIGHTS, L, NO_RIGHTS, type Rights, type RightsChange, formatRights, parseRights } from '../domain/rights.js';
import type { AuditContext, AuditStore } from './audit-store.js';
import { CasConflict, MAX_TXN_OPS, checkExpectedRevision, randomId, withCasRetry } from './cas.js';
import { type DirectoryStore, type TenantRecord, type TenantSettings, groupsContaining, tenantNotFound } from './directory-store.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';

export interface MailboxRecord {
  readonly tenant: string;
  readonly owner: string;
  readonly name: string;
  /** Stable across renames, never reused (RFC 8474). */
  readonly id: string;
  readonly acl: Acl;
  readonly createdAt: Date;
  readonly revision: number;
}

interface StoredMailbox {
  id: string;
  acl: Record<string, string>;
  createdAt: string;
}

export interface SharedEntry {
  readonly record: MailboxRecord;
  readonly rights: Rights;
}

/** Shares kept in all by a coordinator's ListSharedWith answers (about 250 B each). */
const MAX_KEPT_SHARES = 200_000;

/** A user's ListSharedWith answer as read, and what it was read from. */
interface SharedAnswer {
  /** Valid at this revision (confirmed at later ones since). */
  revision: number;
  /** The index prefixes read (user, anyone, authenticated, the user's groups), with their entry counts. */
  readonly grantees: readonly string[];
  readonly counts: readonly number[];
  /** Groups in the tenant. */
  readonly groupCount: number;
  /** OWNER/NAME of each item, sorted. */
  readonly refs: readonly string[];
  readonly items: readonly SharedEntry[];
}

/** Answers by "tenant/user", least recently used dropped first, bounded by their items in all. */
class AnswerCache {
  private readonly map = new Map<string, SharedAnswer>();
  private size = 0;
  constructor(private readonly maxItems: number) {}

  get(key: string): SharedAnswer | undefined {
    return this.map.get(key);
  }

  touch(key: string): void {
    const a = this.map.get(key);
    if (!a) return;
    this.map.delete(key);
    this.map.set(key, a);
  }

  set(key: string, a: SharedAnswer): void {
    this.delete(key);
    // A user whose groups exceed one probe transaction is read every time.
    if (a.items.length > this.maxItems || 2 + a.grantees.length > MAX_TXN_OPS) return;
    this.map.set(key, a);
    this.size += a.items.length + 1;
    for (const [k, old] of this.map) {
      if (this.size <= this.maxItems) break;
      this.map.delete(k);
      this.size -= old.items.length + 1;
    }
  }

  private delete(key: string): void {
    const a = this.map.get(key);
    if (!a) return;
    this.map.delete(key);
    this.size -= a.items.length + 1;
  }
}

/** The index of the first of `sorted` greater than `x`. */
function upperBound(sorted: readonly string[], x: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export type AclChange = { kind: 'set'; identifier: Identifier; change: RightsChange } | { kind: 'delete'; identifier: Identifier };

export function mailboxNotFound(tenant: string, owner: string, name: string): DomainError {
  return new DomainError('not_found', `mailbox: mailbox "${owner}/${name}" does not exist in tenant "${tenant}"`, { field: 'mailbox' });
}

/**
 * Registered mailboxes with their ACLs, and the "shared with" index, which
 * is written in the same transaction as every ACL change and so can never
 * disagree with the ACLs.
 */
/** A tenant and one of its mailboxes as a caller read them (a write's first attempt starts from them). */
export interface KnownState {
  readonly tenant: TenantRecord;
  readonly record: MailboxRecord;
}

export class MailboxStore {
  /** Users' ListSharedWith answers, recently asked first out last (see sharedWith). */
  private readonly answers = new AnswerCache(MAX_KEPT_SHARES);

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly audit: AuditStore,
    private readonly directory: DirectoryStore,
  ) {}

  /** Registers a mailbox; its ACL starts as the owner with every right. */
  async create(tenant: string, owner: string, name: string, ctx: AuditContext, dryRun = false): Promise<MailboxRecord> {
    const t = await this.directory.getTenant(tenant);
    if (!t) throw tenantNotFound(tenant);
    const key = this.keys.mailbox(tenant, owner, name);
    const acl: Acl = new Map([[owner, ALL_RIGHTS]]);
    if (dryRun) {
      // The transaction's own check, read instead of compared.
      if (await this.get(tenant, owner, name)) throw new DomainError('already_exists', `name: mailbox "${owner}/${name}" already exists`, { field: 'name' });
      return { tenant, owner, name, id: '', acl, createdAt: new Date(), revision: 0 };
    }
    const rec: MailboxRecord = { tenant, owner, name, id: randomId(), acl, createdAt: new Date(), revision: 0 };
    const res = await etcdOp('creating a mailbox', () =>
      this.client
        .if(this.keys.tenant(tenant), 'Mod', '==', t.revision)
        .and(key, 'Create', '==', 0)
        .then(
          this.client.put(key).value(encodeMailbox(rec)),
          this.client.put(this.keys.tenantMeta(tenant)).value(''),
          ...this.audit.ops({ tenant, ...ctx, action: 'CreateMailbox', target: `${owner}/${name}`, after: rec.id }),
        )
        .commit(),
    );
    if (!res.succeeded) {
      if (await this.get(tenant, owner, name)) {
        throw new DomainError('already_exists', `name: mailbox "${owner}/${name}" already exists`, { field: 'name' });
      }
      // The tenant changed or vanished in between: report what is true now.
      if (!(await this.directory.getTenant(tenant))) throw tenantNotFound(tenant);
      return this.create(tenant, owner, name, ctx);
    }
    return { ...rec, revision: Number(res.header.revision) };
  }

  async get(tenant: string, owner: string, name: string, revision = 0): Promise<MailboxRecord | undefined> {
    const b = this.client.get(this.keys.mailbox(tenant, owner, name));
    if (revision) b.revision(revision);
    const res = await etcdOp('reading a mailbox', () => b.exec());
    const kv = res.kvs[0];
    return kv ? decodeMailbox(tenant, owner, name, kv.value, Number(kv.mod_revision)) : undefined;
  }

  /**
   * Many mailboxes ("owner/name" refs) at one revision, read with a few
   * transactions of up to MAX_TXN_OPS range requests each instead of one
   * round trip per mailbox. Missing ones are undefined.
   */
  async getMany(tenant: string, refs: readonly string[], revision: number): Promise<Array<MailboxRecord | undefined>> {
    const per = MAX_TXN_OPS - 8;
    const chunks: string[][] = [];
    for (let i = 0; i < refs.length; i += per) chunks.push(refs.slice(i, i + per));
    const results = await Promise.all(
      chunks.map(async (chunk) => {
        const res = await etcdOp('reading mailboxes', () =>
          this.client.kv.txn({
            compare: [],
            success: chunk.map((ref) => {
              const slash = ref.indexOf('/');
              return { request_range: { key: Buffer.from(this.keys.mailbox(tenant, ref.slice(0, slash), ref.slice(slash + 1))), revision: String(revision) } };
            }),
            failure: [],
          }),
        );
        return chunk.map((ref, i) => {
          const kv = res.responses[i]?.response_range?.kvs[0];
          const slash = ref.indexOf('/');
          return kv ? decodeMailbox(tenant, ref.slice(0, slash), ref.slice(slash + 1), kv.value, Number(kv.mod_revision)) : undefined;
        });
      }),
    );
    return results.flat();
  }

  async require(tenant: string, owner: string, name: string): Promise<MailboxRecord> {
    const m = await this.get(tenant, owner, name);
    if (m) return m;
    if (!(await this.directory.getTenant(tenant))) throw tenantNotFound(tenant);
    throw mailboxNotFound(tenant, owner, name);
  }

  /** One owner's mailboxes (or the whole tenant's), in key order. */
  /** How many mailboxes a tenant has registered (a count-only read). */
  async count(tenant: string): Promise<number> {
    return etcdOp('counting mailboxes', () => this.client.getAll().prefix(this.keys.mailboxesPrefix(tenant)).count());
  }

  async list(tenant: string, owner: string | undefined, limit: number, afterKey: string | undefined): Promise<{ mailboxes: MailboxRecord[]; lastKey: string | undefined }> {
    const prefix = owner === undefined ? this.keys.mailboxesPrefix(tenant) : this.keys.ownerMailboxesPrefix(tenant, owner);
    if (afterKey !== undefined && !afterKey.startsWith(prefix)) {
      throw new DomainError('invalid_argument', 'page_token: is not a token from a previous page', { field: 'page_token' });
    }
    const start = afterKey !== undefined ? `${afterKey}\0` : prefix;
    const res = await etcdOp('listing mailboxes', () =>
      this.client.getAll().inRange({ start, end: prefixEnd(prefix) }).limit(limit + 1).exec(),
    );
    const mailboxes = res.kvs.slice(0, limit).map((kv) => this.decodeKey(tenant, kv.key.toString(), kv.value, Number(kv.mod_revision)));
    return { mailboxes, lastKey: res.kvs.length > limit ? res.kvs[limit - 1]!.key.toString() : undefined };
  }

  /**
   * Renames a mailbox and every registered mailbox below it, keeping ids and
   * ACLs (RFC 4314 §4: RENAME SHOULD NOT change ACLs) and moving their index
   * entries, all in one transaction.
   */
  async rename(tenant: string, owner: string, name: string, newName: string, expectedRevision: number, ctx: AuditContext, dryRun = false): Promise<MailboxRecord[]> {
    if (name === 'INBOX') throw new DomainError('failed_precondition', 'mailbox: INBOX cannot be renamed', { field: 'mailbox' });
    if (newName === name) throw new DomainError('invalid_argument', 'new_name: is the current name', { field: 'new_name' });
    if (newName.startsWith(name + MAILBOX_SEPARATOR)) {
      throw new DomainError('invalid_argument', `new_name: cannot move "${name}" below itself`, { field: 'new_name' });
    }
    return withCasRetry(async () => {
      const src = await this.require(tenant, owner, name);
      checkExpectedRevision(expectedRevision, src.revision, `mailbox "${owner}/${name}"`);
      const childPrefix = this.keys.mailbox(tenant, owner, name) + MAILBOX_SEPARATOR;
      const children = await etcdOp('reading mailboxes', () => this.client.getAll().prefix(childPrefix).exec());
      const moving = [src, ...children.kvs.map((kv) => this.decodeKey(tenant, kv.key.toString(), kv.value, Number(kv.mod_revision)))];
      const renamed = moving.map((m) => ({
        ...m,
        name: parseMailboxName(newName + m.name.slice(name.length), 'new_name'),
      }));

      let b = this.client.if(this.keys.tenant(tenant), 'Version', '>', 0);
      const ops: Array<PutBuilder | DeleteBuilder> = [];
      moving.forEach((m, i) => {
        const to = renamed[i]!;
        b = b.and(this.keys.mailbox(tenant, owner, m.name), 'Mod', '==', m.revision).and(this.keys.mailbox(tenant, owner, to.name), 'Create', '==', 0);
        ops.push(this.client.delete().key(this.keys.mailbox(tenant, owner, m.name)), this.client.put(this.keys.mailbox(tenant, owner, to.name)).value(encodeMailbox(to)));
        for (const g of shareGrantees(m.acl, owner)) {
          ops.push(this.client.delete().key(this.keys.shared(tenant, g, owner, m.name)), this.client.put(this.keys.shared(tenant, g, owner, to.name)).value(encodeMailbox(to)));
        }
      });
      ops.push(...this.audit.ops({ tenant, ...ctx, action: 'RenameMailbox', target: `${owner}/${name}`, before: name, after: newName }));
      if (ops.length > MAX_TXN_OPS) {
        throw new DomainError(
          'failed_precondition',
          `mailbox: renaming "${owner}/${name}" with ${moving.length - 1} registered mailboxes below it needs ${ops.length} etcd operations, more than the ${MAX_TXN_OPS} one transaction allows; rename the deeper mailboxes first`,
          { field: 'mailbox' },
        );
      }
      if (dryRun) {
        // The transaction's own checks, read instead of compared.
        for (const to of renamed) {
          if (await this.get(tenant, owner, to.name)) throw new DomainError('already_exists', `new_name: mailbox "${owner}/${to.name}" already exists`, { field: 'new_name' });
        }
        return renamed;
      }
      const res = await etcdOp('renaming a mailbox', () => b.then(...ops).commit());
      if (!res.succeeded) {
        for (const to of renamed) {
          if (await this.get(tenant, owner, to.name)) {
            throw new DomainError('already_exists', `new_name: mailbox "${owner}/${to.name}" already exists`, { field: 'new_name' });
          }
        }
        throw new CasConflict();
      }
      const rev = Number(res.header.revision);
      return renamed.map((m) => ({ ...m, revision: rev }));
    }, ctx.signal);
  }

  /** Deletes one mailbox with its ACL and its index entries (RFC 4314 §4: DELETE MUST delete the ACL). */
  /** Returns the revision of the deletion, and the mailbox as it was; a dry run stops before the transaction. */
  async delete(tenant: string, owner: string, name: string, expectedRevision: number, ctx: AuditContext, dryRun = false): Promise<{ revision: number; before: MailboxRecord }> {
    return withCasRetry(async () => {
      const cur = await this.require(tenant, owner, name);
      checkExpectedRevision(expectedRevision, cur.revision, `mailbox "${owner}/${name}"`);
      if (dryRun) return { revision: cur.revision, before: cur };
      const key = this.keys.mailbox(tenant, owner, name);
      const res = await etcdOp('deleting a mailbox', () =>
        this.client
          .if(key, 'Mod', '==', cur.revision)
          .then(
            this.client.delete().key(key),
            ...[...shareGrantees(cur.acl, owner)].map((g) => this.client.delete().key(this.keys.shared(tenant, g, owner, name))),
            ...this.audit.ops({ tenant, ...ctx, action: 'DeleteMailbox', target: `${owner}/${name}`, before: formatAcl(cur.acl), after: '' }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { revision: Number(res.header.revision), before: cur };
    }, ctx.signal);
  }

  /**
   * SETACL / DELETEACL: one transaction writes the mailbox's new ACL and the
   * index entries it implies, guarded by the mailbox's and the tenant's
   * revisions. Without an expected revision, lost races are retried from a
   * fresh read, so concurrent "+r" / "-w" changes all land.
   */
  async changeAcl(
    tenant: string,
    owner: string,
    name: string,
    change: AclChange,
    expectedRevision: number,
    ctx: AuditContext,
    check: (settings: TenantSettings, before: Acl, after: Acl) => void,
    dryRun = false,
    known?: KnownState,
  ): Promise<{ record: MailboxRecord; rights: Rights; before: Acl }> {
    const ident = formatIdentifier(change.identifier);
    const { record, before } = await this.writeAcl(tenant, owner, name, expectedRevision, ctx, check, dryRun, known, (cur) => {
      const acl = change.kind === 'set' ? setAcl(cur, change.identifier, change.change) : deleteAcl(cur, change.identifier);
      const before = cur.get(ident) ?? NO_RIGHTS;
      const after = acl.get(ident) ?? NO_RIGHTS;
      return { acl, audit: { action: change.kind === 'set' ? 'SetAcl' : 'DeleteAcl', identifier: ident, before: formatRights(before), after: formatRights(after) } };
    });
    return { record, rights: record.acl.get(ident) ?? NO_RIGHTS, before };
  }

  /**
   * The whole ACL at once (an import): one transaction, like changeAcl,
   * and one audit record with the ACL before and after.
   */
  async replaceAcl(
    tenant: string,
    owner: string,
    name: string,
    acl: Acl,
    expectedRevision: number,
    ctx: AuditContext,
    check: (settings: TenantSettings, before: Acl, after: Acl) => void,
  ): Promise<MailboxRecord> {
    const { record } = await this.writeAcl(tenant, owner, name, expectedRevision, ctx, check, false, undefined, (cur) => ({
      acl,
      audit: { action: 'ReplaceAcl', identifier: '', before: formatAcl(cur), after: formatAcl(acl) },
    }));
    return record;
  }

  /**
   * An ACL write: the mailbox's new ACL and the index entries it implies
   * in one transaction, guarded by the mailbox's and the tenant's
   * revisions. Without an expected revision, lost races are retried from a
   * fresh read, so concurrent "+r" / "-w" changes all land. A dry run goes
   * the same way up to the transaction, and answers what would be (at the
   * mailbox's current revision) without writing. `known`: the tenant and
   * the mailbox as the caller has them, for the first attempt (the
   * transaction's guards catch them stale, and a refusal judged from them is
   * judged again: a retry reads them from etcd).
   */
  private async writeAcl(
    tenant: string,
    owner: string,
    name: string,
    expectedRevision: number,
    ctx: AuditContext,
    check: (settings: TenantSettings, before: Acl, after: Acl) => void,
    dryRun: boolean,
    known: KnownState | undefined,
    compute: (cur: Acl) => { acl: Acl; audit: { action: string; identifier: string; before: string; after: string } },
  ): Promise<{ record: MailboxRecord; before: Acl }> {
    let first = known;
    return withCasRetry(async () => {
      const given = first;
      first = undefined;
      // Both at once: the transaction compares both revisions, so they need not be read at one.
      const [t, cur] = given ? [given.tenant, given.record] : await Promise.all([this.directory.getTenant(tenant), this.get(tenant, owner, name)]);
      let change: ReturnType<typeof compute>;
      try {
        if (!t) throw tenantNotFound(tenant);
        if (!cur) throw mailboxNotFound(tenant, owner, name);
        checkExpectedRevision(expectedRevision, cur.revision, `mailbox "${owner}/${name}"`);
        change = compute(cur.acl);
        if (!sameAcl(change.acl, cur.acl)) check(t.settings, cur.acl, change.acl);
      } catch (err) {
        // Refused from the state the caller gave (a watch-fed copy may be a moment behind): etcd judges again.
        if (given && err instanceof DomainError) throw new CasConflict();
        throw err;
      }
      const { acl, audit } = change;
      if (sameAcl(acl, cur.acl)) return { record: cur, before: cur.acl };
      if (dryRun) return { record: { ...cur, acl }, before: cur.acl };

      const oldG = shareGrantees(cur.acl, owner);
      const newG = shareGrantees(acl, owner);
      const key = this.keys.mailbox(tenant, owner, name);
      const next: MailboxRecord = { ...cur, acl };
      const stored = encodeMailbox(next);
      const res = await etcdOp('changing an ACL', () =>
        this.client
          .if(this.keys.tenant(tenant), 'Mod', '==', t.revision)
          .and(key, 'Mod', '==', cur.revision)
          .then(
            this.client.put(key).value(stored),
            // Every entry carries the mailbox as it is now (ListSharedWith reads only the index).
            ...[...newG].map((g) => this.client.put(this.keys.shared(tenant, g, owner, name)).value(stored)),
            ...[...oldG].filter((g) => !newG.has(g)).map((g) => this.client.delete().key(this.keys.shared(tenant, g, owner, name))),
            ...this.audit.ops({ tenant, ...ctx, target: `${owner}/${name}`, ...audit }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { record: { ...next, revision: Number(res.header.revision) }, before: cur.acl };
    }, ctx.signal);
  }

  /**
   * Other users' mailboxes on which `user` holds "l", with the user's
   * effective rights, in OWNER/NAME order, all as at one etcd revision.
   * Candidates come from the index entries of the user, of "anyone", of
   * "authenticated" and of the user's groups; each entry holds the
   * mailbox's record (ACL included) as the mailbox's last change wrote it,
   * so the index alone answers, negative entries applied.
   *
   * A user's whole answer is kept (recently asked users, a bounded number
   * of entries in all) with the revision it was read at. Every change that
   * could alter it writes under one of the prefixes it was read from: any
   * ACL change of a mailbox rewrites all of that mailbox's entries, a
   * rename or delete removes them, and group changes write the groups. So
   * one read at the current revision that finds, under each prefix, as many
   * keys as before and none modified since proves the kept answer current
   * (read-your-writes holds: that read is linearizable); otherwise it is
   * read again.
   */
  async sharedWith(tenant: string, user: string, limit: number, afterRef: string | undefined): Promise<{ items: SharedEntry[]; lastRef: string | undefined; revision: number }> {
    const key = `${tenant}/${user}`;
    let answer = this.answers.get(key);
    const revision = answer ? await this.confirm(tenant, answer) : 0;
    if (answer && revision > 0) {
      answer.revision = revision;
      this.answers.touch(key);
    } else {
      answer = await this.readShared(tenant, user);
      this.answers.set(key, answer);
    }
    const from = afterRef === undefined ? 0 : upperBound(answer.refs, afterRef);
    const items = answer.items.slice(from, from + limit);
    // Only hand out a page token when something may follow.
    const lastRef = from + limit < answer.items.length ? answer.refs[from + limit - 1] : undefined;
    return { items, lastRef, revision: answer.revision };
  }

  /** The revision a kept answer is current at (nothing it was read from changed), or 0 when it is not. */
  private async confirm(tenant: string, a: SharedAnswer): Promise<number> {
    // Per prefix, one keys-only range that returns the keys modified since the answer, and
    // (etcd counts before it filters) how many keys the prefix holds: a deletion shows as fewer.
    // Were the count ever the filtered one, a kept answer would only be read again, never wrong.
    const since = String(a.revision + 1);
    const probe = (prefix: string) => ({ request_range: { key: Buffer.from(prefix), range_end: Buffer.from(prefixEnd(prefix)), keys_only: true, min_mod_revision: since } });
    const res = await etcdOp('reading the shared index', () =>
      this.client.kv.txn({
        compare: [],
        success: [{ request_range: { key: Buffer.from(this.keys.tenant(tenant)), count_only: true } }, probe(this.keys.groupsPrefix(tenant)), ...a.grantees.map((g) => probe(this.keys.sharedPrefix(tenant, g)))],
        failure: [],
      }),
    );
    const range = (i: number) => res.responses[i]?.response_range;
    if (Number(range(0)?.count ?? 0) === 0) return 0;
    const counts = [a.groupCount, ...a.counts];
    for (let i = 0; i < counts.length; i++) {
      const r = range(1 + i);
      if (!r || r.kvs.length > 0 || Number(r.count) !== counts[i]) return 0;
    }
    return Number(res.header.revision);
  }

  /** A user's whole answer, read at one revision. */
  private async readShared(tenant: string, user: string): Promise<SharedAnswer> {
    const range = (prefix: string) => ({ key: Buffer.from(prefix), range_end: Buffer.from(prefixEnd(prefix)) });
    // One round trip: the tenant, its groups and the entries of the user, "anyone" and
    // "authenticated", all at one revision; then the entries of the user's groups at it.
    const first = await etcdOp('reading the shared index', () =>
      this.client.kv.txn({
        compare: [],
        success: [
          { request_range: { key: Buffer.from(this.keys.tenant(tenant)) } },
          { request_range: range(this.keys.groupsPrefix(tenant)) },
          ...[user, 'anyone', 'authenticated'].map((g) => ({ request_range: range(this.keys.sharedPrefix(tenant, g)) })),
        ],
        failure: [],
      }),
    );
    const revision = Number(first.header.revision);
    const kvsOf = (i: number) => first.responses[i]?.response_range?.kvs ?? [];
    if (kvsOf(0).length === 0) throw tenantNotFound(tenant);
    const groups = groupsContaining(this.keys, tenant, user, kvsOf(1));
    const entries: Array<{ grantee: string; kvs: IKeyValue[] }> = [user, 'anyone', 'authenticated'].map((g, i) => ({ grantee: g, kvs: kvsOf(2 + i) }));
    if (groups.size > 0) {
      const names = [...groups].map((g) => `group:${g}`);
      const more = await Promise.all(
        names.map((g) => etcdOp('reading the shared index', () => this.client.getAll().prefix(this.keys.sharedPrefix(tenant, g)).revision(revision).exec()).then((r) => ({ grantee: g, kvs: r.kvs }))),
      );
      entries.push(...more);
    }

    // An entry written before entries held the record (the mailbox id alone) sends the reader to the mailbox itself.
    const records = new Map<string, MailboxRecord | undefined>();
    for (const { grantee, kvs } of entries) {
      for (const kv of kvs) {
        const ref = this.keys.sharedRefFromKey(tenant, grantee, kv.key.toString());
        if (ref.startsWith(`${user}/`) || records.get(ref) !== undefined) continue;
        const slash = ref.indexOf('/');
        records.set(ref, isStoredRecord(kv.value) ? decodeMailbox(tenant, ref.slice(0, slash), ref.slice(slash + 1), kv.value, Number(kv.mod_revision)) : undefined);
      }
    }
    const sorted = [...records.keys()].sort();
    const older = sorted.filter((r) => records.get(r) === undefined);
    if (older.length > 0) {
      const read = await this.getMany(tenant, older, revision);
      older.forEach((r, i) => records.set(r, read[i]));
    }
    const subject = { user, groups };
    const refs: string[] = [];
    const items: SharedEntry[] = [];
    for (const ref of sorted) {
      const rec = records.get(ref);
      if (!rec) continue;
      const rights = effectiveRights(rec.acl, subject, rec.owner);
      if ((rights & L) === 0) continue;
      refs.push(ref);
      items.push({ record: rec, rights });
    }
    return { revision, grantees: entries.map((e) => e.grantee), counts: entries.map((e) => e.kvs.length), groupCount: kvsOf(1).length, refs, items };
  }

  private decodeKey(tenant: string, key: string, value: Buffer, revision: number): MailboxRecord {
    const ref = this.keys.mailboxRefFromKey(tenant, key);
    const slash = ref.indexOf('/');
    const rec = decodeMailbox(tenant, ref.slice(0, slash), ref.slice(slash + 1), value, revision);
    if (!rec) throw new DomainError('internal', `unreadable mailbox record at ${key}`);
    return rec;
  }
}

/** The stored form of a mailbox record (bulk loaders in benchmarks write the same). */
export function encodeMailbox(rec: MailboxRecord): string {
  const acl: Record<string, string> = {};
  for (const [k, r] of aclEntries(rec.acl)) acl[k] = formatRights(r);
  return JSON.stringify({ id: rec.id, acl, createdAt: rec.createdAt.toISOString() } satisfies StoredMailbox);
}

/** A stored mailbox record (JSON), as mailbox keys and index entries hold; an older index entry holds only the id. */
export function isStoredRecord(value: Buffer): boolean {
  return value[0] === 0x7b;
}

export function decodeMailbox(tenant: string, owner: string, name: string, value: Buffer, revision: number): MailboxRecord | undefined {
  try {
    const s = JSON.parse(value.toString()) as StoredMailbox;
    const acl = new Map<string, Rights>();
    for (const [k, v] of Object.entries(s.acl ?? {})) acl.set(k, parseRights(v));
    return { tenant, owner, name, id: s.id, acl, createdAt: new Date(s.createdAt), revision };
  } catch {
    return undefined;
  }
}

export function formatAcl(acl: Acl): string {
  return aclEntries(acl)
    .map(([k, r]) => `${k}=${formatRights(r)}`)
    .join(' ');
}

function sameAcl(a: Acl, b: Acl): boolean {
  if (a.size !== b.size) return false;
  for (const [k, r] of a) if (b.get(k) !== r) return false;
  return true;
}
