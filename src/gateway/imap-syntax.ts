/**
 * IMAP syntax helpers for server responses the gateway rewrites: splitting
 * a buffered response into top-level arguments while keeping each one's
 * wire form, so it can be passed on with only a mailbox name changed
 * (client commands are parsed by imap/parser.ts instead).
 * Strings are latin1 ("binary"): one char per byte, so 8-bit data passes
 * through unchanged.
 */

/** A line segment (CRLF and any literal marker removed) or a literal's bytes. */
export type Piece = { text: string } | { literal: string };

export interface Arg {
  /** Wire form; literals are re-encoded as non-synchronizing (RFC 7888). */
  readonly raw: string;
  /** The astring value for atoms, quoted strings and literals; the raw text otherwise. */
  readonly value: string;
  /** A parenthesized list. */
  readonly list: boolean;
}

export function splitArgs(pieces: readonly Piece[]): Arg[] {
  const out: Arg[] = [];
  let raw = '';
  let literalValue: string | undefined;
  let depth = 0;
  let inQuote = false;
  let escape = false;
  const push = (): void => {
    if (raw === '') return;
    out.push({ raw, value: literalValue ?? valueOf(raw), list: raw.startsWith('(') });
    raw = '';
    literalValue = undefined;
  };
  for (const p of pieces) {
    if ('literal' in p) {
      if (raw === '' && depth === 0) literalValue = p.literal;
      raw += `{${p.literal.length}+}\r\n${p.literal}`;
      continue;
    }
    for (const ch of p.text) {
      if (inQuote) {
        raw += ch;
        if (escape) escape = false;
        else if (ch === '\\') escape = true;
        else if (ch === '"') inQuote = false;
      } else if (ch === ' ' && depth === 0) {
        push();
      } else {
        raw += ch;
        if (ch === '"') inQuote = true;
        else if (ch === '(' || ch === '[') depth++;
        else if ((ch === ')' || ch === ']') && depth > 0) depth--;
      }
    }
  }
  push();
  return out;
}

function valueOf(raw: string): string {
  if (raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"')) return raw.slice(1, -1).replace(/\\(.)/g, '$1');
  return raw;
}

/**
 * An `edit` for one FETCH response that renames data items at the top level
 * of its list (e.g. `BODY[]` back to the `RFC822` the client asked for),
 * each at most once, leaving quoted strings and literals alone. Stateful:
 * feed it the response's lines in order.
 */
export function fetchItemRenamer(names: ReadonlyMap<string, string>): (text: string) => string {
  const left = new Map([...names].map(([from, to]) => [from.toUpperCase(), to]));
  let depth = 0;
  return (text) => {
    let out = '';
    let inQuote = false;
    let escape = false;
    for (let i = 0; i < text.length; i++) {
      const ch = text[i]!;
      if (inQuote) {
        if (escape) escape = false;
        else if (ch === '\\') escape = true;
        else if (ch === '"') inQuote = false;
        out += ch;
        continue;
      }
      if (depth === 1 && left.size > 0 && (i === 0 || text[i - 1] === '(' || text[i - 1] === ' ')) {
        const renamed = [...left].find(([from]) => text.slice(i, i + from.length + 1).toUpperCase() === `${from} `);
        if (renamed) {
          left.delete(renamed[0]);
          out += renamed[1];
          i += renamed[0].length - 1;
          continue;
        }
      }
      if (ch === '"') inQuote = true;
      else if (ch === '(' || ch === '[') depth++;
      else if ((ch === ')' || ch === ']') && depth > 0) depth--;
      out += ch;
    }
    return out;
  };
}
