/**
 * The gateway's IMAP command parser (RFC 3501 §2.2, §4, §9; RFC 9051), with
 * Dovecot's reading of the grammar (lib-imap/imap-parser.c): a line ends at
 * LF, with or without CR before it; a quoted string ends on its line (CR,
 * LF or NUL inside one is an error, never part of the value); a literal's
 * size is followed by CRLF or LF; tokens need no space between them after a
 * list or a quoted string. Commands come out as values (atoms, strings,
 * literals, lists), never as text to relay: what the gateway sends upstream
 * is rebuilt from them (wire.ts), so no byte a client sends can reach a
 * server as anything but the value it was parsed as.
 *
 * Linear: every byte is looked at once, whatever the chunking. Bounded:
 * a command's bytes (its line and literals, APPEND messages excepted, which
 * stream) and its number of literals have limits; past them the command is
 * refused with a tagged BAD and its bytes are dropped, never kept.
 *
 * Pull-based: feed() bytes, then next() until it returns undefined. The
 * session stops pulling while it waits (for a backend), which is how
 * backpressure reaches the client.
 */

/** A parsed IMAP value. Strings are latin1: one char per byte, so 8-bit data passes unchanged. */
export type ImapValue =
  | { readonly type: 'atom'; readonly value: string }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'literal'; readonly value: string; readonly binary: boolean }
  | { readonly type: 'list'; readonly items: readonly ImapValue[] };

export interface Streaming {
  /** Bytes of the message literal that follow as `data` events. */
  readonly length: number;
  /** A synchronizing literal: the client waits for a continuation before sending it. */
  readonly sync: boolean;
  /** literal8 (RFC 3516 BINARY). */
  readonly binary: boolean;
}

export type ParserEvent =
  /** A whole command; with `streaming`, an APPEND whose message follows as `data` events. */
  | { kind: 'command'; tag: string; name: string; args: ImapValue[]; streaming?: Streaming }
  /** MULTIAPPEND (RFC 3502): the next message's flags and date, its literal follows as `data`. */
  | { kind: 'append-next'; args: ImapValue[]; streaming: Streaming }
  | { kind: 'data'; chunk: Buffer }
  /** The streaming command ended; `error` when what followed its last message was not valid. */
  | { kind: 'end'; error?: string }
  /** A line read as is (after IDLE: "DONE"; a SASL response). */
  | { kind: 'line'; text: string; overflow?: boolean }
  /** A synchronizing literal in a command head: send "+" for the client to go on. */
  | { kind: 'continue' }
  /** A refused command. `tag` is "*" when none could be read; `close` when the connection cannot go on. */
  | { kind: 'bad'; tag: string; message: string; close?: boolean };

export interface ParserLimits {
  /** Bytes of one command, its literals included (APPEND messages excepted). */
  maxCommand: number;
  /** Literals in one command (APPEND messages excepted). */
  maxLiterals: number;
  /** Bytes of a line read as is. */
  maxLine: number;
  /** Nesting of parenthesized lists. */
  maxDepth: number;
  /** Whether APPEND messages stream (after login) or count as literals (before). */
  streamAppend: boolean;
  /**
   * Commands whose arguments are read (their syntax checked, literals
   * taken) but not kept: the command comes out with no arguments. Their
   * bytes count toward `maxDiscarded` instead of `maxCommand`.
   */
  discardArgs?: ReadonlySet<string>;
  maxDiscarded?: number;
}

export const POST_LOGIN_LIMITS: ParserLimits = { maxCommand: 65_536, maxLiterals: 64, maxLine: 8192, maxDepth: 32, streamAppend: true };
/**
 * Before login: small commands, except ID (RFC 2971 allows 30 pairs of 1024-byte values, and the
 * gateway answers ID itself, so its arguments are read and dropped).
 */
export const PRE_LOGIN_LIMITS: ParserLimits = { maxCommand: 8192, maxLiterals: 4, maxLine: 8192, maxDepth: 8, streamAppend: false, discardArgs: new Set(['ID']), maxDiscarded: 256 * 1024 };

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const PLUS = 0x2b;

/** Bytes that end an atom or cannot be in one (Dovecot's IS_ATOM_PARSER_INPUT, and 8-bit). */
function atomChar(c: number): boolean {
  return c > SP && c < 0x7f && c !== LPAREN && c !== RPAREN && c !== LBRACE && c !== DQUOTE;
}

/** tag = 1*<ASTRING-CHAR except "+">; a command name is an atom (RFC 3501 §9). */
function tagChar(c: number, tag: boolean): boolean {
  if (c <= SP || c >= 0x7f) return false;
  switch (c) {
    case LPAREN:
    case RPAREN:
    case LBRACE:
    case 0x25: // %
    case 0x2a: // *
    case DQUOTE:
    case BACKSLASH:
      return false;
    case 0x5d: // ]
      return tag;
    case PLUS:
      return !tag;
    default:
      return true;
  }
}

type Mode =
  /** Reading the tag; the start of every command. */
  | 'tag'
  | 'name'
  /** Between tokens of the arguments (at any list depth). */
  | 'args'
  | 'atom'
  | 'quoted'
  | 'literal-size'
  /** After a literal's "}": CRLF or LF. */
  | 'literal-lf'
  | 'literal-data'
  | 'stream'
  | 'raw-line'
  /** A refused command's line is dropped up to its LF. */
  | 'skip-line';

export class CommandParser {
  private chunks: Buffer[] = [];
  private off = 0;
  private queued = 0;
  private limits: ParserLimits;

  private mode: Mode = 'tag';
  private tag = '';
  private name = '';
  /** Open lists; [0] is the command's top level. */
  private stack: ImapValue[][] = [[]];
  private token = '';
  private escape = false;
  /** A CR was read: the next byte must be LF. */
  private sawCr = false;
  private literal = { size: 0, digits: 0, sync: true, binary: false, plus: false };
  private literalParts: Buffer[] = [];
  private literalLeft = 0;
  /** Bytes of the command so far (line and literals), for maxCommand. */
  private used = 0;
  private literals = 0;
  /** Inside an APPEND: its messages stream; after the first one, what follows is the next message or the end. */
  private append: 'no' | 'head' | 'next' = 'no';
  /** The streaming command was refused: its remaining messages are dropped. */
  private discarding = false;
  private streamingTag: string | undefined;
  private streamStarted = false;
  private rawLine = false;
  /** The byte being parsed (a refusal at LF needs no line skipping). */
  private current = 0;
  /** The command's arguments are checked and dropped (limits.discardArgs). */
  private discardValues = false;

  constructor(limits: ParserLimits = POST_LOGIN_LIMITS) {
    this.limits = limits;
  }

  setLimits(limits: ParserLimits): void {
    this.limits = limits;
  }

  feed(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
  }

  /** Bytes received and not yet parsed. */
  get buffered(): number {
    return this.queued - this.off;
  }

  /** Bytes received and not yet parsed, taken out (a connection that stops parsing here). */
  take(): Buffer {
    const rest = Buffer.concat(this.chunks).subarray(this.off);
    this.chunks = [];
    this.queued = 0;
    this.off = 0;
    return rest;
  }

  /** The next line is read as is, not as a command (IDLE's "DONE", a SASL response). */
  expectLine(): void {
    this.rawLine = true;
    if (this.mode === 'tag' && this.token === '') this.mode = 'raw-line';
  }

  /** The streaming command was refused: the rest of it is consumed silently. */
  discard(): void {
    if (this.streamingTag === undefined) return;
    this.discarding = true;
    this.cancelSyncLiteral(this.streamingTag);
  }

  /**
   * The server answered the streaming command `tag` while the client waits
   * to send a synchronizing literal: the client will not send it, so the
   * command ends here.
   */
  cancelSyncLiteral(tag: string): boolean {
    if (!(this.mode === 'stream' && this.streamingTag === tag && this.literal.sync && !this.streamStarted)) return false;
    this.reset();
    return true;
  }

  /** The line expected by expectLine() will not come (the server ended IDLE itself). */
  cancelLine(): void {
    if (!this.rawLine) return;
    this.rawLine = false;
    // Bytes already read as that line are a command's beginning after all: read them again as one.
    const text = this.mode === 'raw-line' ? this.token : '';
    if (this.mode === 'raw-line') this.reset();
    if (text !== '') this.unshift(Buffer.from(text, 'latin1'));
  }

  private unshift(bytes: Buffer): void {
    const first = this.chunks[0];
    if (first) {
      this.chunks[0] = first.subarray(this.off);
      this.queued -= this.off;
      this.off = 0;
    }
    this.chunks.unshift(bytes);
    this.queued += bytes.length;
  }

  next(): ParserEvent | undefined {
    for (;;) {
      const chunk = this.chunks[0];
      if (!chunk) return undefined;
      if (this.off >= chunk.length) {
        this.chunks.shift();
        this.queued -= chunk.length;
        this.off = 0;
        continue;
      }
      const ev = this.step(chunk);
      if (ev) return ev;
    }
  }

  /** Parses from the first chunk at `off`; returns an event, or undefined after consuming some bytes. */
  private step(chunk: Buffer): ParserEvent | undefined {
    if (this.mode === 'stream' || this.mode === 'literal-data') {
      const n = Math.min(this.literalLeft, chunk.length - this.off);
      const part = chunk.subarray(this.off, this.off + n);
      this.off += n;
      this.literalLeft -= n;
      if (this.mode === 'literal-data') {
        if (!this.discardValues) this.literalParts.push(part);
        if (this.literalLeft === 0) this.literalDone();
        return undefined;
      }
      this.streamStarted = true;
      if (this.literalLeft === 0) {
        // The message is complete: what follows is another message or the end of the command.
        this.mode = 'args';
        this.append = 'next';
        this.stack = [[]];
        this.used = 0;
      }
      return this.discarding || n === 0 ? undefined : { kind: 'data', chunk: part };
    }
    // Byte by byte, for the modes that read text.
    while (this.off < chunk.length) {
      const c = chunk[this.off]!;
      this.off++;
      this.current = c;
      if (this.mode !== 'skip-line' && this.mode !== 'raw-line') {
        this.used++;
        if (this.used > (this.discardValues ? (this.limits.maxDiscarded ?? this.limits.maxCommand) : this.limits.maxCommand)) return this.fail('Command too long');
      }
      const ev = this.byte(c);
      if (ev) return ev;
      const mode = this.mode as Mode;
      if (mode === 'stream' || mode === 'literal-data') return undefined;
    }
    return undefined;
  }

  private byte(c: number): ParserEvent | undefined {
    if (this.sawCr) {
      this.sawCr = false;
      if (c !== LF) return this.fail('CR sent without LF');
    } else if (c === CR && this.mode !== 'quoted' && this.mode !== 'raw-line' && this.mode !== 'skip-line') {
      this.sawCr = true;
      return undefined;
    }
    switch (this.mode) {
      case 'raw-line':
        if (c === LF) {
          const text = this.token.endsWith('\r') ? this.token.slice(0, -1) : this.token;
          this.rawLine = false;
          this.reset();
          return { kind: 'line', text };
        }
        if (this.token.length >= this.limits.maxLine) {
          this.rawLine = false;
          this.reset();
          this.mode = 'skip-line';
          return { kind: 'line', text: '', overflow: true };
        }
        this.token += String.fromCharCode(c);
        return undefined;
      case 'skip-line':
        if (c === LF) this.reset();
        return undefined;
      case 'tag':
        if (c === SP && this.token !== '') {
          this.tag = this.token;
          this.token = '';
          this.mode = 'name';
          return undefined;
        }
        if (tagChar(c, true)) {
          this.token += String.fromCharCode(c);
          return undefined;
        }
        if (c === LF && this.token !== '') {
          this.tag = this.token;
          return this.fail('Invalid command name.');
        }
        return this.fail('Invalid tag.');
      case 'name':
        if ((c === SP || c === LF) && this.token !== '') {
          this.name = this.token.toUpperCase();
          this.token = '';
          this.mode = 'args';
          this.discardValues = this.limits.discardArgs?.has(this.name) ?? false;
          if (this.name === 'APPEND' && this.limits.streamAppend) this.append = 'head';
          return c === LF ? this.endOfLine() : undefined;
        }
        if (tagChar(c, false)) {
          this.token += String.fromCharCode(c);
          return undefined;
        }
        return this.fail('Invalid command name.');
      case 'args':
        return this.between(c);
      case 'atom':
        if (c === LBRACE && this.token === '~') {
          // "~{" starts a literal8 (RFC 3516).
          this.startLiteral(true);
          return undefined;
        }
        if (atomChar(c)) {
          if (!this.discardValues) this.token += String.fromCharCode(c);
          return undefined;
        }
        if (c === SP || c === LF || (c === RPAREN && this.stack.length > 1)) {
          this.push({ type: 'atom', value: this.token });
          this.token = '';
          this.mode = 'args';
          return c === SP ? undefined : this.between(c);
        }
        if (c === RPAREN) return this.fail("Unexpected ')'");
        return this.fail(c >= 0x80 ? '8bit data in atom' : 'Invalid characters in atom');
      case 'quoted':
        if (c === LF || c === CR) return this.fail('Missing \'"\'');
        if (c === 0) return this.fail('NULs not allowed in strings');
        if (this.escape) {
          if (!this.discardValues) this.token += String.fromCharCode(c);
          this.escape = false;
        } else if (c === DQUOTE) {
          this.push({ type: 'string', value: this.token });
          this.token = '';
          this.mode = 'args';
        } else if (c === BACKSLASH) {
          this.escape = true;
        } else if (!this.discardValues) {
          this.token += String.fromCharCode(c);
        }
        return undefined;
      case 'literal-size':
        return this.literalSize(c);
      case 'literal-lf':
        if (c !== LF) return this.fail('Missing LF after literal size');
        return this.literalStart();
      default:
        return undefined;
    }
  }

  /** Between tokens (after the command name, inside lists). */
  private between(c: number): ParserEvent | undefined {
    switch (c) {
      case SP:
        return undefined;
      case LF:
        return this.endOfLine();
      case DQUOTE:
        this.mode = 'quoted';
        this.escape = false;
        this.token = '';
        return undefined;
      case LBRACE:
        this.startLiteral(false);
        return undefined;
      case LPAREN:
        if (this.stack.length > this.limits.maxDepth) return this.fail("Too many '('");
        this.stack.push([]);
        return undefined;
      case RPAREN: {
        if (this.stack.length === 1) return this.fail("Unexpected ')'");
        const items = this.stack.pop()!;
        this.push({ type: 'list', items });
        return undefined;
      }
      default:
        if (!atomChar(c)) return this.fail(c >= 0x80 ? '8bit data in atom' : 'Invalid characters in atom');
        this.mode = 'atom';
        this.token = String.fromCharCode(c);
        return undefined;
    }
  }

  private startLiteral(binary: boolean): void {
    this.literal = { size: 0, digits: 0, sync: true, binary, plus: false };
    this.token = '';
    this.mode = 'literal-size';
  }

  private literalSize(c: number): ParserEvent | undefined {
    const l = this.literal;
    if (c === RBRACE) {
      if (l.digits === 0) return this.fail('Invalid literal size');
      this.mode = 'literal-lf';
      return undefined;
    }
    if (l.plus) return this.fail("Expecting '}' after '+'");
    if (c === PLUS && l.digits > 0) {
      l.plus = true;
      l.sync = false;
      return undefined;
    }
    if (c < 0x30 || c > 0x39) return this.fail('Invalid literal size');
    l.digits++;
    l.size = l.size * 10 + (c - 0x30);
    if (l.digits > 15) return this.fail('Literal size too large');
    return undefined;
  }

  /** After the literal's LF: stream it (an APPEND message) or collect it (within maxCommand). */
  private literalStart(): ParserEvent | undefined {
    const l = this.literal;
    const top = this.stack.length === 1;
    const message = top && (this.append === 'next' || (this.append === 'head' && this.stack[0]!.length >= 1));
    if (message) {
      const streaming: Streaming = { length: l.size, sync: l.sync, binary: l.binary };
      const args = this.stack[0]!;
      this.stack = [[]];
      this.mode = 'stream';
      this.literalLeft = l.size;
      this.streamStarted = l.size === 0;
      this.used = 0;
      if (this.append === 'head') {
        this.streamingTag = this.tag;
        this.append = 'next';
        if (l.size === 0) this.messageEnd();
        return { kind: 'command', tag: this.tag, name: this.name, args, streaming };
      }
      if (this.discarding) {
        // The command was refused: a synchronizing literal will not come, a non-synchronizing one is dropped.
        if (l.sync) {
          this.reset();
          return { kind: 'end' };
        }
        if (l.size === 0) this.messageEnd();
        return undefined;
      }
      if (l.size === 0) this.messageEnd();
      return { kind: 'append-next', args, streaming };
    }
    if (this.append === 'next') return this.fail('Expected a message literal');
    this.literals++;
    // Past a limit, a synchronizing literal is simply not asked for; a non-synchronizing one
    // is already on its way and its bytes cannot be told from commands: the connection ends.
    if (this.literals > this.limits.maxLiterals && !this.discardValues) return this.fail('Too many literals', !l.sync);
    const budget = this.discardValues ? (this.limits.maxDiscarded ?? this.limits.maxCommand) : this.limits.maxCommand;
    if (l.size > budget - this.used) return this.fail('Literal too large', !l.sync);
    this.used += l.size;
    this.literalLeft = l.size;
    this.literalParts = [];
    this.mode = 'literal-data';
    if (l.size === 0) this.literalDone();
    return l.sync ? { kind: 'continue' } : undefined;
  }

  /** A zero-length message: nothing streams, the command goes on. */
  private messageEnd(): void {
    this.mode = 'args';
    this.append = 'next';
    this.stack = [[]];
  }

  private literalDone(): void {
    const value = Buffer.concat(this.literalParts).toString('latin1');
    this.literalParts = [];
    this.mode = 'args';
    this.push({ type: 'literal', value, binary: this.literal.binary });
  }

  private push(v: ImapValue): void {
    // Values of a command whose arguments are dropped are never kept (the list depth still is).
    if (this.discardValues) return;
    this.stack[this.stack.length - 1]!.push(v);
  }

  private endOfLine(): ParserEvent | undefined {
    if (this.stack.length > 1) return this.fail("Missing ')'");
    if (this.append === 'next') {
      const extra = this.stack[0]!.length > 0;
      const discarding = this.discarding;
      this.reset();
      return extra && !discarding ? { kind: 'end', error: 'Expected a message literal' } : { kind: 'end' };
    }
    const ev: ParserEvent = { kind: 'command', tag: this.tag, name: this.name, args: this.stack[0]! };
    this.reset();
    return ev;
  }

  /**
   * A refused command: the rest of its line is dropped (unless the refusal
   * came at its LF). With `close`, the client has announced bytes that
   * cannot be told apart from commands (a non-synchronizing literal past a
   * limit): the connection must end.
   */
  private fail(message: string, close = false): ParserEvent {
    const tag = this.tag !== '' ? this.tag : this.mode === 'tag' && this.token !== '' ? this.token : '*';
    const streaming = this.streamingTag !== undefined;
    const discarding = this.discarding;
    const atEol = this.current === LF && this.mode !== 'skip-line';
    this.reset();
    if (!atEol) this.mode = 'skip-line';
    // Inside an APPEND whose first message went upstream: the command ends with an error.
    if (streaming) return discarding ? { kind: 'end' } : { kind: 'end', error: message };
    return close ? { kind: 'bad', tag, message, close: true } : { kind: 'bad', tag, message };
  }

  private reset(): void {
    this.mode = this.rawLine ? 'raw-line' : 'tag';
    this.tag = '';
    this.name = '';
    this.stack = [[]];
    this.token = '';
    this.escape = false;
    this.sawCr = false;
    this.used = 0;
    this.literals = 0;
    this.literalLeft = 0;
    this.literalParts = [];
    this.append = 'no';
    this.discarding = false;
    this.streamingTag = undefined;
    this.streamStarted = false;
    this.discardValues = false;
  }
}

/** The string value of an astring (atom, quoted string or literal), or undefined. */
export function astring(v: ImapValue | undefined): string | undefined {
  if (!v) return undefined;
  if (v.type === 'atom' || v.type === 'string') return v.value;
  if (v.type === 'literal' && !v.binary) return v.value;
  return undefined;
}

/** An atom's text, upper-cased, or undefined. */
export function atomUpper(v: ImapValue | undefined): string | undefined {
  return v?.type === 'atom' ? v.value.toUpperCase() : undefined;
}
