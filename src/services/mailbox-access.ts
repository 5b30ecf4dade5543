import { effectiveRights } from '../domain/acl.js';
import { DomainError } from '../domain/errors.js';
import { type Rights, formatRights, hasAll, hasAny, parseRights } from '../domain/rights.js';
import type { DirectoryStore } from '../store/directory-store.js';
import { type MailboxRecord, mailboxNotFound } from '../store/mailbox-store.js';

/** Rights that reveal a mailbox exists (RFC 4314 §3.5 MYRIGHTS, §6). */
export const REVEALING = parseRights('lrikxa');

export async function rightsOf(directory: DirectoryStore, m: MailboxRecord, user: string): Promise<Rights> {
  const { groups } = await directory.groupsOf(m.tenant, user);
  return effectiveRights(m.acl, { user, groups }, m.owner);
}

/**
 * What an actor may do to a mailbox: with none of the revealing rights the
 * mailbox does not exist for them (NOT_FOUND, RFC 4314 §6); otherwise a
 * missing right is PERMISSION_DENIED naming it.
 */
export async function requireActorRights(directory: DirectoryStore, m: MailboxRecord, actor: string, need: Rights, what: string): Promise<Rights> {
  const rights = await rightsOf(directory, m, actor);
  if (!hasAny(rights, REVEALING)) throw mailboxNotFound(m.tenant, m.owner, m.name);
  if (!hasAll(rights, need)) {
    throw new DomainError('permission_denied', `actor: ${actor} needs the "${formatRights(need)}" right on ${m.owner}/${m.name} to ${what}`, { field: 'actor' });
  }
  return rights;
}
