import { DomainError, invalidArgument } from './errors.js';
import { TENANT_ID_PATTERN, parseTenantId, printable } from './ids.js';

/**
 * The role a bearer token carries.
 * - admin: everything, cluster-wide.
 * - tenant-admin: administration inside one tenant only.
 * - node: one IMAP backend (agent or gateway), bound to its node name and,
 *   optionally, to the tenants it serves; it acts for the users of those
 *   tenants who log in through it. Written `node:<name>` (every tenant) or
 *   `node:<name>:<tenant>,<tenant>…`. A bare `node` is refused: a node
 *   token that could speak for any node could register any name at any
 *   address, and collect the passwords gateways send there.
 * - proxy: a Dovecot proxy asking where users live (the coordinator's
 *   /v1/route endpoint); it may do nothing else.
 */
export type Role =
  | { readonly kind: 'admin' }
  | { readonly kind: 'tenant-admin'; readonly tenant: string }
  | { readonly kind: 'node'; readonly node: string; readonly tenants?: readonly string[] }
  | { readonly kind: 'proxy' };

export type RoleKind = Role['kind'];

export function parseRole(value: string, field = 'role'): Role {
  if (value === 'admin') return { kind: 'admin' };
  if (value === 'proxy') return { kind: 'proxy' };
  if (value === 'node') throw invalidArgument(field, 'a node token names its node: node:<name> (mailshare token create --role node --node <name>)');
  if (value.startsWith('node:')) {
    const [name = '', tenants, ...extra] = value.slice('node:'.length).split(':');
    if (!TENANT_ID_PATTERN.test(name) || extra.length > 0) throw invalidArgument(field, `"${printable(value)}" is not node:<name>[:<tenant>,…] (a node name is 1-63 of a-z 0-9 . _ -)`);
    if (tenants === undefined) return { kind: 'node', node: name };
    const list = [...new Set(tenants.split(',').map((t) => parseTenantId(t, field)))].sort();
    return { kind: 'node', node: name, tenants: list };
  }
  if (value.startsWith('tenant-admin:')) {
    return { kind: 'tenant-admin', tenant: parseTenantId(value.slice('tenant-admin:'.length), field) };
  }
  throw invalidArgument(field, `unknown role "${printable(value)}" (expected admin, node:<name>[:<tenant>,…], tenant-admin:<tenant> or proxy)`);
}

export function formatRole(role: Role): string {
  switch (role.kind) {
    case 'admin':
      return 'admin';
    case 'tenant-admin':
      return `tenant-admin:${role.tenant}`;
    case 'node':
      return `node:${role.node}${role.tenants ? `:${role.tenants.join(',')}` : ''}`;
    case 'proxy':
      return 'proxy';
  }
}

/**
 * What a method demands of the caller. `tenant` applies to tenant-admin
 * callers (their own tenant only) and to node callers bound to tenants;
 * `node` to node callers (their own node only).
 */
export interface Requirement {
  readonly roles: readonly RoleKind[];
  readonly tenant?: string;
  readonly node?: string;
}

/** Throws permission_denied unless `role` satisfies `req`. */
export function authorize(role: Role, req: Requirement): void {
  if (!req.roles.includes(role.kind)) {
    throw new DomainError(
      'permission_denied',
      `role ${formatRole(role)} may not do this (needs ${req.roles.join(' or ')})`,
    );
  }
  if (req.tenant !== undefined && !servesTenant(role, req.tenant)) {
    throw new DomainError('permission_denied', `role ${formatRole(role)} may not act in tenant ${req.tenant}`);
  }
  if (req.node !== undefined && role.kind === 'node' && role.node !== req.node) {
    throw new DomainError('permission_denied', `role ${formatRole(role)} may act only for node ${role.node}, not ${req.node}`);
  }
}

/** Whether the role may act in the tenant (admins anywhere). */
export function servesTenant(role: Role, tenant: string): boolean {
  if (role.kind === 'tenant-admin') return role.tenant === tenant;
  if (role.kind === 'node') return role.tenants === undefined || role.tenants.includes(tenant);
  return true;
}
