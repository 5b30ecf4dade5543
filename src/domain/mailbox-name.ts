import { DomainError } from './errors.js';
import { parseUserId, printable } from './ids.js';

/**
 * Mailbox names in the API: UTF-8 (normalised to NFC), "/" as hierarchy
 * separator, 1–16 levels, each level 1–255 bytes, at most 1000 bytes in all.
 * No empty levels (so no leading, trailing or doubled "/"), no "." or ".."
 * levels, no control characters, and no IMAP LIST wildcards "*" and "%".
 * A first level of "inbox" in any case is the INBOX and is stored as
 * "INBOX" (RFC 3501 §5.1: INBOX is case-insensitive).
 */
export const MAILBOX_SEPARATOR = '/';
export const MAX_MAILBOX_DEPTH = 16;
export const MAX_LEVEL_BYTES = 255;
export const MAX_NAME_BYTES = 1000;

const encoder = new TextEncoder();

export function parseMailboxName(raw: string, field = 'name'): string {
  const fail = (why: string): never => {
    throw new DomainError('invalid_argument', `${field}: ${why}`, { field });
  };
  if (raw.length === 0) fail('must not be empty');
  if (!isWellFormed(raw)) fail('is not valid UTF-8 (lone surrogate)');
  const name = raw.normalize('NFC');
  // eslint-disable-next-line no-control-regex
  const ctl = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u.exec(name);
  if (ctl) fail(`must not contain control character U+${ctl[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`);
  if (/[*%]/.test(name)) fail('must not contain the IMAP wildcards * or %');
  if (encoder.encode(name).length > MAX_NAME_BYTES) fail(`is longer than ${MAX_NAME_BYTES} bytes`);
  const levels = name.split(MAILBOX_SEPARATOR);
  if (levels.length > MAX_MAILBOX_DEPTH) fail(`has more than ${MAX_MAILBOX_DEPTH} levels`);
  for (const level of levels) {
    if (level === '') fail(`"${printable(name)}" has an empty level (leading, trailing or doubled "/")`);
    if (level === '.' || level === '..') fail(`"${printable(name)}" has a "${level}" level`);
    if (encoder.encode(level).length > MAX_LEVEL_BYTES) fail(`has a level longer than ${MAX_LEVEL_BYTES} bytes`);
  }
  if (levels[0]!.toUpperCase() === 'INBOX') levels[0] = 'INBOX';
  return levels.join(MAILBOX_SEPARATOR);
}

/** A mailbox addressed as OWNER/NAME… inside a tenant. */
export interface MailboxRef {
  readonly owner: string;
  readonly name: string;
}

export function parseMailboxRef(text: string, field = 'mailbox'): MailboxRef {
  const slash = text.indexOf(MAILBOX_SEPARATOR);
  if (slash <= 0 || slash === text.length - 1) {
    throw new DomainError('invalid_argument', `${field}: "${printable(text)}" is not OWNER/NAME (e.g. alice/Projects)`, { field });
  }
  return { owner: parseUserId(text.slice(0, slash), field), name: parseMailboxName(text.slice(slash + 1), field) };
}

export function formatMailboxRef(ref: MailboxRef): string {
  return `${ref.owner}${MAILBOX_SEPARATOR}${ref.name}`;
}

/** Parent names of a mailbox, nearest first ("a/b/c" → ["a/b", "a"]). */
export function parentsOf(name: string): string[] {
  const levels = name.split(MAILBOX_SEPARATOR);
  const out: string[] = [];
  for (let i = levels.length - 1; i > 0; i--) out.push(levels.slice(0, i).join(MAILBOX_SEPARATOR));
  return out;
}

/** No lone UTF-16 surrogates (a string that UTF-8 can carry). */
export function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = s.charCodeAt(i + 1);
      if (!(n >= 0xdc00 && n <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}
