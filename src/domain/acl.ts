import {
  type Identifier,
  type Principal,
  formatIdentifier,
  parseIdentifier,
} from './identifier.js';
import {
  A,
  ALL_RIGHTS,
  CREATE_MEMBERS,
  DELETE_MEMBERS,
  L,
  NO_RIGHTS,
  RIGHT_LETTERS,
  type Rights,
  type RightsChange,
  applyRightsChange,
  difference,
  formatRights,
  union,
} from './rights.js';

/**
 * An access control list: identifier (canonical text, e.g. "bob",
 * "-group:sales") → rights. Entries with no rights do not exist
 * (RFC 4314 §3.1: setting empty rights removes the entry). Immutable.
 */
export type Acl = ReadonlyMap<string, Rights>;

export const EMPTY_ACL: Acl = new Map();

/** The owner's own rights: l and a, always (stated in the README). */
export const OWNER_IMPLICIT = union(L, A);

export function aclFromEntries(entries: Iterable<readonly [string, Rights]>): Acl {
  const m = new Map<string, Rights>();
  for (const [id, r] of entries) if (r !== NO_RIGHTS) m.set(formatIdentifier(parseIdentifier(id)), r);
  return m;
}

/** SETACL (RFC 4314 §3.1): replace, add (+) or remove (-) rights of one identifier. */
export function setAcl(acl: Acl, id: Identifier, change: RightsChange): Acl {
  const key = formatIdentifier(id);
  const next = applyRightsChange(acl.get(key) ?? NO_RIGHTS, change);
  const m = new Map(acl);
  if (next === NO_RIGHTS) m.delete(key);
  else m.set(key, next);
  return m;
}

/** DELETEACL (RFC 4314 §3.2): removes exactly this entry ("fred" leaves "-fred"). */
export function deleteAcl(acl: Acl, id: Identifier): Acl {
  const key = formatIdentifier(id);
  if (!acl.has(key)) return acl;
  const m = new Map(acl);
  m.delete(key);
  return m;
}

/** Entries in a stable order: positive before negative, then by identifier. */
export function aclEntries(acl: Acl): Array<[string, Rights]> {
  return [...acl.entries()].sort(([a], [b]) => {
    const na = a.startsWith('-') ? 1 : 0;
    const nb = b.startsWith('-') ? 1 : 0;
    return na - nb || (a < b ? -1 : a > b ? 1 : 0);
  });
}

export interface Subject {
  /** The logged-in user. */
  readonly user: string;
  /** Groups the user belongs to (names, without "group:"). */
  readonly groups: ReadonlySet<string>;
}

/**
 * Effective rights (RFC 4314 §2, the Cyrus rule mailshare documents): the
 * union of the rights of every positive entry that matches the user, minus
 * the union of every matching negative entry. The mailbox owner always
 * keeps l and a.
 */
export function effectiveRights(acl: Acl, subject: Subject, owner: string): Rights {
  let pos: Rights = NO_RIGHTS;
  let neg: Rights = NO_RIGHTS;
  for (const [key, rights] of acl) {
    if (!covers(key, subject)) continue;
    if (isNegative(key)) neg = union(neg, rights);
    else pos = union(pos, rights);
  }
  return withOwner(difference(pos, neg), subject, owner);
}

/** Why an ACL entry applies to a user. */
export type MatchReason = 'user' | 'group' | 'anyone' | 'authenticated';
/** Why an entry does not: it names someone else, or a group the user is not in. */
export type MissReason = 'other-user' | 'not-in-group';

export interface ExplainedEntry {
  readonly identifier: string;
  readonly rights: Rights;
  readonly negative: boolean;
}

export interface RightsExplanation {
  /** The effective rights (exactly effectiveRights). */
  readonly rights: Rights;
  /** Every entry that covers the user, in ACL order, with why. */
  readonly matched: ReadonlyArray<ExplainedEntry & { readonly reason: MatchReason }>;
  /** The entries that do not, with why not. */
  readonly unmatched: ReadonlyArray<ExplainedEntry & { readonly reason: MissReason }>;
  /** Union of the matched positive entries, and of the negative ones (taken away). */
  readonly granted: Rights;
  readonly denied: Rights;
  /** The user owns the mailbox: l and a are kept whatever the entries say. */
  readonly owner: boolean;
}

/**
 * The effective rights with their reasons, by the same rule chain as
 * effectiveRights (the status page and `acl explain` show this).
 */
export function explainRights(acl: Acl, subject: Subject, owner: string): RightsExplanation {
  const matched: Array<RightsExplanation['matched'][number]> = [];
  const unmatched: Array<RightsExplanation['unmatched'][number]> = [];
  let granted: Rights = NO_RIGHTS;
  let denied: Rights = NO_RIGHTS;
  for (const [key, rights] of aclEntries(acl)) {
    const negative = isNegative(key);
    const bare = negative ? key.slice(1) : key;
    if (!covers(key, subject)) {
      unmatched.push({ identifier: key, rights, negative, reason: bare.startsWith('group:') ? 'not-in-group' : 'other-user' });
      continue;
    }
    const reason: MatchReason = bare === 'anyone' ? 'anyone' : bare === 'authenticated' ? 'authenticated' : bare.startsWith('group:') ? 'group' : 'user';
    matched.push({ identifier: key, rights, negative, reason });
    if (negative) denied = union(denied, rights);
    else granted = union(granted, rights);
  }
  return { rights: withOwner(difference(granted, denied), subject, owner), matched, unmatched, granted, denied, owner: subject.user === owner };
}

/**
 * Whether an ACL key (a formatted identifier, "-" first for negative rights)
 * covers the subject: "anyone", "authenticated", a group the subject is in,
 * or the subject's own id. Read straight from the text, without parsing:
 * this runs for every entry of every rights check.
 */
function covers(key: string, subject: Subject): boolean {
  const at = isNegative(key) ? 1 : 0;
  if (key.startsWith('anyone', at) && key.length === at + 6) return true;
  if (key.startsWith('authenticated', at) && key.length === at + 13) return true;
  if (key.startsWith('group:', at)) return subject.groups.has(key.slice(at + 6));
  return key.length === at + subject.user.length && key.endsWith(subject.user);
}

function isNegative(key: string): boolean {
  return key.charCodeAt(0) === 45; // "-"
}

/** The owner always keeps l and a. */
function withOwner(rights: Rights, subject: Subject, owner: string): Rights {
  return subject.user === owner ? union(rights, OWNER_IMPLICIT) : rights;
}

/**
 * An ACL packed for caches that hold millions of them: formatted identifiers
 * (as the keys of Acl) and their rights alternate in one flat array, a
 * fraction of a Map's size. Identifier strings may be shared between ACLs.
 */
export type PackedAcl = ReadonlyArray<string | Rights>;

export function packAcl(entries: Iterable<readonly [string, Rights]>, intern: (s: string) => string = (s) => s): PackedAcl {
  const list = [...entries];
  // Sized exactly: an array grown by push keeps spare capacity (most of its size at 2-4 items).
  const out = new Array<string | Rights>(list.length * 2);
  for (let i = 0; i < list.length; i++) {
    out[2 * i] = intern(list[i]![0]);
    out[2 * i + 1] = list[i]![1];
  }
  return out;
}

export function* packedEntries(acl: PackedAcl): Generator<[string, Rights]> {
  for (let i = 0; i + 1 < acl.length; i += 2) yield [acl[i] as string, acl[i + 1] as Rights];
}

/** effectiveRights over a packed ACL, allocating nothing per entry (the agent's hot path). */
export function effectivePackedRights(acl: PackedAcl, subject: Subject, owner: string): Rights {
  let pos: Rights = NO_RIGHTS;
  let neg: Rights = NO_RIGHTS;
  for (let i = 0; i + 1 < acl.length; i += 2) {
    const key = acl[i] as string;
    if (!covers(key, subject)) continue;
    if (isNegative(key)) neg = union(neg, acl[i + 1] as Rights);
    else pos = union(pos, acl[i + 1] as Rights);
  }
  return withOwner(difference(pos, neg), subject, owner);
}

/** Groups an ACL refers to (positive or negative entries). */
export function groupsReferenced(acl: Acl): Set<string> {
  const out = new Set<string>();
  for (const key of acl.keys()) {
    const p = parseIdentifier(key).principal;
    if (p.kind === 'group') out.add(p.name);
  }
  return out;
}

/** Users named directly in an ACL (positive or negative entries). */
export function usersReferenced(acl: Acl): Set<string> {
  const out = new Set<string>();
  for (const key of acl.keys()) {
    const p = parseIdentifier(key).principal;
    if (p.kind === 'user') out.add(p.name);
  }
  return out;
}

export interface ListRightsResult {
  /** Rights the identifier always has (RFC 4314 §3.7 "required rights"). */
  readonly required: string;
  /** Each string a set of rights that can be granted together; mailshare ties none. */
  readonly optional: string[];
}

/**
 * LISTRIGHTS (RFC 4314 §3.7, §2.1.1). mailshare ties no rights together, so
 * every grantable right is listed on its own, followed by the virtual "c"
 * and "d" whenever any of their members is grantable. The owner always has
 * l and a. `grantable` narrows what may be granted (e.g. a tenant that
 * forbids sharing with anyone).
 */
export function listRights(principal: Principal, negative: boolean, owner: string, grantable: Rights = ALL_RIGHTS): ListRightsResult {
  const isOwner = !negative && principal.kind === 'user' && principal.name === owner;
  const required = isOwner ? OWNER_IMPLICIT : NO_RIGHTS;
  const optionalBits = difference(grantable, required);
  const optional: string[] = [];
  for (let i = 0; i < RIGHT_LETTERS.length; i++) if (optionalBits & (1 << i)) optional.push(RIGHT_LETTERS[i]!);
  if (optionalBits & CREATE_MEMBERS) optional.push('c');
  if (optionalBits & DELETE_MEMBERS) optional.push('d');
  return { required: formatRights(required), optional };
}

/**
 * The grantees under which a mailbox appears in the "shared with" index:
 * every positive entry holding "l", except the owner's own entry. Negative
 * entries and group membership are applied when the index is read, so a
 * group change never has to rewrite index entries.
 */
export function shareGrantees(acl: Iterable<readonly [string, Rights]>, owner: string): Set<string> {
  const out = new Set<string>();
  for (const [key, rights] of acl) {
    if (key.startsWith('-') || (rights & L) === 0 || key === owner) continue;
    out.add(key);
  }
  return out;
}

/** shareGrantees over a packed ACL, calling `visit` for each, allocating nothing (an agent's snapshot indexes a million). */
export function forEachPackedGrantee(acl: PackedAcl, owner: string, visit: (grantee: string) => void): void {
  for (let i = 0; i + 1 < acl.length; i += 2) {
    const key = acl[i] as string;
    if (key.startsWith('-') || ((acl[i + 1] as Rights) & L) === 0 || key === owner) continue;
    visit(key);
  }
}

/** Number of entries counted against a tenant's max_shares_per_mailbox (all but the owner's own). */
export function shareCount(acl: Acl, owner: string): number {
  return acl.has(owner) ? acl.size - 1 : acl.size;
}
