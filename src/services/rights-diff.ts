import { type Acl, effectiveRights, groupsReferenced, usersReferenced } from '../domain/acl.js';
import type { DirectoryStore } from '../store/directory-store.js';
import { rightsToPb } from './convert.js';

/** Most users a dry run lists (a group of thousands would drown the answer). */
const MAX_DIFFS = 500;

/**
 * Whose effective rights differ between two ACLs of a mailbox: the owner,
 * every user either names, every member of a group either names, and
 * "anyone else" (users reached only by anyone or authenticated).
 */
export async function rightsDiffs(directory: DirectoryStore, tenant: string, owner: string, before: Acl, after: Acl): Promise<Array<{ who: string; before: string; after: string }>> {
  const users = new Set<string>([owner]);
  const groups = new Map<string, readonly string[]>();
  for (const acl of [before, after]) {
    for (const u of usersReferenced(acl)) users.add(u);
    for (const g of groupsReferenced(acl)) if (!groups.has(g)) groups.set(g, (await directory.getGroup(tenant, g))?.members ?? []);
  }
  for (const members of groups.values()) for (const m of members) users.add(m);
  const out: Array<{ who: string; before: string; after: string }> = [];
  const subject = (user: string) => ({ user, groups: new Set([...groups].filter(([, ms]) => ms.includes(user)).map(([g]) => g)) });
  for (const user of [...users].sort()) {
    const s = subject(user);
    const b = effectiveRights(before, s, owner);
    const a = effectiveRights(after, s, owner);
    if (a !== b) out.push({ who: user, before: rightsToPb(b), after: rightsToPb(a) });
  }
  const other = { user: '\0anyone-else', groups: new Set<string>() };
  const ob = effectiveRights(before, other, owner);
  const oa = effectiveRights(after, other, owner);
  if (oa !== ob) out.push({ who: 'anyone else', before: rightsToPb(ob), after: rightsToPb(oa) });
  return out.length > MAX_DIFFS ? [...out.slice(0, MAX_DIFFS), { who: `(${out.length - MAX_DIFFS} more users)`, before: '', after: '' }] : out;
}
