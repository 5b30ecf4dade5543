import type { Etcd3, IKeyValue } from 'etcd3';
import { DomainError } from '../domain/errors.js';
import type { AuditContext, AuditStore } from './audit-store.js';
import { CasConflict, checkExpectedRevision, withCasRetry } from './cas.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';

export interface TenantSettings {
  /** Whether ACL entries for "anyone" may be set. */
  readonly allowAnyone: boolean;
  /** Most ACL entries besides the owner's one mailbox may have. */
  readonly maxSharesPerMailbox: number;
}

/**
 * Hard cap on ACL entries per mailbox: renaming a mailbox moves its record
 * and one index key per entry in a single etcd transaction, which etcd
 * limits to 128 operations by default.
 */
export const MAX_SHARES_PER_MAILBOX = 50;
export const DEFAULT_TENANT_SETTINGS: TenantSettings = { allowAnyone: true, maxSharesPerMailbox: MAX_SHARES_PER_MAILBOX };
export const MAX_GROUP_MEMBERS = 10_000;

export interface TenantRecord {
  readonly id: string;
  readonly settings: TenantSettings;
  readonly createdAt: Date;
  readonly revision: number;
  /** Login domains; the first is the primary one (users' names at Dovecot are user@primary). */
  readonly domains: readonly string[];
}

export interface GroupRecord {
  readonly tenant: string;
  readonly name: string;
  readonly members: readonly string[];
  readonly revision: number;
}

interface StoredTenant {
  settings: TenantSettings;
  createdAt: string;
  domains?: string[];
}

function domainTaken(domain: string, owner: string | undefined): DomainError {
  return new DomainError('already_exists', `domain: "${domain}" is a login domain of tenant "${owner ?? '?'}"; remove it there first`, { field: 'domain' });
}

export function tenantNotFound(tenant: string): DomainError {
  return new DomainError('not_found', `tenant: tenant "${tenant}" does not exist`, { field: 'tenant' });
}

/** Tenants and groups in etcd. Every change is one guarded transaction plus its audit record. */
export class DirectoryStore {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly audit: AuditStore,
  ) {}

  /** A tenant with its login domains, in one transaction: none of them may belong to a tenant already. */
  async createTenant(id: string, settings: TenantSettings, ctx: AuditContext, domains: readonly string[] = []): Promise<TenantRecord> {
    const key = this.keys.tenant(id);
    const createdAt = new Date();
    // In the order given: the first is the tenant's primary domain (the one Dovecot names its users by).
    const unique = [...new Set(domains)];
    let txn = this.client.if(key, 'Create', '==', 0);
    for (const d of unique) txn = txn.and(this.keys.domain(d), 'Create', '==', 0);
    const res = await etcdOp('creating a tenant', () =>
      txn
        .then(
          this.client.put(key).value(JSON.stringify({ settings, createdAt: createdAt.toISOString(), domains: unique } satisfies StoredTenant)),
          this.client.put(this.keys.tenantMeta(id)).value(''),
          ...unique.map((d) => this.client.put(this.keys.domain(d)).value(id)),
          ...this.audit.ops({ tenant: id, ...ctx, action: 'CreateTenant', target: id, after: `${formatSettings(settings)}${unique.length ? ` domains=${unique.join(',')}` : ''}` }),
        )
        .commit(),
    );
    if (!res.succeeded) {
      if (await this.getTenant(id)) throw new DomainError('already_exists', `id: tenant "${id}" already exists`, { field: 'id' });
      for (const d of unique) {
        const owner = await this.domainOwner(d);
        if (owner !== undefined) throw domainTaken(d, owner);
      }
      throw new CasConflict();
    }
    return { id, settings, createdAt, revision: Number(res.header.revision), domains: unique };
  }

  /** The tenant that owns a login domain, if any. */
  async domainOwner(domain: string): Promise<string | undefined> {
    const res = await etcdOp('reading a login domain', () => this.client.get(this.keys.domain(domain)).exec());
    return res.kvs[0]?.value.toString();
  }

  /**
   * Adds a login domain to a tenant: the tenant's record and the domain's
   * owner key in one transaction, guarded by the record's revision and the
   * domain's absence. Adding a domain the tenant owns changes nothing.
   */
  async addDomain(id: string, domain: string, ctx: AuditContext): Promise<TenantRecord> {
    return withCasRetry(async () => {
      const cur = await this.requireTenant(id);
      if (cur.domains.includes(domain)) return cur;
      // The first domain: from now on user ids hold no "@" (see requireDomainlessUsers). The scan
      // and the transaction are tied by the tenant's meta key, which every mailbox and group
      // creation touches: one created meanwhile makes the transaction fail and the scan run again.
      const metaKey = this.keys.tenantMeta(id);
      const metaRev = Number((await etcdOp('reading a tenant', () => this.client.get(metaKey).exec())).kvs[0]?.mod_revision ?? 0);
      if (cur.domains.length === 0) {
        const taken = await this.userWithAt(id);
        if (taken !== undefined) throw new DomainError('failed_precondition', `domain: tenant "${id}" names user "${taken}", with an "@"; with login domains its users are named without one: change that first`, { field: 'domain' });
      }
      const domains = [...cur.domains, domain];
      const key = this.keys.tenant(id);
      let txn = this.client.if(key, 'Mod', '==', cur.revision).and(this.keys.domain(domain), 'Create', '==', 0);
      if (cur.domains.length === 0) txn = txn.and(metaKey, 'Mod', '==', metaRev);
      const res = await etcdOp('adding a login domain', () =>
        txn
          .then(
            this.client.put(key).value(JSON.stringify({ settings: cur.settings, createdAt: cur.createdAt.toISOString(), domains } satisfies StoredTenant)),
            this.client.put(this.keys.domain(domain)).value(id),
            ...this.audit.ops({ tenant: id, ...ctx, action: 'AddTenantDomain', target: domain, after: domains.join(',') }),
          )
          .commit(),
      );
      if (!res.succeeded) {
        const owner = await this.domainOwner(domain);
        if (owner !== undefined && owner !== id) throw domainTaken(domain, owner);
        throw new CasConflict();
      }
      return { ...cur, domains, revision: Number(res.header.revision) };
    }, ctx.signal);
  }

  /** Removes a login domain from a tenant (NOT_FOUND when the tenant does not own it). */
  async removeDomain(id: string, domain: string, ctx: AuditContext): Promise<TenantRecord> {
    return withCasRetry(async () => {
      const cur = await this.requireTenant(id);
      if (!cur.domains.includes(domain)) throw new DomainError('not_found', `domain: "${domain}" is not a login domain of tenant "${id}"`, { field: 'domain' });
      const domains = cur.domains.filter((d) => d !== domain);
      const key = this.keys.tenant(id);
      const res = await etcdOp('removing a login domain', () =>
        this.client
          .if(key, 'Mod', '==', cur.revision)
          .and(this.keys.domain(domain), 'Value', '==', id)
          .then(
            this.client.put(key).value(JSON.stringify({ settings: cur.settings, createdAt: cur.createdAt.toISOString(), domains } satisfies StoredTenant)),
            this.client.delete().key(this.keys.domain(domain)),
            ...this.audit.ops({ tenant: id, ...ctx, action: 'RemoveTenantDomain', target: domain, before: cur.domains.join(',') }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { ...cur, domains, revision: Number(res.header.revision) };
    }, ctx.signal);
  }

  async getTenant(id: string, revision?: number): Promise<TenantRecord | undefined> {
    const b = this.client.get(this.keys.tenant(id));
    if (revision) b.revision(revision);
    const res = await etcdOp('reading a tenant', () => b.exec());
    const kv = res.kvs[0];
    return kv ? decodeTenant(id, kv.value, Number(kv.mod_revision)) : undefined;
  }

  async requireTenant(id: string): Promise<TenantRecord> {
    const t = await this.getTenant(id);
    if (!t) throw tenantNotFound(id);
    return t;
  }

  async listTenants(limit: number, afterKey: string | undefined): Promise<{ tenants: TenantRecord[]; lastKey: string | undefined }> {
    const page = await this.page(this.keys.tenantsPrefix, limit, afterKey);
    return {
      tenants: page.kvs.flatMap((kv) => {
        const t = decodeTenant(this.keys.tenantFromKey(kv.key.toString()), kv.value, Number(kv.mod_revision));
        return t ? [t] : [];
      }),
      lastKey: page.lastKey,
    };
  }

  async updateTenant(id: string, patch: Partial<TenantSettings>, expectedRevision: number, ctx: AuditContext): Promise<TenantRecord> {
    return withCasRetry(async () => {
      const cur = await this.requireTenant(id);
      checkExpectedRevision(expectedRevision, cur.revision, `tenant "${id}"`);
      const settings: TenantSettings = { ...cur.settings, ...patch };
      const key = this.keys.tenant(id);
      const res = await etcdOp('updating a tenant', () =>
        this.client
          .if(key, 'Mod', '==', cur.revision)
          .then(
            this.client.put(key).value(JSON.stringify({ settings, createdAt: cur.createdAt.toISOString(), domains: [...cur.domains] } satisfies StoredTenant)),
            ...this.audit.ops({ tenant: id, ...ctx, action: 'UpdateTenant', target: id, before: formatSettings(cur.settings), after: formatSettings(settings) }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { ...cur, settings, revision: Number(res.header.revision) };
    }, ctx.signal);
  }

  /**
   * Deletes a tenant and everything it owns in one transaction. Without
   * force it must be empty: the emptiness check and the delete are tied
   * together by the tenant's meta key, which every create touches.
   */
  /** What went with the tenant (a dry run: what would go; nothing written). */
  async deleteTenant(
    id: string,
    force: boolean,
    expectedRevision: number,
    ctx: AuditContext,
    dryRun = false,
  ): Promise<{ mailboxes: number; groups: number; domains: readonly string[]; revision: number }> {
    return withCasRetry(async () => {
      const cur = await this.requireTenant(id);
      checkExpectedRevision(expectedRevision, cur.revision, `tenant "${id}"`);
      const metaKey = this.keys.tenantMeta(id);
      const meta = await etcdOp('reading a tenant', () => this.client.get(metaKey).exec());
      const rev = Number(meta.header.revision);
      const metaRev = Number(meta.kvs[0]?.mod_revision ?? 0);
      if (!force) {
        const [mb, gr] = await Promise.all([
          etcdOp('checking a tenant', () => this.client.getAll().prefix(this.keys.mailboxesPrefix(id)).revision(rev).limit(1).keys()),
          etcdOp('checking a tenant', () => this.client.getAll().prefix(this.keys.groupsPrefix(id)).revision(rev).limit(1).keys()),
        ]);
        if (mb.length > 0 || gr.length > 0) {
          throw new DomainError('failed_precondition', `id: tenant "${id}" still has ${mb.length > 0 ? 'mailboxes' : 'groups'}; delete them first, or delete with force (mailshare tenant delete --force)`, { field: 'id' });
        }
      }
      const [mailboxes, groups] = await Promise.all([
        etcdOp('counting a tenant', () => this.client.getAll().prefix(this.keys.mailboxesPrefix(id)).revision(rev).count()),
        etcdOp('counting a tenant', () => this.client.getAll().prefix(this.keys.groupsPrefix(id)).revision(rev).count()),
      ]);
      if (dryRun) return { mailboxes, groups, domains: cur.domains, revision: 0 };
      const data = this.keys.tenantData(id);
      const res = await etcdOp('deleting a tenant', () =>
        this.client
          .if(this.keys.tenant(id), 'Mod', '==', cur.revision)
          .and(metaKey, 'Mod', '==', metaRev)
          .then(
            this.client.delete().key(this.keys.tenant(id)),
            this.client.delete().inRange({ start: data, end: prefixEnd(data) }),
            // Its login domains are free again.
            ...cur.domains.map((d) => this.client.delete().key(this.keys.domain(d))),
            ...this.audit.ops({ tenant: id, ...ctx, action: 'DeleteTenant', target: id, before: formatSettings(cur.settings), after: force ? 'force' : '' }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { mailboxes, groups, domains: cur.domains, revision: Number(res.header.revision) };
    }, ctx.signal);
  }

  async getGroup(tenant: string, name: string, revision?: number): Promise<GroupRecord | undefined> {
    const b = this.client.get(this.keys.group(tenant, name));
    if (revision) b.revision(revision);
    const res = await etcdOp('reading a group', () => b.exec());
    const kv = res.kvs[0];
    return kv ? decodeGroup(tenant, name, kv.value, Number(kv.mod_revision)) : undefined;
  }

  async listGroups(tenant: string, limit: number, afterKey: string | undefined): Promise<{ groups: GroupRecord[]; lastKey: string | undefined }> {
    const page = await this.page(this.keys.groupsPrefix(tenant), limit, afterKey);
    return {
      groups: page.kvs.map((kv) => decodeGroup(tenant, this.keys.groupFromKey(tenant, kv.key.toString()), kv.value, Number(kv.mod_revision))),
      lastKey: page.lastKey,
    };
  }

  /** Every group of a tenant that has `user` as a member, read at `revision` (0 = now). */
  /** How many groups a tenant has (a count-only read). */
  async groupCount(tenant: string): Promise<number> {
    return etcdOp('counting groups', () => this.client.getAll().prefix(this.keys.groupsPrefix(tenant)).count());
  }

  async groupsOf(tenant: string, user: string, revision = 0): Promise<{ groups: Set<string>; revision: number }> {
    const b = this.client.getAll().prefix(this.keys.groupsPrefix(tenant));
    if (revision) b.revision(revision);
    const res = await etcdOp('reading groups', () => b.exec());
    return { groups: groupsContaining(this.keys, tenant, user, res.kvs), revision: Number(res.header.revision) };
  }

  /**
   * Applies `change` to a group's member list (creating the group if it is
   * absent and `create` is set) in one guarded transaction.
   */
  async changeGroup(
    tenant: string,
    name: string,
    change: (members: readonly string[]) => string[],
    opts: { expectedRevision: number; create: boolean; action: string; ctx: AuditContext; dryRun?: boolean },
  ): Promise<GroupRecord & { before: readonly string[] }> {
    return withCasRetry(async () => {
      const [t, cur] = await Promise.all([this.getTenant(tenant), this.getGroup(tenant, name)]);
      if (!t) throw tenantNotFound(tenant);
      if (!cur && !opts.create) throw new DomainError('not_found', `name: group "${name}" does not exist in tenant "${tenant}"`, { field: 'name' });
      checkExpectedRevision(opts.expectedRevision, cur?.revision ?? 0, `group "${name}"`);
      const members = [...new Set(change(cur?.members ?? []))].sort();
      if (members.length > MAX_GROUP_MEMBERS) {
        throw new DomainError('invalid_argument', `members: a group has at most ${MAX_GROUP_MEMBERS} members`, { field: 'members' });
      }
      // A dry run goes the same way up to the transaction.
      if (opts.dryRun) return { tenant, name, members, revision: cur?.revision ?? 0, before: cur?.members ?? [] };
      const key = this.keys.group(tenant, name);
      const res = await etcdOp('changing a group', () =>
        this.client
          .if(this.keys.tenant(tenant), 'Mod', '==', t.revision)
          .and(key, 'Mod', '==', cur?.revision ?? 0)
          .then(
            this.client.put(key).value(JSON.stringify({ members })),
            ...(cur ? [] : [this.client.put(this.keys.tenantMeta(tenant)).value('')]),
            ...this.audit.ops({
              tenant,
              ...opts.ctx,
              action: opts.action,
              target: `group:${name}`,
              before: cur ? cur.members.join(' ') : '',
              after: members.join(' '),
            }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return { tenant, name, members, revision: Number(res.header.revision), before: cur?.members ?? [] };
    }, opts.ctx.signal);
  }

  /** Returns the revision of the deletion. */
  async deleteGroup(tenant: string, name: string, expectedRevision: number, ctx: AuditContext): Promise<number> {
    return withCasRetry(async () => {
      const cur = await this.getGroup(tenant, name);
      if (!cur) throw new DomainError('not_found', `name: group "${name}" does not exist in tenant "${tenant}"`, { field: 'name' });
      checkExpectedRevision(expectedRevision, cur.revision, `group "${name}"`);
      const key = this.keys.group(tenant, name);
      const res = await etcdOp('deleting a group', () =>
        this.client
          .if(key, 'Mod', '==', cur.revision)
          .then(
            this.client.delete().key(key),
            ...this.audit.ops({ tenant, ...ctx, action: 'DeleteGroup', target: `group:${name}`, before: cur.members.join(' '), after: '' }),
          )
          .commit(),
      );
      if (!res.succeeded) throw new CasConflict();
      return Number(res.header.revision);
    }, ctx.signal);
  }

  /**
   * A user id with "@" the tenant already names (a mailbox owner, an ACL
   * identifier, a group member), if any: such ids would name nobody once
   * the tenant has login domains. Reads the tenant's mailboxes and groups in
   * pages (domains are added rarely).
   */
  async userWithAt(tenant: string): Promise<string | undefined> {
    for (const prefix of [this.keys.mailboxesPrefix(tenant), this.keys.groupsPrefix(tenant)]) {
      const isGroups = prefix === this.keys.groupsPrefix(tenant);
      let after: string | undefined;
      do {
        const page = await this.page(prefix, 1000, after);
        for (const kv of page.kvs) {
          if (isGroups) {
            const found = decodeGroup(tenant, '', kv.value, 0).members.find((m) => m.includes('@'));
            if (found) return found;
            continue;
          }
          const owner = kv.key.toString().slice(prefix.length).split('/')[0]!;
          if (owner.includes('@')) return owner;
          try {
            const acl = (JSON.parse(kv.value.toString()) as { acl?: Record<string, string> }).acl ?? {};
            const id = Object.keys(acl).map((k) => k.replace(/^-/, '')).find((k) => k.includes('@') && !k.startsWith('group:'));
            if (id) return id;
          } catch {
            // not a mailbox record
          }
        }
        after = page.lastKey;
      } while (after !== undefined);
    }
    return undefined;
  }

  private async page(prefix: string, limit: number, afterKey: string | undefined) {
    if (afterKey !== undefined && !afterKey.startsWith(prefix)) {
      throw new DomainError('invalid_argument', 'page_token: is not a token from a previous page', { field: 'page_token' });
    }
    const start = afterKey !== undefined ? `${afterKey}\0` : prefix;
    const res = await etcdOp('listing', () =>
      this.client.getAll().inRange({ start, end: prefixEnd(prefix) }).limit(limit + 1).exec(),
    );
    return { kvs: res.kvs.slice(0, limit), lastKey: res.kvs.length > limit ? res.kvs[limit - 1]!.key.toString() : undefined };
  }
}

export function decodeTenant(id: string, value: Buffer, revision: number): TenantRecord | undefined {
  try {
    const s = JSON.parse(value.toString()) as StoredTenant;
    const domains = Array.isArray(s.domains) ? s.domains.filter((d): d is string => typeof d === 'string') : [];
    return { id, settings: { ...DEFAULT_TENANT_SETTINGS, ...s.settings }, createdAt: new Date(s.createdAt), revision, domains };
  } catch {
    return undefined;
  }
}

/** The names of the groups among `kvs` (a tenant's group records, as read from etcd) that have `user` as a member. */
export function groupsContaining(keys: Keys, tenant: string, user: string, kvs: readonly IKeyValue[]): Set<string> {
  const groups = new Set<string>();
  for (const kv of kvs) {
    const g = decodeGroup(tenant, keys.groupFromKey(tenant, kv.key.toString()), kv.value, 0);
    if (g.members.includes(user)) groups.add(g.name);
  }
  return groups;
}

export function decodeGroup(tenant: string, name: string, value: Buffer, revision: number): GroupRecord {
  let members: string[] = [];
  try {
    const s = JSON.parse(value.toString()) as { members?: unknown };
    if (Array.isArray(s.members)) members = s.members.filter((m): m is string => typeof m === 'string');
  } catch {
    members = [];
  }
  return { tenant, name, members, revision };
}

export function formatSettings(s: TenantSettings): string {
  return `allow_anyone=${s.allowAnyone} max_shares_per_mailbox=${s.maxSharesPerMailbox}`;
}
