import { type RightsExplanation, explainRights, shareCount } from '../domain/acl.js';
import { hasAny, hasAll, formatRights, L } from '../domain/rights.js';
import type { ExplainRightsResponse } from '../gen/mailshare/v1/acl.js';
import type { TenantSettings } from '../store/directory-store.js';
import type { MailboxRecord } from '../store/mailbox-store.js';
import type { PlacementStore } from '../store/placement-store.js';
import { REVEALING } from './mailbox-access.js';

/** What an explanation needs besides the mailbox: the user's groups, the tenant's settings, where users are. */
export interface ExplainContext {
  readonly user: string;
  readonly groups: ReadonlySet<string>;
  readonly settings: TenantSettings;
  readonly placement?: Pick<PlacementStore, 'cachedAssignment'>;
}

/**
 * A user's rights on a mailbox and why, by the rule chain every rights
 * check uses (domain explainRights): `acl explain` (ExplainRights) and the
 * status page's lookup both answer from this.
 */
export function explainAccess(m: MailboxRecord, ctx: ExplainContext): ExplainRightsResponse {
  const e: RightsExplanation = explainRights(m.acl, { user: ctx.user, groups: ctx.groups }, m.owner);
  const entries = [
    ...e.matched.map((x) => ({ identifier: x.identifier, rights: formatRights(x.rights), negative: x.negative, applies: true, reason: x.reason })),
    ...e.unmatched.map((x) => ({ identifier: x.identifier, rights: formatRights(x.rights), negative: x.negative, applies: false, reason: x.reason })),
  ].sort((a, b) => Number(a.negative) - Number(b.negative) || (a.identifier < b.identifier ? -1 : a.identifier > b.identifier ? 1 : 0));
  const rules = [
    'the rights of every entry that applies are added up, then the rights of every negative entry that applies are taken away (RFC 4314 §2); an entry applies when it names the user, a group the user is in, anyone, or authenticated',
  ];
  if (e.owner) rules.push(`${ctx.user} owns the mailbox: l and a are kept whatever the entries say`);
  if (!ctx.settings.allowAnyone) rules.push('this tenant allows no new "anyone" entries (an existing one still applies)');
  rules.push(`this tenant allows ${ctx.settings.maxSharesPerMailbox} entries besides the owner's; this mailbox has ${shareCount(m.acl, m.owner)}`);
  const exists = hasAny(e.rights, REVEALING);
  if (!exists) rules.push(`with none of l r i k x a the mailbox does not exist for ${ctx.user} (RFC 4314 §6)`);
  else if (!hasAll(e.rights, L)) rules.push(`without l the mailbox is not listed for ${ctx.user}, but may be selected by name`);
  const ownerAt = ctx.placement?.cachedAssignment(m.tenant, m.owner);
  const userAt = ctx.placement?.cachedAssignment(m.tenant, ctx.user);
  return {
    rights: formatRights(e.rights),
    entries,
    granted: formatRights(e.granted),
    denied: formatRights(e.denied),
    owner: e.owner,
    listed: hasAll(e.rights, L),
    exists,
    groups: [...ctx.groups].sort(),
    rules,
    ownerNode: ownerAt?.node ?? '',
    ownerEpoch: ownerAt?.epoch ?? 0,
    userNode: userAt?.node ?? '',
    revision: m.revision,
  };
}
