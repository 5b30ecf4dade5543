import { DomainError } from '../domain/errors.js';
import { parseTenantId, parseUserId } from '../domain/ids.js';
import { parentsOf, parseMailboxName, parseMailboxRef } from '../domain/mailbox-name.js';
import { decodePageToken, encodePageToken, parsePageSize } from '../domain/paging.js';
import { parseRights } from '../domain/rights.js';
import type { MailboxServiceServer } from '../gen/mailshare/v1/mailbox.js';
import type { DirectoryStore } from '../store/directory-store.js';
import type { IndexChecker } from '../store/index-check.js';
import type { MailboxStore } from '../store/mailbox-store.js';
import { auditContext, requireActorForNode, requireTenantRole } from './access.js';
import { mailboxToPb, parseExpectedRevision, rightsToPb } from './convert.js';
import { requireTenantExists } from './directory-service.js';
import { requireActorRights } from './mailbox-access.js';
import { rightsDiffs } from './rights-diff.js';
import { type CallContext, type RpcDeps, unary } from './rpc.js';
import { requireDomainlessUsers } from './user-names.js';

export interface MailboxServiceDeps extends RpcDeps {
  readonly directory: DirectoryStore;
  readonly mailboxes: MailboxStore;
  readonly index: IndexChecker;
}

const ROLES = ['admin', 'tenant-admin', 'node'] as const;

export function optionalUser(value: string, field: string): string | undefined {
  return value === '' ? undefined : parseUserId(value, field);
}

export function createMailboxService(deps: MailboxServiceDeps): MailboxServiceServer {
  const { directory, mailboxes } = deps;

  /** RENAME and DELETE (RFC 4314 §4): an actor needs "x" on the mailbox. */
  const authorizeRemoval = async (
    ctx: CallContext,
    req: { tenant: string; mailbox: string; expectedRevision: number; actor: string },
    what: string,
  ) => {
    const tenant = parseTenantId(req.tenant);
    const ref = parseMailboxRef(req.mailbox);
    const expected = parseExpectedRevision(req.expectedRevision);
    const actor = optionalUser(req.actor, 'actor');
    requireTenantRole(ctx.principal.role, tenant, ROLES);
    requireActorForNode(ctx.principal.role, actor);
    if (actor !== undefined) {
      const m = await mailboxes.require(tenant, ref.owner, ref.name);
      await requireActorRights(directory, m, actor, parseRights('x'), what);
    }
    return { tenant, ref, expected, actor };
  };

  return {
    createMailbox: unary(deps, 'CreateMailbox', ROLES, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const owner = parseUserId(req.owner, 'owner');
      const name = parseMailboxName(req.name, 'name');
      const actor = optionalUser(req.actor, 'actor');
      requireTenantRole(ctx.principal.role, tenant, ROLES);
      await requireDomainlessUsers(directory, tenant, [{ id: owner, field: 'owner' }]);
      requireActorForNode(ctx.principal.role, actor);
      if (actor !== undefined && actor !== owner) {
        // RFC 4314 §4: CREATE needs "k" on the nearest existing parent.
        let parent;
        for (const p of parentsOf(name)) if ((parent = await mailboxes.get(tenant, owner, p))) break;
        if (!parent) throw new DomainError('permission_denied', `actor: ${actor} may only create mailboxes of its own or below one it holds "k" on`, { field: 'actor' });
        await requireActorRights(directory, parent, actor, parseRights('k'), 'create mailboxes below it');
      }
      const m = await mailboxes.create(tenant, owner, name, auditContext(ctx.principal, actor, ctx.signal), req.dryRun === true);
      ctx.log.info({ tenant, mailbox: `${owner}/${name}` }, 'mailbox created');
      return mailboxToPb(m);
    }),

    getMailbox: unary(deps, 'GetMailbox', ROLES, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const ref = parseMailboxRef(req.mailbox);
      const actor = optionalUser(req.actor, 'actor');
      // Reading needs no actor: nodes cache mailboxes and ACLs for all their users.
      requireTenantRole(ctx.principal.role, tenant, ROLES);
      const m = await mailboxes.require(tenant, ref.owner, ref.name);
      if (actor !== undefined) await requireActorRights(directory, m, actor, parseRights(''), 'see it');
      return mailboxToPb(m);
    }),

    listMailboxes: unary(deps, 'ListMailboxes', ROLES, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const owner = optionalUser(req.owner, 'owner');
      const size = parsePageSize(req.pageSize);
      const after = decodePageToken(req.pageToken);
      requireTenantRole(ctx.principal.role, tenant, ROLES);
      await requireTenantExists(directory, tenant);
      const page = await mailboxes.list(tenant, owner, size, after);
      return { mailboxes: page.mailboxes.map(mailboxToPb), nextPageToken: page.lastKey ? encodePageToken(page.lastKey) : '' };
    }),

    renameMailbox: unary(deps, 'RenameMailbox', ROLES, async (req, ctx) => {
      const newName = parseMailboxName(req.newName, 'new_name');
      const { tenant, ref, expected, actor } = await authorizeRemoval(ctx, req, 'rename it');
      const renamed = await mailboxes.rename(tenant, ref.owner, ref.name, newName, expected, auditContext(ctx.principal, actor, ctx.signal), req.dryRun === true);
      return { mailboxes: renamed.map(mailboxToPb) };
    }),

    deleteMailbox: unary(deps, 'DeleteMailbox', ROLES, async (req, ctx) => {
      const { tenant, ref, expected, actor } = await authorizeRemoval(ctx, req, 'delete it');
      const dryRun = req.dryRun === true;
      const r = await mailboxes.delete(tenant, ref.owner, ref.name, expected, auditContext(ctx.principal, actor, ctx.signal), dryRun);
      return { revision: r.revision, changes: dryRun ? await rightsDiffs(directory, tenant, ref.owner, r.before.acl, new Map()) : [] };
    }),

    listSharedWith: unary(deps, 'ListSharedWith', ROLES, async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      const size = parsePageSize(req.pageSize);
      const after = decodePageToken(req.pageToken);
      if (after !== undefined && !/^[^/]+\/.+/.test(after)) {
        throw new DomainError('invalid_argument', 'page_token: is not a token from a previous page', { field: 'page_token' });
      }
      requireTenantRole(ctx.principal.role, tenant, ROLES);
      const res = await mailboxes.sharedWith(tenant, user, size, after);
      return {
        mailboxes: res.items.map(({ record, rights }) => ({
          mailbox: `${record.owner}/${record.name}`,
          owner: record.owner,
          name: record.name,
          id: record.id,
          rights: rightsToPb(rights),
        })),
        nextPageToken: res.lastRef ? encodePageToken(res.lastRef) : '',
        revision: res.revision,
      };
    }),

    checkIndex: unary(deps, 'CheckIndex', ['admin', 'tenant-admin'], async (req, ctx) => {
      let tenants: string[];
      const role = ctx.principal.role;
      // A tenant admin without a tenant: its own.
      if (req.tenant === '' && role.kind === 'tenant-admin') tenants = [role.tenant];
      else if (req.tenant !== '') {
        const tenant = parseTenantId(req.tenant);
        requireTenantRole(ctx.principal.role, tenant, ['admin', 'tenant-admin']);
        await directory.requireTenant(tenant);
        tenants = [tenant];
      } else {
        tenants = [];
        let after: string | undefined;
        do {
          const page = await directory.listTenants(1000, after);
          tenants.push(...page.tenants.map((t) => t.id));
          after = page.lastKey;
        } while (after !== undefined);
      }
      const reports = [];
      for (const tenant of tenants) reports.push(await deps.index.check(tenant, { repair: req.repair, ctx: auditContext(ctx.principal, undefined, ctx.signal) }));
      return { tenants: reports };
    }),
  };
}

