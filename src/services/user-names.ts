import { invalidArgument } from '../domain/errors.js';
import { printable } from '../domain/ids.js';
import type { DirectoryStore } from '../store/directory-store.js';

/**
 * In a tenant with login domains, users are named without the domain
 * (alice@acme.test logs in as user alice of the tenant owning acme.test), so
 * a user id holding "@" would name nobody who can log in: it is refused
 * wherever a user is written (ACL entries, group members, mailbox owners).
 * Read only when an id has an "@" (one tenant read).
 */
export async function requireDomainlessUsers(directory: DirectoryStore, tenant: string, users: ReadonlyArray<{ id: string; field: string }>): Promise<void> {
  const withAt = users.find((u) => u.id.includes('@'));
  if (!withAt) return;
  const t = await directory.getTenant(tenant);
  if (!t || t.domains.length === 0) return;
  const local = withAt.id.slice(0, withAt.id.lastIndexOf('@'));
  throw invalidArgument(withAt.field, `"${printable(withAt.id)}": tenant "${tenant}" has login domains, so its users are named without one (e.g. "${printable(local)}")`);
}
