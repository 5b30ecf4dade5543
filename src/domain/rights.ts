import { DomainError } from './errors.js';

/**
 * RFC 4314 §2.1 rights as an 11-bit set, in the canonical order
 * "lrswipkxtea" (bit 0 = l … bit 10 = a).
 */
export type Rights = number & { readonly __rights: unique symbol };

export const RIGHT_LETTERS = 'lrswipkxtea';
export const ALL_RIGHTS = ((1 << RIGHT_LETTERS.length) - 1) as Rights;
export const NO_RIGHTS = 0 as Rights;

const bitOf = new Map<string, number>([...RIGHT_LETTERS].map((c, i) => [c, 1 << i]));
const bits = (letters: string): number => [...letters].reduce((acc, c) => acc | bitOf.get(c)!, 0);

/**
 * RFC 4314 §2.1.1 obsolete rights. Of the two mappings the RFC allows,
 * mailshare uses the first one (and the one its SETACL example shows):
 * "c" (create) = k + x, "d" (delete) = e + t.
 */
export const CREATE_MEMBERS = bits('kx') as Rights;
export const DELETE_MEMBERS = bits('et') as Rights;

export function rightsOf(letters: string): Rights {
  return parseRights(letters);
}

/**
 * Parses a rights string: the letters of RIGHT_LETTERS in any order, plus
 * the virtual "c" and "d" (expanded to their members). Anything else is an
 * error naming the letter (RFC 4314 §3.1: never ignore an unknown right).
 */
export function parseRights(text: string, field = 'rights'): Rights {
  let acc = 0;
  for (const ch of text) {
    const b = bitOf.get(ch);
    if (b !== undefined) acc |= b;
    else if (ch === 'c') acc |= CREATE_MEMBERS;
    else if (ch === 'd') acc |= DELETE_MEMBERS;
    else if (ch >= 'A' && ch <= 'Z') {
      throw new DomainError('invalid_argument', `${field}: uppercase right "${ch}" is not allowed (rights are lowercase)`, { field });
    } else {
      throw new DomainError('invalid_argument', `${field}: unknown right "${printableChar(ch)}" (known: ${RIGHT_LETTERS}, and c, d)`, { field });
    }
  }
  return acc as Rights;
}

/** Canonical form without virtual rights: letters in "lrswipkxtea" order. */
export function formatRights(r: Rights): string {
  let out = '';
  for (let i = 0; i < RIGHT_LETTERS.length; i++) if (r & (1 << i)) out += RIGHT_LETTERS[i];
  return out;
}

/**
 * Form for ACL and MYRIGHTS responses (RFC 4314 §2.1.1): canonical letters,
 * then "c" when any member of create is present and "d" when any member of
 * delete is present.
 */
export function formatRightsForResponse(r: Rights): string {
  let out = formatRights(r);
  if (r & CREATE_MEMBERS) out += 'c';
  if (r & DELETE_MEMBERS) out += 'd';
  return out;
}

export const union = (a: Rights, b: Rights): Rights => (a | b) as Rights;
export const difference = (a: Rights, b: Rights): Rights => (a & ~b & ALL_RIGHTS) as Rights;
export const intersection = (a: Rights, b: Rights): Rights => (a & b) as Rights;
export const hasAll = (have: Rights, need: Rights): boolean => (have & need) === need;
export const hasAny = (have: Rights, any: Rights): boolean => (have & any) !== 0;
export const isEmpty = (r: Rights): boolean => r === 0;

export const L = bits('l') as Rights;
export const A = bits('a') as Rights;

/** SETACL's third argument (RFC 4314 §3.1): "+r" adds, "-r" removes, "r" replaces. */
export interface RightsChange {
  readonly mode: 'add' | 'remove' | 'replace';
  readonly rights: Rights;
}

export function parseRightsChange(text: string, field = 'rights'): RightsChange {
  if (text.startsWith('+')) return { mode: 'add', rights: parseRights(text.slice(1), field) };
  if (text.startsWith('-')) return { mode: 'remove', rights: parseRights(text.slice(1), field) };
  return { mode: 'replace', rights: parseRights(text, field) };
}

export function applyRightsChange(current: Rights, change: RightsChange): Rights {
  switch (change.mode) {
    case 'add':
      return union(current, change.rights);
    case 'remove':
      return difference(current, change.rights);
    case 'replace':
      return change.rights;
  }
}

export function formatRightsChange(change: RightsChange): string {
  const prefix = change.mode === 'add' ? '+' : change.mode === 'remove' ? '-' : '';
  return prefix + formatRights(change.rights);
}

function printableChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  return cp < 0x20 || cp === 0x7f || (cp >= 0x80 && cp < 0xa0) ? `U+${cp.toString(16).toUpperCase().padStart(4, '0')}` : ch;
}
