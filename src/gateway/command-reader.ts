/**
 * Reads IMAP commands (RFC 3501 §2.2, §4.3) from a byte stream, literals
 * included: `{n}` synchronizing (the caller sends a continuation), `{n+}`
 * non-synchronizing (RFC 7888 LITERAL+). Limits on line and literal sizes
 * keep a hostile client from growing memory. Used before authentication,
 * where commands are small; after login bytes are relayed untouched.
 */
export interface ImapCommand {
  readonly tag: string;
  readonly name: string;
  readonly args: string[];
}

export type ReaderOutput =
  | { kind: 'command'; command: ImapCommand }
  | { kind: 'line'; text: string }
  | { kind: 'continue' }
  | { kind: 'bad'; tag: string; message: string };

export interface ReaderLimits {
  maxLine: number;
  maxLiteral: number;
}

const CRLF = Buffer.from('\r\n');

export class CommandReader {
  private buf: Buffer = Buffer.alloc(0);
  /** Text and literal pieces of the command being assembled. */
  private pieces: Array<{ text: string } | { literal: string }> = [];
  private literalLeft = 0;
  private lineBytes = 0;
  /** When set, the next line is returned as is (a SASL response), not parsed as a command. */
  rawLine = false;

  constructor(private readonly limits: ReaderLimits = { maxLine: 8192, maxLiteral: 8192 }) {}

  /** Bytes received but not yet consumed (e.g. pipelined after LOGIN). */
  rest(): Buffer {
    return this.buf;
  }

  /** Appends received bytes. */
  feed(chunk: Buffer): void {
    if (chunk.length > 0) this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /**
   * The next complete result, or undefined when more bytes are needed.
   * One at a time, so that after a LOGIN the unread bytes stay raw in rest().
   */
  next(): ReaderOutput | undefined {
    const out: ReaderOutput[] = [];
    while (out.length === 0) {
      if (this.literalLeft > 0) {
        if (this.buf.length < this.literalLeft) break;
        this.pieces.push({ literal: this.buf.subarray(0, this.literalLeft).toString('utf8') });
        this.buf = this.buf.subarray(this.literalLeft);
        this.literalLeft = 0;
        continue;
      }
      const eol = this.buf.indexOf(CRLF);
      if (eol < 0) {
        if (this.lineBytes + this.buf.length > this.limits.maxLine) {
          out.push(this.fail('line too long'));
          this.buf = Buffer.alloc(0);
        }
        break;
      }
      const line = this.buf.subarray(0, eol).toString('utf8');
      this.buf = this.buf.subarray(eol + 2);
      if (this.rawLine) {
        this.rawLine = false;
        out.push({ kind: 'line', text: line });
        continue;
      }
      this.lineBytes += eol + 2;
      if (this.lineBytes > this.limits.maxLine) {
        out.push(this.fail('line too long'));
        continue;
      }
      const m = /\{(\d{1,10})(\+?)\}$/.exec(line);
      if (m) {
        const n = Number(m[1]);
        this.pieces.push({ text: line.slice(0, m.index) });
        if (n > this.limits.maxLiteral) {
          out.push(this.fail('literal too large'));
          continue;
        }
        this.literalLeft = n;
        if (m[2] !== '+') out.push({ kind: 'continue' });
        if (n === 0) this.pieces.push({ literal: '' });
        continue;
      }
      this.pieces.push({ text: line });
      const pieces = this.pieces;
      this.pieces = [];
      this.lineBytes = 0;
      out.push(parse(pieces));
    }
    return out[0];
  }

  /** Feeds and drains: every result available now (tests and simple callers). */
  push(chunk: Buffer): ReaderOutput[] {
    this.feed(chunk);
    const all: ReaderOutput[] = [];
    for (let r = this.next(); r; r = this.next()) all.push(r);
    return all;
  }

  private fail(message: string): ReaderOutput {
    const first = this.pieces[0];
    const tag = first && 'text' in first ? (first.text.split(' ')[0] ?? '*') : '*';
    this.pieces = [];
    this.lineBytes = 0;
    this.literalLeft = 0;
    return { kind: 'bad', tag: /^[\x21-\x7e]+$/.test(tag) && !tag.includes('+') ? tag : '*', message };
  }
}

// eslint-disable-next-line no-control-regex
const TAG = /^[^\x00-\x20\x7f(){%*"\\+]+$/;

function parse(pieces: Array<{ text: string } | { literal: string }>): ReaderOutput {
  const tokens: string[] = [];
  let err: string | undefined;
  for (const p of pieces) {
    if ('literal' in p) {
      tokens.push(p.literal);
      continue;
    }
    const s = p.text;
    let i = 0;
    while (i < s.length && !err) {
      if (s[i] === ' ') {
        i++;
      } else if (s[i] === '"') {
        let v = '';
        i++;
        for (;;) {
          if (i >= s.length) {
            err = 'unterminated quoted string';
            break;
          }
          const c = s[i]!;
          if (c === '\\' && i + 1 < s.length) {
            v += s[i + 1];
            i += 2;
          } else if (c === '"') {
            i++;
            break;
          } else {
            v += c;
            i++;
          }
        }
        tokens.push(v);
      } else {
        let j = i;
        while (j < s.length && s[j] !== ' ') j++;
        tokens.push(s.slice(i, j));
        i = j;
      }
    }
  }
  const tag = tokens[0] ?? '';
  if (!TAG.test(tag)) return { kind: 'bad', tag: '*', message: 'missing or invalid tag' };
  if (err) return { kind: 'bad', tag, message: err };
  if (tokens.length < 2 || !/^[A-Za-z]+$/.test(tokens[1]!)) return { kind: 'bad', tag, message: 'missing command' };
  return { kind: 'command', command: { tag, name: tokens[1]!.toUpperCase(), args: tokens.slice(2) } };
}

/** Quotes a string for an IMAP command, as a literal when quoting cannot carry it. */
export function imapString(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\r\n\x00]/.test(s) || Buffer.byteLength(s) > 1000) return `{${Buffer.byteLength(s)}+}\r\n${s}`;
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
