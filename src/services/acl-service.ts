import { type Acl, listRights, shareCount } from '../domain/acl.js';
import { DomainError } from '../domain/errors.js';
import { type Identifier, formatIdentifier, parseIdentifier } from '../domain/identifier.js';
import { parseTenantId, parseUserId } from '../domain/ids.js';
import { parseMailboxRef } from '../domain/mailbox-name.js';
import { A, ALL_RIGHTS, NO_RIGHTS, type Rights, hasAny, parseRightsChange } from '../domain/rights.js';
import type { AclServiceServer } from '../gen/mailshare/v1/acl.js';
import type { Role } from '../domain/role.js';
import type { DirectoryStore, TenantSettings } from '../store/directory-store.js';
import { type AclChange, type MailboxStore, mailboxNotFound } from '../store/mailbox-store.js';
import { auditContext, requireActorForNode, requireTenantRole } from './access.js';
import { aclToPb, parseExpectedRevision, rightsToPb } from './convert.js';
import { REVEALING, requireActorRights, rightsOf } from './mailbox-access.js';
import { optionalUser } from './mailbox-service.js';
import { type CallContext, type RpcDeps, unary } from './rpc.js';
import { requireDomainlessUsers } from './user-names.js';
import { explainAccess } from './explain.js';
import { rightsDiffs } from './rights-diff.js';
import type { PlacementStore } from '../store/placement-store.js';
import type { TenantCache } from '../store/tenant-cache.js';

export interface AclServiceDeps extends RpcDeps {
  readonly directory: DirectoryStore;
  readonly mailboxes: MailboxStore;
  /** Where owners and users are served (ExplainRights says). */
  readonly placement?: Pick<PlacementStore, 'cachedAssignment'>;
  /** The watch-fed tenants: an ACL write's first attempt starts from the cached tenant (its guard catches a stale one). */
  readonly tenants?: Pick<TenantCache, 'record'>;
}

const ROLES = ['admin', 'tenant-admin', 'node'] as const;

/** Tenant policy checked inside the ACL transaction, against the ACL it would write. */
function tenantPolicy(id: Identifier, owner: string) {
  return (settings: TenantSettings, before: Acl, after: Acl): void => {
    if (!id.negative && id.principal.kind === 'anyone' && !settings.allowAnyone && (after.get('anyone') ?? NO_RIGHTS) !== NO_RIGHTS) {
      throw new DomainError('permission_denied', 'identifier: this tenant does not allow sharing with anyone', { field: 'identifier' });
    }
    const n = shareCount(after, owner);
    if (n > shareCount(before, owner) && n > settings.maxSharesPerMailbox) {
      throw new DomainError('resource_exhausted', `identifier: a mailbox may have at most ${settings.maxSharesPerMailbox} ACL entries in this tenant; use a group`, {
        field: 'identifier',
      });
    }
  };
}

export function createAclService(deps: AclServiceDeps): AclServiceServer {
  const { directory, mailboxes } = deps;

  /** Common prologue: parse, authorize, load, and apply the actor rule (needs "a"). */
  const load = async (role: Role, tenantText: string, mailboxText: string, actorText: string, what: string) => {
    const tenant = parseTenantId(tenantText);
    const ref = parseMailboxRef(mailboxText);
    const actor = optionalUser(actorText, 'actor');
    requireTenantRole(role, tenant, ROLES);
    requireActorForNode(role, actor);
    if (actor === undefined) requireTenantRole(role, tenant, ['admin', 'tenant-admin']);
    const m = await mailboxes.require(tenant, ref.owner, ref.name);
    if (actor !== undefined) await requireActorRights(directory, m, actor, A, what);
    return { tenant, ref, actor, m };
  };

  /** SETACL and DELETEACL: validate, authorize (actor needs "a"), then one guarded transaction. */
  const writeAcl = async (
    ctx: CallContext,
    req: { tenant: string; mailbox: string; actor: string; expectedRevision: number; dryRun?: boolean | undefined },
    change: AclChange,
  ) => {
    const tenant = parseTenantId(req.tenant);
    const ref = parseMailboxRef(req.mailbox);
    const expected = parseExpectedRevision(req.expectedRevision);
    const dryRun = req.dryRun === true;
    // The write's first attempt starts from the mailbox as read here and the tenant as the watch
    // delivered it (read beside the mailbox when not cached): one etcd read before the transaction,
    // whose guards compare both revisions (a stale tenant fails them, and a refusal judged from it
    // is judged again from etcd). A dry run, which has no guard, reads the tenant.
    const cached = dryRun ? undefined : deps.tenants?.record(tenant);
    const [{ actor, m }, t] = await Promise.all([load(ctx.principal.role, req.tenant, req.mailbox, req.actor, 'change its ACL'), cached ?? directory.getTenant(tenant)]);
    const res = await mailboxes.changeAcl(tenant, ref.owner, ref.name, change, expected, auditContext(ctx.principal, actor, ctx.signal), tenantPolicy(change.identifier, ref.owner), dryRun, t ? { tenant: t, record: m } : undefined);
    const ident = formatIdentifier(change.identifier);
    return {
      ...res,
      dry: dryRun ? { before: rightsToPb(res.before.get(ident) ?? NO_RIGHTS), changes: await rightsDiffs(directory, tenant, ref.owner, res.before, res.record.acl) } : { before: '', changes: [] },
    };
  };

  return {
    getAcl: unary(deps, 'GetAcl', ROLES, async (req, ctx) => {
      const { m } = await load(ctx.principal.role, req.tenant, req.mailbox, req.actor, 'read its ACL');
      return { entries: aclToPb(m.acl), revision: m.revision };
    }),

    setAcl: unary(deps, 'SetAcl', ROLES, async (req, ctx) => {
      const identifier = parseIdentifier(req.identifier, 'identifier');
      if (identifier.principal.kind === 'user') await requireDomainlessUsers(directory, parseTenantId(req.tenant), [{ id: identifier.principal.name, field: 'identifier' }]);
      const change = parseRightsChange(req.rights, 'rights');
      const res = await writeAcl(ctx, req, { kind: 'set', identifier, change });
      return { rights: rightsToPb(res.rights), revision: res.record.revision, ...res.dry };
    }),

    replaceAcl: unary(deps, 'ReplaceAcl', ['admin', 'tenant-admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const ref = parseMailboxRef(req.mailbox);
      const expected = parseExpectedRevision(req.expectedRevision);
      requireTenantRole(ctx.principal.role, tenant, ['admin', 'tenant-admin']);
      const acl = new Map<string, Rights>();
      const users: Array<{ id: string; field: string }> = [];
      req.entries.forEach((e, i) => {
        const field = `entries[${i}]`;
        const id = parseIdentifier(e.identifier, `${field}.identifier`);
        const key = formatIdentifier(id);
        if (acl.has(key)) throw new DomainError('invalid_argument', `${field}.identifier: ${key} is given twice`, { field: `${field}.identifier` });
        const change = parseRightsChange(e.rights, `${field}.rights`);
        if (change.mode !== 'replace') throw new DomainError('invalid_argument', `${field}.rights: "${e.rights.slice(0, 20)}" adds or removes; ReplaceAcl takes the rights themselves`, { field: `${field}.rights` });
        if (change.rights === NO_RIGHTS) throw new DomainError('invalid_argument', `${field}.rights: empty; leave the entry out`, { field: `${field}.rights` });
        if (id.principal.kind === 'user') users.push({ id: id.principal.name, field: `${field}.identifier` });
        acl.set(key, change.rights);
      });
      await requireDomainlessUsers(directory, tenant, users);
      const rec = await mailboxes.replaceAcl(tenant, ref.owner, ref.name, acl, expected, auditContext(ctx.principal, undefined, ctx.signal), (settings, before, after) => {
        if (!settings.allowAnyone && (after.get('anyone') ?? NO_RIGHTS) !== NO_RIGHTS && (before.get('anyone') ?? NO_RIGHTS) === NO_RIGHTS) {
          throw new DomainError('permission_denied', 'entries: this tenant does not allow sharing with anyone', { field: 'entries' });
        }
        const n = shareCount(after, ref.owner);
        if (n > shareCount(before, ref.owner) && n > settings.maxSharesPerMailbox) {
          throw new DomainError('resource_exhausted', `entries: a mailbox may have at most ${settings.maxSharesPerMailbox} ACL entries in this tenant; use a group`, { field: 'entries' });
        }
      });
      return { entries: aclToPb(rec.acl), revision: rec.revision };
    }),

    deleteAcl: unary(deps, 'DeleteAcl', ROLES, async (req, ctx) => {
      const identifier = parseIdentifier(req.identifier, 'identifier');
      const res = await writeAcl(ctx, req, { kind: 'delete', identifier });
      return { revision: res.record.revision, ...res.dry };
    }),

    listRights: unary(deps, 'ListRights', ROLES, async (req, ctx) => {
      const identifier = parseIdentifier(req.identifier, 'identifier');
      const { tenant, ref } = await load(ctx.principal.role, req.tenant, req.mailbox, req.actor, 'list rights on it');
      const t = await directory.getTenant(tenant);
      const blocked = !identifier.negative && identifier.principal.kind === 'anyone' && t?.settings.allowAnyone === false;
      const r = listRights(identifier.principal, identifier.negative, ref.owner, blocked ? NO_RIGHTS : ALL_RIGHTS);
      return { identifier: req.identifier, required: r.required, optional: r.optional };
    }),

    myRights: unary(deps, 'MyRights', ROLES, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const ref = parseMailboxRef(req.mailbox);
      const user = parseUserId(req.user, 'user');
      requireTenantRole(ctx.principal.role, tenant, ROLES);
      const m = await mailboxes.require(tenant, ref.owner, ref.name);
      const rights = await rightsOf(directory, m, user);
      // A node answers for a logged-in user: without any revealing right the
      // mailbox does not exist for them (RFC 4314 §6).
      if (ctx.principal.role.kind === 'node' && !hasAny(rights, REVEALING)) throw mailboxNotFound(tenant, ref.owner, ref.name);
      return { rights: rightsToPb(rights), revision: m.revision };
    }),

    explainRights: unary(deps, 'ExplainRights', ['admin', 'tenant-admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const ref = parseMailboxRef(req.mailbox);
      const user = parseUserId(req.user, 'user');
      requireTenantRole(ctx.principal.role, tenant, ['admin', 'tenant-admin']);
      const t = await directory.requireTenant(tenant);
      const m = await mailboxes.require(tenant, ref.owner, ref.name);
      const { groups } = await directory.groupsOf(tenant, user);
      return explainAccess(m, { user, groups, settings: t.settings, placement: deps.placement });
    }),
  };
}

