import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DomainError } from '../../src/domain/errors.js';
import { authorize, formatRole, parseRole } from '../../src/domain/role.js';
import { TENANT_ID_PATTERN } from '../../src/domain/ids.js';

describe('roles', () => {
  it('parses the four role kinds and formats them back', () => {
    expect(parseRole('admin')).toEqual({ kind: 'admin' });
    expect(parseRole('proxy')).toEqual({ kind: 'proxy' });
    expect(parseRole('node:n1')).toEqual({ kind: 'node', node: 'n1' });
    expect(parseRole('node:n1:beta,acme,acme')).toEqual({ kind: 'node', node: 'n1', tenants: ['acme', 'beta'] });
    expect(parseRole('tenant-admin:acme')).toEqual({ kind: 'tenant-admin', tenant: 'acme' });
    for (const r of ['admin', 'proxy', 'node:n1', 'node:imap-1.a:acme,beta', 'tenant-admin:acme', 'tenant-admin:a.b_c-1']) expect(formatRole(parseRole(r))).toBe(r);
  });

  it.each(['', 'Admin', 'root', 'tenant-admin:', 'tenant-admin:ACME', 'tenant-admin:a/b', 'tenant-admin:-x', 'node ', 'node', 'node:', 'node:N1', 'node:n1:', 'node:n1:acme:x', 'node:n1:ac/me'])(
    'rejects %j naming the field',
    (bad) => {
      const err = (() => {
        try {
          parseRole(bad, 'role');
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(DomainError);
      expect((err as DomainError).code).toBe('invalid_argument');
      expect((err as DomainError).field).toBe('role');
    },
  );

  it('round-trips every valid tenant id', () => {
    fc.assert(
      fc.property(fc.stringMatching(TENANT_ID_PATTERN), (tenant) => {
        expect(formatRole(parseRole(`tenant-admin:${tenant}`))).toBe(`tenant-admin:${tenant}`);
      }),
    );
  });

  it('authorizes by role kind and keeps tenant admins inside their tenant', () => {
    const admin = parseRole('admin');
    const ta = parseRole('tenant-admin:acme');
    const node = parseRole('node:n1:acme');
    const anyTenantNode = parseRole('node:n2');
    expect(() => authorize(admin, { roles: ['admin'] })).not.toThrow();
    expect(() => authorize(node, { roles: ['admin'] })).toThrow(/may not/);
    expect(() => authorize(ta, { roles: ['admin', 'tenant-admin'], tenant: 'acme' })).not.toThrow();
    expect(() => authorize(ta, { roles: ['admin', 'tenant-admin'], tenant: 'other' })).toThrow(/tenant other/);
    expect(() => authorize(admin, { roles: ['admin', 'tenant-admin'], tenant: 'other' })).not.toThrow();
    // A node token acts only for its own node, and only in its tenants when it names them.
    expect(() => authorize(node, { roles: ['node'], node: 'n1', tenant: 'acme' })).not.toThrow();
    expect(() => authorize(node, { roles: ['node'], node: 'n2' })).toThrow(/only for node n1/);
    expect(() => authorize(node, { roles: ['node'], tenant: 'other' })).toThrow(/tenant other/);
    expect(() => authorize(anyTenantNode, { roles: ['node'], node: 'n2', tenant: 'other' })).not.toThrow();
    // A proxy token passes nothing that does not name it.
    expect(() => authorize(parseRole('proxy'), { roles: ['admin', 'tenant-admin', 'node'] })).toThrow(/role proxy may not/);
    try {
      authorize(node, { roles: ['admin'] });
    } catch (e) {
      expect((e as DomainError).code).toBe('permission_denied');
    }
  });
});
