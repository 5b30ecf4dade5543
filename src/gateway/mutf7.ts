import { isWellFormed } from '../domain/mailbox-name.js';

/**
 * Modified UTF-7 mailbox names (RFC 3501 §5.1.3): printable US-ASCII stands
 * for itself except "&", written "&-"; anything else is UTF-16BE in
 * base64 with "," for "/" and no padding, between "&" and "-". IMAP4rev1
 * clients send and expect names in this form; mailshare stores UTF-8.
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,';

export function encodeMutf7(name: string): string {
  let out = '';
  let units: number[] = [];
  const flush = (): void => {
    if (units.length === 0) return;
    const bytes = Buffer.alloc(units.length * 2);
    units.forEach((u, i) => bytes.writeUInt16BE(u, i * 2));
    out += `&${bytes.toString('base64').replace(/=+$/, '').replace(/\//g, ',')}-`;
    units = [];
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      flush();
      out += c === 0x26 ? '&-' : name[i];
    } else {
      units.push(c);
    }
  }
  flush();
  return out;
}

/** The UTF-8 name, or undefined when `text` is not well-formed modified UTF-7. */
export function decodeMutf7(text: string): string | undefined {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return undefined;
    if (c !== 0x26) {
      out += text[i];
      continue;
    }
    const end = text.indexOf('-', i + 1);
    if (end < 0) return undefined;
    const b64 = text.slice(i + 1, end);
    i = end;
    if (b64 === '') {
      out += '&';
      continue;
    }
    for (const ch of b64) if (!ALPHABET.includes(ch)) return undefined;
    // Whole UTF-16 units only: 16 bits per unit, 6 bits per character.
    const bits = b64.length * 6;
    if (bits % 16 >= 6) return undefined;
    const bytes = Buffer.from(b64.replace(/,/g, '/'), 'base64');
    if (bytes.length === 0 || bytes.length % 2 !== 0) return undefined;
    let chunk = '';
    for (let j = 0; j < bytes.length; j += 2) chunk += String.fromCharCode(bytes.readUInt16BE(j));
    // A shifted run must not hold what could have been written directly (RFC 3501 §5.1.3).
    if (/[\x20-\x7e]/.test(chunk)) return undefined;
    if (!isWellFormed(chunk)) return undefined;
    out += chunk;
  }
  return out;
}
