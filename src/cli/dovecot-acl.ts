import { ALL_RIGHTS, type Rights, NO_RIGHTS, parseRights } from '../domain/rights.js';

/**
 * Dovecot's ACL files (the acl plugin's "vfile" backend): one
 * `dovecot-acl` file per mailbox directory, lines `IDENTIFIER RIGHTS`
 * (`-IDENTIFIER` for negative rights), identifiers `owner`, `user=NAME`,
 * `group=NAME`, `group-override=NAME`, `authenticated`, `anyone` (or
 * `anonymous`), rights as IMAP letters, optionally followed by
 * `:named-rights` Dovecot keeps for plugins. Pure functions: reading and
 * writing the files is the commands' work.
 */

/** Dovecot's identifier kinds, in its override order (each later kind's entries apply after the earlier ones'). */
export const DOVECOT_KINDS = ['anyone', 'authenticated', 'group', 'owner', 'user', 'group-override'] as const;
export type DovecotKind = (typeof DOVECOT_KINDS)[number];

export interface DovecotEntry {
  readonly kind: DovecotKind;
  /** The user or group name (user, group, group-override). */
  readonly name?: string;
  readonly negative: boolean;
  readonly rights: Rights;
  /** Named (non-IMAP) rights after ":", which have no RFC 4314 equivalent. */
  readonly named: readonly string[];
}

/** Dovecot's order of IMAP letters in the files it writes. */
const DOVECOT_LETTERS = 'lrwstipekxa';

function parseIdentifier(text: string): { kind: DovecotKind; name?: string } | undefined {
  if (text === 'anyone' || text === 'anonymous') return { kind: 'anyone' };
  if (text === 'authenticated') return { kind: 'authenticated' };
  if (text === 'owner') return { kind: 'owner' };
  for (const kind of ['user', 'group', 'group-override'] as const) {
    if (text.startsWith(`${kind}=`)) return { kind, name: text.slice(kind.length + 1) };
  }
  return undefined;
}

/** A quoted identifier (`"user=a b"`, backslash escapes), or up to the first space. */
function splitIdentifier(line: string): { id: string; rest: string } | undefined {
  if (!line.startsWith('"')) {
    const sp = line.indexOf(' ');
    return sp < 0 ? { id: line, rest: '' } : { id: line.slice(0, sp), rest: line.slice(sp + 1) };
  }
  let id = '';
  for (let i = 1; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) id += line[++i];
    else if (c === '"') return { id, rest: line.slice(i + 1).replace(/^ /, '') };
    else id += c;
  }
  return undefined;
}

/** One line of a dovecot-acl file (the identifier may be quoted); a reason when it cannot be read. */
export function parseDovecotAclLine(line: string): DovecotEntry | string {
  const split = splitIdentifier(line);
  if (!split) return 'unterminated quoted identifier';
  let { id } = split;
  const negative = id.startsWith('-');
  if (negative) id = id.slice(1);
  const ident = parseIdentifier(id);
  if (!ident) return `unknown identifier "${id}"`;
  const rest = split.rest.trim();
  const colon = rest.indexOf(':');
  const letters = (colon < 0 ? rest : rest.slice(0, colon)).trim();
  const named = colon < 0 ? [] : rest.slice(colon + 1).split(/[\s,]+/).filter((n) => n !== '');
  for (const ch of letters) if (!DOVECOT_LETTERS.includes(ch)) return `unknown right "${ch}"`;
  return { ...ident, negative, rights: letters === '' ? NO_RIGHTS : parseRights(letters), named };
}

/** A whole file: its entries, and the lines it could not read (1-based line numbers). */
export function parseDovecotAclFile(text: string): { entries: DovecotEntry[]; errors: Array<{ line: number; why: string }> } {
  const entries: DovecotEntry[] = [];
  const errors: Array<{ line: number; why: string }> = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const e = parseDovecotAclLine(line);
    if (typeof e === 'string') errors.push({ line: i + 1, why: e });
    else entries.push(e);
  });
  return { entries, errors };
}

/** Dovecot's global ACL file: lines `MAILBOX-PATTERN IDENTIFIER RIGHTS` (`*` and `?` wildcards; the pattern may be quoted). */
export function parseGlobalAclFile(text: string): { rules: Array<{ pattern: RegExp; source: string; entry: DovecotEntry }>; errors: Array<{ line: number; why: string }> } {
  const rules: Array<{ pattern: RegExp; source: string; entry: DovecotEntry }> = [];
  const errors: Array<{ line: number; why: string }> = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const split = splitIdentifier(line);
    if (!split || split.rest === '') return errors.push({ line: i + 1, why: 'expected MAILBOX-PATTERN IDENTIFIER RIGHTS' });
    const e = parseDovecotAclLine(split.rest);
    if (typeof e === 'string') return errors.push({ line: i + 1, why: e });
    const re = new RegExp(`^${split.id.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    rules.push({ pattern: re, source: split.id, entry: e });
  });
  return { rules, errors };
}

/** How an entry is written in a dovecot-acl file (Dovecot's letter order). */
export function formatDovecotEntry(e: DovecotEntry): string {
  const id = e.kind === 'user' || e.kind === 'group' || e.kind === 'group-override' ? `${e.kind}=${e.name}` : e.kind;
  let letters = '';
  for (const ch of DOVECOT_LETTERS) if (e.rights & parseRights(ch)) letters += ch;
  const full = `${e.negative ? '-' : ''}${id}`;
  // Quoted whole, the "-" inside (how Dovecot reads a quoted identifier).
  const quoted = /[\s"\\]/.test(full) ? `"${full.replace(/["\\]/g, '\\$&')}"` : full;
  return `${quoted} ${letters}${e.named.length ? ` :${e.named.join(' ')}` : ''}`.trimEnd();
}

/** A file Dovecot would write: entries sorted in its order (kind, then name), positive before negative. */
export function formatDovecotAclFile(entries: readonly DovecotEntry[]): string {
  const sorted = [...entries].sort(
    (a, b) => DOVECOT_KINDS.indexOf(a.kind) - DOVECOT_KINDS.indexOf(b.kind) || ((a.name ?? '') < (b.name ?? '') ? -1 : (a.name ?? '') > (b.name ?? '') ? 1 : 0) || Number(a.negative) - Number(b.negative),
  );
  return sorted.map((e) => `${formatDovecotEntry(e)}\n`).join('');
}

/**
 * A user's rights by Dovecot's rule (its acl_object_rebuild_cache): the
 * entries of each identifier merged (`X` and `-X` lines), taken in
 * override order (anyone, authenticated, group, owner, user,
 * group-override); each identifier that applies *replaces* the positive
 * rights so far when it has any, and separately the negative ones when it
 * has any, except that several matching groups (or group-overrides) add up;
 * the result is the positive rights minus the negative ones. The owner
 * starts from all rights and ignores anyone, authenticated and group
 * entries. (Global entries are taken as the mailbox's own.)
 */
export function dovecotRights(entries: readonly DovecotEntry[], subject: { user: string; groups: ReadonlySet<string>; owner: boolean }): Rights {
  const byId = new Map<string, { kind: DovecotKind; name?: string; rights?: number; neg?: number }>();
  for (const e of entries) {
    const key = `${e.kind}\0${e.name ?? ''}`;
    const x = byId.get(key) ?? { kind: e.kind, ...(e.name !== undefined ? { name: e.name } : {}) };
    if (e.negative) x.neg = (x.neg ?? 0) | e.rights;
    else x.rights = (x.rights ?? 0) | e.rights;
    byId.set(key, x);
  }
  const order = (k: DovecotKind): number => DOVECOT_KINDS.indexOf(k);
  let list = [...byId.values()].sort((a, b) => order(a.kind) - order(b.kind) || ((a.name ?? '') < (b.name ?? '') ? -1 : (a.name ?? '') > (b.name ?? '') ? 1 : 0));
  let mask = 0;
  let neg = 0;
  if (subject.owner) {
    list = list.filter((x) => order(x.kind) >= order('owner'));
    mask = ALL_RIGHTS;
  }
  const applies = (x: { kind: DovecotKind; name?: string }): boolean =>
    x.kind === 'anyone' ||
    x.kind === 'authenticated' ||
    (x.kind === 'owner' && subject.owner) ||
    (x.kind === 'user' && x.name === subject.user) ||
    ((x.kind === 'group' || x.kind === 'group-override') && subject.groups.has(x.name!));
  let prev: DovecotKind | undefined;
  for (const x of list) {
    if (!applies(x)) continue;
    const replace = prev !== x.kind;
    prev = x.kind;
    if (x.rights !== undefined) mask = replace ? x.rights : mask | x.rights;
    if (x.neg !== undefined) neg = replace ? x.neg : neg | x.neg;
  }
  return (mask & ~neg) as Rights;
}

/** Modified UTF-7 (RFC 3501 §5.1.3), as Dovecot stores folder names on disk: to Unicode. */
export function decodeMutf7(s: string): string {
  return s.replace(/&([^-]*)-/g, (_m, b64: string) => {
    if (b64 === '') return '&';
    const bytes = Buffer.from(b64.replace(/,/g, '/'), 'base64');
    let out = '';
    for (let i = 0; i + 1 < bytes.length; i += 2) out += String.fromCharCode((bytes[i]! << 8) | bytes[i + 1]!);
    return out;
  });
}

/** Unicode to modified UTF-7. */
export function encodeMutf7(s: string): string {
  let out = '';
  let run = '';
  const flush = (): void => {
    if (run === '') return;
    const buf = Buffer.alloc(run.length * 2);
    for (let i = 0; i < run.length; i++) buf.writeUInt16BE(run.charCodeAt(i), i * 2);
    out += `&${buf.toString('base64').replace(/=+$/, '').replace(/\//g, ',')}-`;
    run = '';
  };
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e) {
      flush();
      out += ch === '&' ? '&-' : ch;
    } else run += ch;
  }
  flush();
  return out;
}

/** Maildir++ (`.Projects.2026` → `Projects/2026`); undefined for a directory that is not a folder. */
export function maildirFolder(dir: string): string | undefined {
  if (!dir.startsWith('.') || dir === '.' || dir === '..') return undefined;
  return dir.slice(1).split('.').map(decodeMutf7).join('/');
}

/** The directory of a folder (INBOX: the user's maildir itself). */
export function folderDirectory(name: string, layout: 'maildir' | 'fs'): string {
  if (name === 'INBOX') return '';
  const levels = name.split('/').map(encodeMutf7);
  return layout === 'maildir' ? `.${levels.join('.')}` : levels.join('/');
}
