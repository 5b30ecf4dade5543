import { DomainError, invalidArgument } from './errors.js';
import { parseTenantId, printable } from './ids.js';

/**
 * The role a bearer token carries.
 * - admin: everything, cluster-wide.
 * - tenant-admin: administration inside one tenant only.
 * - node: an IMAP backend (agent or gateway) acting for the users it serves.
 */
export type Role =
  | { readonly kind: 'admin' }
  | { readonly kind: 'tenant-admin'; readonly tenant: string }
  | { readonly kind: 'node' };

export type RoleKind = Role['kind'];

export function parseRole(value: string, field = 'role'): Role {
  if (value === 'admin') return { kind: 'admin' };
  if (value === 'node') return { kind: 'node' };
  if (value.startsWith('tenant-admin:')) {
    return { kind: 'tenant-admin', tenant: parseTenantId(value.slice('tenant-admin:'.length), field) };
  }
  throw invalidArgument(field, `unknown role "${printable(value)}" (expected admin, node or tenant-admin:<tenant>)`);
}

export function formatRole(role: Role): string {
  return role.kind === 'tenant-admin' ? `tenant-admin:${role.tenant}` : role.kind;
}

/**
 * What a method demands of the caller. `tenant` applies to tenant-admin
 * callers: they pass only when the call stays inside their own tenant.
 */
export interface Requirement {
  readonly roles: readonly RoleKind[];
  readonly tenant?: string;
}

/** Throws permission_denied unless `role` satisfies `req`. */
export function authorize(role: Role, req: Requirement): void {
  if (!req.roles.includes(role.kind)) {
    throw new DomainError(
      'permission_denied',
      `role ${formatRole(role)} may not do this (needs ${req.roles.join(' or ')})`,
    );
  }
  if (role.kind === 'tenant-admin' && req.tenant !== undefined && req.tenant !== role.tenant) {
    throw new DomainError('permission_denied', `role ${formatRole(role)} may not act in tenant ${req.tenant}`);
  }
}
