import { DomainError } from '../domain/errors.js';
import { type Role, type RoleKind, authorize, formatRole } from '../domain/role.js';
import type { AuditContext } from '../store/audit-store.js';
import type { Principal } from './auth.js';

/**
 * Tenant-scoped authorization: admins everywhere, tenant admins in their own
 * tenant, nodes where `allowNode` says so. Checked before any read, so a
 * caller outside a tenant learns nothing about what it contains.
 */
export function requireTenantRole(role: Role, tenant: string, allowed: readonly RoleKind[]): void {
  authorize(role, { roles: allowed, tenant });
}

/** A node always acts for a user: it must name one. */
export function requireActorForNode(role: Role, actor: string | undefined): void {
  if (role.kind === 'node' && actor === undefined) {
    throw new DomainError('permission_denied', 'actor: a node must name the user it acts for', { field: 'actor' });
  }
}

export function auditContext(p: Principal, actor: string | undefined, signal?: AbortSignal): AuditContext {
  return { who: `${formatRole(p.role)} (token ${p.tokenId})`, actor: actor ?? '', ...(signal ? { signal } : {}) };
}
