import { DomainError } from '../domain/errors.js';
import { parseDomain, parseGroupName, parseTenantId, parseUserId } from '../domain/ids.js';
import { decodePageToken, encodePageToken, parsePageSize } from '../domain/paging.js';
import { effectiveRights } from '../domain/acl.js';
import type { DirectoryServiceServer, Group, GroupChangeEffect } from '../gen/mailshare/v1/directory.js';
import { DEFAULT_TENANT_SETTINGS, type DirectoryStore, type GroupRecord } from '../store/directory-store.js';
import type { MailboxRecord, MailboxStore } from '../store/mailbox-store.js';
import { auditContext, requireTenantRole } from './access.js';
import { groupToPb, parseExpectedRevision, rightsToPb, settingsFromPb, tenantToPb } from './convert.js';
import { ANY_ROLE, type RpcDeps, unary } from './rpc.js';
import { requireDomainlessUsers } from './user-names.js';

export interface DirectoryServiceDeps extends RpcDeps {
  readonly directory: DirectoryStore;
  /** For a dry run's effects: the mailboxes whose ACLs name the group. */
  readonly mailboxes?: MailboxStore;
}

const ADMINS = ['admin', 'tenant-admin'] as const;
const READERS = ['admin', 'tenant-admin', 'node'] as const;

export function createDirectoryService(deps: DirectoryServiceDeps): DirectoryServiceServer {
  /** A group change's answer; a dry run's with whose rights on which mailbox it would alter. */
  const answer = async (g: GroupRecord & { before: readonly string[] }, dryRun: boolean): Promise<Group> => {
    const out = groupToPb(g);
    if (dryRun && deps.mailboxes) out.effects = await groupEffects(deps.directory, deps.mailboxes, g.tenant, g.name, g.before, g.members);
    return out;
  };

  const { directory } = deps;

  const members = (list: string[], field = 'members'): string[] => list.map((m, i) => parseUserId(m, `${field}[${i}]`));

  return {
    createTenant: unary(deps, 'CreateTenant', ['admin'], async (req, ctx) => {
      const id = parseTenantId(req.id, 'id');
      const settings = { ...DEFAULT_TENANT_SETTINGS, ...settingsFromPb(req.settings) };
      const domains = req.domains.map((d, i) => parseDomain(d, `domains[${i}]`));
      const t = await directory.createTenant(id, settings, auditContext(ctx.principal, undefined, ctx.signal), domains);
      ctx.log.info({ tenant: id }, 'tenant created');
      return tenantToPb(t);
    }),

    getTenant: unary(deps, 'GetTenant', ANY_ROLE, async (req, ctx) => {
      const id = parseTenantId(req.id, 'id');
      requireTenantRole(ctx.principal.role, id, READERS);
      const t = await directory.getTenant(id);
      if (!t) throw new DomainError('not_found', `id: tenant "${id}" does not exist`, { field: 'id' });
      return tenantToPb(t);
    }),

    listTenants: unary(deps, 'ListTenants', ['admin'], async (req) => {
      const page = await directory.listTenants(parsePageSize(req.pageSize), decodePageToken(req.pageToken));
      return { tenants: page.tenants.map(tenantToPb), nextPageToken: page.lastKey ? encodePageToken(page.lastKey) : '' };
    }),

    updateTenant: unary(deps, 'UpdateTenant', ['admin'], async (req, ctx) => {
      const id = parseTenantId(req.id, 'id');
      const patch = settingsFromPb(req.settings);
      const t = await directory.updateTenant(id, patch, parseExpectedRevision(req.expectedRevision), auditContext(ctx.principal, undefined, ctx.signal));
      return tenantToPb(t);
    }),

    deleteTenant: unary(deps, 'DeleteTenant', ['admin'], async (req, ctx) => {
      const id = parseTenantId(req.id, 'id');
      const r = await directory.deleteTenant(id, req.force, parseExpectedRevision(req.expectedRevision), auditContext(ctx.principal, undefined, ctx.signal), req.dryRun === true);
      if (!req.dryRun) ctx.log.info({ tenant: id, force: req.force }, 'tenant deleted');
      return { mailboxes: r.mailboxes, groups: r.groups, domains: [...r.domains], revision: r.revision };
    }),

    // Login domains route logins across the cluster: admin only.
    addTenantDomain: unary(deps, 'AddTenantDomain', ['admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const domain = parseDomain(req.domain);
      const t = await directory.addDomain(tenant, domain, auditContext(ctx.principal, undefined, ctx.signal));
      ctx.log.info({ tenant, domain }, 'login domain added');
      return tenantToPb(t);
    }),

    removeTenantDomain: unary(deps, 'RemoveTenantDomain', ['admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const domain = parseDomain(req.domain);
      const t = await directory.removeDomain(tenant, domain, auditContext(ctx.principal, undefined, ctx.signal));
      ctx.log.info({ tenant, domain }, 'login domain removed');
      return tenantToPb(t);
    }),

    setGroupMembers: unary(deps, 'SetGroupMembers', ADMINS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const name = parseGroupName(req.name, 'name');
      const list = members(req.members);
      requireTenantRole(ctx.principal.role, tenant, ADMINS);
      await requireDomainlessUsers(directory, tenant, list.map((id, i) => ({ id, field: `members[${i}]` })));
      const g = await directory.changeGroup(tenant, name, () => list, {
        expectedRevision: parseExpectedRevision(req.expectedRevision),
        create: true,
        action: 'SetGroupMembers',
        ctx: auditContext(ctx.principal, undefined, ctx.signal),
        dryRun: req.dryRun === true,
      });
      return answer(g, req.dryRun === true);
    }),

    addGroupMember: unary(deps, 'AddGroupMember', ADMINS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const name = parseGroupName(req.name, 'name');
      const named = memberArgs(req.member, req.members);
      requireTenantRole(ctx.principal.role, tenant, ADMINS);
      await requireDomainlessUsers(directory, tenant, named);
      const ids = named.map((m) => m.id);
      const g = await directory.changeGroup(tenant, name, (cur) => [...cur, ...ids.filter((id) => !cur.includes(id))], {
        expectedRevision: parseExpectedRevision(req.expectedRevision),
        create: true,
        action: 'AddGroupMember',
        ctx: auditContext(ctx.principal, undefined, ctx.signal),
        dryRun: req.dryRun === true,
      });
      return answer(g, req.dryRun === true);
    }),

    removeGroupMember: unary(deps, 'RemoveGroupMember', ADMINS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const name = parseGroupName(req.name, 'name');
      const ids = memberArgs(req.member, req.members).map((m) => m.id);
      requireTenantRole(ctx.principal.role, tenant, ADMINS);
      const g = await directory.changeGroup(tenant, name, (cur) => cur.filter((m) => !ids.includes(m)), {
        expectedRevision: parseExpectedRevision(req.expectedRevision),
        create: false,
        action: 'RemoveGroupMember',
        ctx: auditContext(ctx.principal, undefined, ctx.signal),
        dryRun: req.dryRun === true,
      });
      return answer(g, req.dryRun === true);
    }),

    getGroup: unary(deps, 'GetGroup', READERS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const name = parseGroupName(req.name, 'name');
      requireTenantRole(ctx.principal.role, tenant, READERS);
      const g = await directory.getGroup(tenant, name);
      if (!g) {
        if (!(await directory.getTenant(tenant))) throw new DomainError('not_found', `tenant: tenant "${tenant}" does not exist`, { field: 'tenant' });
        throw new DomainError('not_found', `name: group "${name}" does not exist in tenant "${tenant}"`, { field: 'name' });
      }
      return groupToPb(g);
    }),

    listGroups: unary(deps, 'ListGroups', READERS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      requireTenantRole(ctx.principal.role, tenant, READERS);
      const size = parsePageSize(req.pageSize);
      const after = decodePageToken(req.pageToken);
      await requireTenantExists(directory, tenant);
      const page = await directory.listGroups(tenant, size, after);
      return { groups: page.groups.map(groupToPb), nextPageToken: page.lastKey ? encodePageToken(page.lastKey) : '' };
    }),

    deleteGroup: unary(deps, 'DeleteGroup', ADMINS, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const name = parseGroupName(req.name, 'name');
      requireTenantRole(ctx.principal.role, tenant, ADMINS);
      return { revision: await directory.deleteGroup(tenant, name, parseExpectedRevision(req.expectedRevision), auditContext(ctx.principal, undefined, ctx.signal)) };
    }),
  };
}

export async function requireTenantExists(directory: DirectoryStore, tenant: string): Promise<void> {
  if (!(await directory.getTenant(tenant))) {
    throw new DomainError('not_found', `tenant: tenant "${tenant}" does not exist`, { field: 'tenant' });
  }
}

/** `member` and `members` of a GroupMemberRequest: at least one user id, each named by its field, duplicates once. */
function memberArgs(member: string, more: readonly string[]): Array<{ id: string; field: string }> {
  const out: Array<{ id: string; field: string }> = [];
  if (member !== '') out.push({ id: parseUserId(member, 'member'), field: 'member' });
  if (more.length > 1000) throw new DomainError('invalid_argument', `members: at most 1000 in one call (got ${more.length})`, { field: 'members' });
  more.forEach((m, i) => out.push({ id: parseUserId(m, `members[${i}]`), field: `members[${i}]` }));
  if (out.length === 0) throw new DomainError('invalid_argument', 'member: give a member (or members)', { field: 'member' });
  return out.filter((m, i) => out.findIndex((x) => x.id === m.id) === i);
}

/** Most effects a dry run lists. */
const MAX_EFFECTS = 500;

/**
 * What a change of a group's members does: for every member added or
 * removed, on every mailbox whose ACL names the group (positive or
 * negative), the user's effective rights before and after.
 */
async function groupEffects(directory: DirectoryStore, mailboxes: MailboxStore, tenant: string, name: string, before: readonly string[], after: readonly string[]): Promise<GroupChangeEffect[]> {
  const changed = [...new Set([...before.filter((m) => !after.includes(m)), ...after.filter((m) => !before.includes(m))])].sort();
  if (changed.length === 0) return [];
  const key = `group:${name}`;
  const named: MailboxRecord[] = [];
  let afterKey: string | undefined;
  do {
    const page = await mailboxes.list(tenant, undefined, 1000, afterKey);
    named.push(...page.mailboxes.filter((m) => m.acl.has(key) || m.acl.has(`-${key}`)));
    afterKey = page.lastKey;
  } while (afterKey !== undefined);
  const out: GroupChangeEffect[] = [];
  for (const user of changed) {
    const { groups } = await directory.groupsOf(tenant, user);
    const was = new Set(groups);
    const will = new Set(groups);
    if (before.includes(user)) was.add(name);
    else was.delete(name);
    if (after.includes(user)) will.add(name);
    else will.delete(name);
    for (const m of named) {
      const b = effectiveRights(m.acl, { user, groups: was }, m.owner);
      const a = effectiveRights(m.acl, { user, groups: will }, m.owner);
      if (a !== b) out.push({ mailbox: `${m.owner}/${m.name}`, user, before: rightsToPb(b), after: rightsToPb(a) });
    }
  }
  out.sort((x, y) => (x.mailbox < y.mailbox ? -1 : x.mailbox > y.mailbox ? 1 : x.user < y.user ? -1 : 1));
  return out.length > MAX_EFFECTS ? [...out.slice(0, MAX_EFFECTS), { mailbox: `(${out.length - MAX_EFFECTS} more)`, user: '', before: '', after: '' }] : out;
}
