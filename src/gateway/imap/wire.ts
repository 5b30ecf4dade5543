import type { ImapValue } from './parser.js';

/**
 * Writing IMAP values for a server. Whatever the values hold, the output
 * parses back (Dovecot's imap-parser.c) to exactly these values and ends no
 * line early: atoms are checked against the atom charset, quoted strings
 * never carry CR, LF or NUL (such values become literals), literals carry
 * their exact byte count (RFC 7888 LITERAL+, so nothing waits for a
 * continuation). A command written from values is one command.
 */

export class WireError extends Error {
  override readonly name = 'WireError';
}

export function atom(value: string): ImapValue {
  return { type: 'atom', value };
}

export function str(value: string): ImapValue {
  return { type: 'string', value };
}

export function list(items: readonly ImapValue[]): ImapValue {
  return { type: 'list', items };
}

// eslint-disable-next-line no-control-regex
const ATOM = /^[^\x00-\x20\x7f-\xff(){"]+$/;
// eslint-disable-next-line no-control-regex
const UNQUOTABLE = /[\r\n\x00]/;

/** One value in wire form (latin1: one char per byte). */
export function wire(v: ImapValue): string {
  switch (v.type) {
    case 'atom':
      if (!ATOM.test(v.value) || v.value.startsWith('~{')) throw new WireError(`not an atom: ${JSON.stringify(v.value.slice(0, 40))}`);
      return v.value;
    case 'string':
      return quote(v.value);
    case 'literal':
      return `${v.binary ? '~' : ''}{${v.value.length}+}\r\n${v.value}`;
    case 'list':
      return `(${wireAll(v.items)})`;
  }
}

/**
 * Values separated by spaces. An atom starting with "]" right after a list
 * is written without the space: FETCH's `BODY[HEADER.FIELDS (A B)]` is the
 * atom `BODY[HEADER.FIELDS`, a list and the atom `]` (as Dovecot parses it).
 */
export function wireAll(values: readonly ImapValue[]): string {
  let out = '';
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    const glued = i > 0 && v.type === 'atom' && v.value.startsWith(']') && values[i - 1]!.type === 'list';
    if (i > 0 && !glued) out += ' ';
    out += wire(v);
  }
  return out;
}

/** A command line (CRLF included) from a tag of the gateway's, a command name and values. */
export function command(tag: string, name: string, args: readonly ImapValue[]): string {
  return `${commandHead(tag, name, args)}\r\n`;
}

/** A command without its CRLF (a literal marker may follow). */
export function commandHead(tag: string, name: string, args: readonly ImapValue[]): string {
  if (!/^[A-Za-z0-9.]+$/.test(tag)) throw new WireError(`not a tag of the gateway's own: ${JSON.stringify(tag.slice(0, 40))}`);
  if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(name)) throw new WireError(`not a command name: ${JSON.stringify(name.slice(0, 40))}`);
  return `${tag} ${name}${args.length > 0 ? ` ${wireAll(args)}` : ''}`;
}

/** An astring for the wire: quoted when it can be, else a literal. */
export function quote(s: string): string {
  if (UNQUOTABLE.test(s) || s.length > 1024) return `{${s.length}+}\r\n${s}`;
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
