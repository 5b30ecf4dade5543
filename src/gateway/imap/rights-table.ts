import { type Rights, hasAll, rightsOf } from '../../domain/rights.js';
import type { ImapValue } from './parser.js';
import { atom, list } from './wire.js';

const S = rightsOf('s');
const T = rightsOf('t');
const W = rightsOf('w');

/** The right that changing a flag needs (RFC 4314 §4: \Seen "s", \Deleted "t", any other flag "w"). */
export function flagRight(flag: string): Rights {
  const f = flag.toLowerCase();
  return f === '\\seen' ? S : f === '\\deleted' ? T : W;
}

/**
 * FETCH for a user without "s" (RFC 4314 §4: FETCH must not set \Seen
 * then): BODY[…] and BINARY[…] become their .PEEK forms; RFC822 and
 * RFC822.TEXT, which have none, become BODY.PEEK[] and BODY.PEEK[TEXT], and
 * `renames` says how to name the answers back. Undefined when the user
 * holds "s" (nothing to change). `args` are FETCH's checked arguments.
 */
export function peekFetchItems(args: readonly ImapValue[], rights: Rights): { args: ImapValue[]; renames: Map<string, string> } | undefined {
  if (hasAll(rights, S)) return undefined;
  const renames = new Map<string, string>();
  const peek = (v: ImapValue): ImapValue => {
    if (v.type !== 'atom') return v;
    const up = v.value.toUpperCase();
    if (up === 'RFC822') {
      renames.set('BODY[]', 'RFC822');
      return atom('BODY.PEEK[]');
    }
    if (up === 'RFC822.TEXT') {
      renames.set('BODY[TEXT]', 'RFC822.TEXT');
      return atom('BODY.PEEK[TEXT]');
    }
    const m = /^(BODY|BINARY)\[/i.exec(v.value);
    return m ? atom(`${m[1]}.PEEK${v.value.slice(m[1]!.length)}`) : v;
  };
  const items = args[1];
  const out = [...args];
  if (items?.type === 'list') out[1] = list(items.items.map(peek));
  else if (items) out[1] = peek(items);
  return { args: out, renames };
}

/** The rights the commands need (RFC 4314 §4), by letter. */
export const R = rightsOf('r');
export const I = rightsOf('i');
export const K = rightsOf('k');
export const X = rightsOf('x');
export const E = rightsOf('e');
/** Any of these makes a mailbox writable: without one it opens read-only (EXAMINE). */
export const WRITE_ANY = rightsOf('swte');
