import { type PackedAcl, effectivePackedRights, forEachPackedGrantee, packAcl } from '../domain/acl.js';
import { type Rights, L, NO_RIGHTS, formatRightsForResponse, parseRights } from '../domain/rights.js';
import { readPackedMailboxes } from '../domain/mailbox-pack.js';
import type { Event } from '../gen/mailshare/v1/events.js';

export interface CachedAssignment {
  readonly tenant: string;
  readonly user: string;
  readonly node: string;
  readonly epoch: number;
}

interface CachedMailbox {
  readonly id: string;
  readonly owner: string;
  readonly acl: PackedAcl;
}

export interface SharedView {
  readonly mailbox: string;
  readonly id: string;
  readonly rights: string;
}

export type AssignmentChange = { before: CachedAssignment | undefined; after: CachedAssignment | undefined };

/**
 * The agent's in-memory copy of what backends need on the hot path:
 * assignments, mailboxes with their ACLs, groups, and a "shared with"
 * index built from the ACLs, all fed by the event stream and valid at
 * `revision`. Pure data structure: no I/O.
 */
export class AgentCache {
  revision = 0;
  private readonly assignments = new Map<string, CachedAssignment>();
  private readonly mailboxes = new Map<string, CachedMailbox>();
  private readonly groups = new Map<string, Set<string>>();
  /** "tenant/user" → group names. */
  private readonly memberOf = new Map<string, Set<string>>();
  /** "tenant/grantee" → mailbox keys "tenant/owner/name". */
  private readonly shared = new Map<string, Set<string>>();
  /** Node name → address of its IMAP backend. */
  private readonly nodes = new Map<string, string>();
  /** Nodes' servers for other protocols: node → protocol → host:port. */
  private readonly otherAddresses = new Map<string, Readonly<Record<string, string>>>();
  /** Nodes live on a lease now. */
  private readonly live = new Set<string>();
  /** Login domain → tenant, and tenant → its domains (from the tenants' records). */
  private readonly domainOwners = new Map<string, string>();
  private readonly tenantDomains = new Map<string, readonly string[]>();
  /**
   * One copy of each owner and identifier string, shared by every mailbox
   * naming it (a user typically owns or is granted many): most of what a
   * cached mailbox would otherwise cost. Grows with the distinct names seen;
   * emptied with the cache.
   */
  private readonly strings = new Map<string, string>();
  private readonly intern = (s: string): string => {
    const had = this.strings.get(s);
    if (had !== undefined) return had;
    this.strings.set(s, s);
    return s;
  };

  clear(): void {
    this.assignments.clear();
    this.mailboxes.clear();
    this.groups.clear();
    this.memberOf.clear();
    this.shared.clear();
    this.nodes.clear();
    this.otherAddresses.clear();
    this.live.clear();
    this.domainOwners.clear();
    this.tenantDomains.clear();
    this.strings.clear();
    this.revision = 0;
  }

  /** Applies one event; returns the assignment change it caused, if any. */
  apply(e: Event): AssignmentChange | undefined {
    if (e.revision > this.revision) this.revision = e.revision;
    switch (e.kind) {
      case 'assignment': {
        const a = e.assignment!;
        const key = `${a.tenant}/${a.user}`;
        const before = this.assignments.get(key);
        if (e.deleted) {
          // A delete of an older assignment than the one we hold is stale.
          if (before && a.epoch !== 0 && before.epoch !== a.epoch) return undefined;
          this.assignments.delete(key);
          return { before, after: undefined };
        }
        const after = { tenant: a.tenant, user: a.user, node: a.node, epoch: a.epoch };
        this.assignments.set(key, after);
        return { before, after };
      }
      case 'mailbox': {
        const m = e.mailbox!;
        const key = flat(`${e.tenant}/${m.owner}/${m.name}`);
        const prev = this.mailboxes.get(key);
        if (prev) this.unindex(e.tenant, key, prev);
        if (e.deleted) {
          this.mailboxes.delete(key);
        } else {
          const acl = packAcl(m.acl.map((x) => [x.identifier, parseRights(x.rights)] as [string, Rights]), this.intern);
          const rec = { id: m.id, owner: this.intern(m.owner), acl };
          this.mailboxes.set(key, rec);
          this.index(e.tenant, key, rec);
        }
        return undefined;
      }
      case 'group': {
        const g = e.group!;
        const key = `${e.tenant}/${g.name}`;
        for (const u of this.groups.get(key) ?? []) this.memberOf.get(`${e.tenant}/${u}`)?.delete(g.name);
        if (e.deleted) {
          this.groups.delete(key);
        } else {
          const members = new Set(g.members);
          this.groups.set(key, members);
          for (const u of members) {
            const k = `${e.tenant}/${u}`;
            let s = this.memberOf.get(k);
            if (!s) this.memberOf.set(k, (s = new Set()));
            s.add(g.name);
          }
        }
        return undefined;
      }
      case 'node': {
        const n = e.node!;
        // Liveness events carry no address (state "" while live, "down" when the lease is gone);
        // a configuration event does, until the node is removed.
        if (n.imapAddress === '' && n.state === '') this.live.add(n.name);
        else if (n.imapAddress === '' && n.state === 'down') this.live.delete(n.name);
        if (n.state === 'removed') {
          this.nodes.delete(n.name);
          this.otherAddresses.delete(n.name);
          this.live.delete(n.name);
        } else if (n.imapAddress !== '') {
          this.nodes.set(n.name, n.imapAddress);
          this.otherAddresses.set(n.name, { ...n.addresses });
        }
        return undefined;
      }
      case 'tenant': {
        for (const d of this.tenantDomains.get(e.tenant) ?? []) if (this.domainOwners.get(d) === e.tenant) this.domainOwners.delete(d);
        this.tenantDomains.delete(e.tenant);
        const domains = e.deleted ? [] : (e.tenantRecord?.domains ?? []);
        if (domains.length > 0) this.tenantDomains.set(e.tenant, [...domains]);
        for (const d of domains) this.domainOwners.set(d, e.tenant);
        return undefined;
      }
      default:
        return undefined;
    }
  }

  /**
   * Applies a chunk of compact mailbox records (a snapshot's
   * SnapshotResponse.mailboxes): as mailbox put events, without building an
   * event per mailbox. Returns how many it held.
   */
  applyPacked(chunk: Uint8Array): number {
    return readPackedMailboxes(
      chunk,
      (key, tenantLength, ownerLength, id, acl) => {
        const tenant = this.intern(key.slice(0, tenantLength));
        const owner = this.intern(key.slice(tenantLength + 1, tenantLength + 1 + ownerLength));
        const prev = this.mailboxes.get(key);
        if (prev) this.unindex(tenant, key, prev);
        const rec = { id, owner, acl };
        this.mailboxes.set(key, rec);
        this.index(tenant, key, rec);
      },
      this.intern,
    );
  }

  /** The tenant that owns a login domain (lower case), if any. */
  tenantOfDomain(domain: string): string | undefined {
    return this.domainOwners.get(domain);
  }

  domainsOf(tenant: string): readonly string[] {
    return this.tenantDomains.get(tenant) ?? [];
  }

  nodeAddress(node: string, protocol = 'imap'): string | undefined {
    return protocol === 'imap' ? this.nodes.get(node) : this.otherAddresses.get(node)?.[protocol];
  }

  /** Live nodes with their addresses. */
  liveNodes(protocol = 'imap'): Array<{ node: string; address: string }> {
    const out: Array<{ node: string; address: string }> = [];
    for (const n of this.live) {
      const address = this.nodeAddress(n, protocol);
      if (address) out.push({ node: n, address });
    }
    return out;
  }

  get assignmentCount(): number {
    return this.assignments.size;
  }

  /** Forgets a user's assignment without it counting as a change (a user no longer followed). */
  forget(tenant: string, user: string): void {
    this.assignments.delete(`${tenant}/${user}`);
  }

  /** Keeps an assignment as another cache had it (carried over a new snapshot). */
  keep(a: CachedAssignment): void {
    this.assignments.set(`${a.tenant}/${a.user}`, a);
  }

  locate(tenant: string, user: string): CachedAssignment | undefined {
    return this.assignments.get(`${tenant}/${user}`);
  }

  assignmentsOf(node: string): CachedAssignment[] {
    return [...this.assignments.values()].filter((a) => a.node === node);
  }

  groupsOf(tenant: string, user: string): Set<string> {
    return this.memberOf.get(`${tenant}/${user}`) ?? new Set();
  }

  /** Effective rights, or undefined when the mailbox is not registered. */
  rights(tenant: string, user: string, owner: string, name: string): Rights | undefined {
    const m = this.mailboxes.get(`${tenant}/${owner}/${name}`);
    if (!m) return undefined;
    return effectivePackedRights(m.acl, { user, groups: this.groupsOf(tenant, user) }, m.owner);
  }

  sharedWith(tenant: string, user: string): SharedView[] {
    const groups = this.groupsOf(tenant, user);
    const candidates = new Set<string>();
    for (const g of [user, 'anyone', 'authenticated', ...[...groups].map((x) => `group:${x}`)]) {
      for (const k of this.shared.get(`${tenant}/${g}`) ?? []) candidates.add(k);
    }
    const out: SharedView[] = [];
    for (const key of candidates) {
      const m = this.mailboxes.get(key);
      if (!m || m.owner === user) continue;
      const r = effectivePackedRights(m.acl, { user, groups }, m.owner);
      if ((r & L) === NO_RIGHTS) continue;
      out.push({ mailbox: key.slice(tenant.length + 1), id: m.id, rights: formatRightsForResponse(r) });
    }
    return out.sort((a, b) => (a.mailbox < b.mailbox ? -1 : a.mailbox > b.mailbox ? 1 : 0));
  }

  private index(tenant: string, key: string, m: CachedMailbox): void {
    forEachPackedGrantee(m.acl, m.owner, (g) => {
      const k = `${tenant}/${g}`;
      let s = this.shared.get(k);
      if (!s) this.shared.set(k, (s = new Set()));
      s.add(key);
    });
  }

  private unindex(tenant: string, key: string, m: CachedMailbox): void {
    forEachPackedGrantee(m.acl, m.owner, (g) => this.shared.get(`${tenant}/${g}`)?.delete(key));
  }
}

/**
 * A flat copy of a string. V8 keeps a concatenation as a tree of its parts
 * (which keeps the parts alive too); a key that lives as long as the cache
 * costs about half as much flat.
 */
function flat(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}
