import { type Arg, type Piece, splitArgs } from './imap-syntax.js';

/**
 * Reads an authenticated client's commands (RFC 3501 §2.2) for the session
 * router. A command's head is assembled with its small literals, so the
 * router sees tag, name and arguments; APPEND's message literals are not
 * buffered but handed on as `data` while they arrive, so a message of any
 * size streams through. Pull-based: feed() bytes, then next() until it
 * returns undefined; the router stops pulling while it waits (for a
 * backend, for a barrier), which is how backpressure reaches the client.
 */
export type ClientEvent =
  /** A command. With `streaming`, its head ends in a literal that follows as `data` events, then `end`. */
  | { kind: 'command'; tag: string; name: string; args: Arg[]; streaming?: { length: number; sync: boolean } }
  | { kind: 'data'; chunk: Buffer }
  | { kind: 'end' }
  /** A line read raw (after IDLE: "DONE"). */
  | { kind: 'line'; text: string }
  /** The head holds a synchronizing literal: send "+" for the client to go on. */
  | { kind: 'continue' }
  | { kind: 'bad'; tag: string; message: string };

export interface ClientStreamLimits {
  /** Bytes of command text per line, literals excluded. */
  maxLine: number;
  /** Literal bytes kept in a command head (mailbox names, search strings). */
  maxHeadLiteral: number;
}

const CRLF = Buffer.from('\r\n');
const LITERAL = /\{(\d{1,10})(\+?)\}$/;
// eslint-disable-next-line no-control-regex
const TAG = /^[^\x00-\x20\x7f(){%*"\\+]+$/;

export class ClientStream {
  private buf: Buffer = Buffer.alloc(0);
  private pieces: Piece[] = [];
  private headBytes = 0;
  /** Bytes of the current literal still to come. */
  private literalLeft = 0;
  private literalSync = false;
  private literalStarted = false;
  private mode: 'line' | 'head-literal' | 'stream' | 'skip' | 'skip-line' = 'line';
  /** While streaming or skipping: drop instead of emitting data (a refused command). */
  private discarding = false;
  private streamingTag: string | undefined;
  private rawLine = false;

  constructor(private readonly limits: ClientStreamLimits = { maxLine: 65_536, maxHeadLiteral: 65_536 }) {}

  feed(chunk: Buffer): void {
    if (chunk.length > 0) this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.buf.length;
  }

  /** The next line is not a command (IDLE's "DONE"). */
  expectRawLine(): void {
    this.rawLine = true;
  }

  /** The router refused the streaming command: its remaining bytes are consumed silently. */
  discard(): void {
    if (this.mode !== 'stream') return;
    this.discarding = true;
    this.cancelSyncLiteral(this.streamingTag!);
  }

  /**
   * The server answered the streaming command `tag` while the client waits
   * to send a synchronizing literal: the client will not send it, so the
   * command ends here.
   */
  cancelSyncLiteral(tag: string): void {
    if (this.mode === 'stream' && this.streamingTag === tag && this.literalSync && !this.literalStarted) {
      this.mode = 'line';
      this.literalLeft = 0;
      this.streamingTag = undefined;
      this.discarding = false;
    }
  }

  next(): ClientEvent | undefined {
    for (;;) {
      if (this.mode === 'stream' || this.mode === 'skip') {
        if (this.literalLeft > 0) {
          if (this.buf.length === 0) return undefined;
          const n = Math.min(this.literalLeft, this.buf.length);
          const chunk = this.buf.subarray(0, n);
          this.buf = this.buf.subarray(n);
          this.literalLeft -= n;
          this.literalStarted = true;
          if (this.mode === 'stream' && !this.discarding) return { kind: 'data', chunk };
          continue;
        }
        const eol = this.buf.indexOf(CRLF);
        if (eol < 0) {
          if (this.buf.length > this.limits.maxLine) return this.fail(this.streamingTag ?? '*', 'line too long');
          return undefined;
        }
        const line = this.buf.subarray(0, eol + 2);
        this.buf = this.buf.subarray(eol + 2);
        const m = LITERAL.exec(line.subarray(0, eol).toString('latin1'));
        const streaming = this.mode === 'stream' && !this.discarding;
        if (m && !(this.discarding && m[2] === '')) {
          this.literalLeft = Number(m[1]);
          this.literalSync = m[2] === '';
          this.literalStarted = false;
          if (streaming) return { kind: 'data', chunk: line };
          continue;
        }
        this.mode = 'line';
        this.discarding = false;
        this.streamingTag = undefined;
        if (streaming) {
          this.pendingEnd = true;
          return { kind: 'data', chunk: line };
        }
        continue;
      }
      if (this.pendingEnd) {
        this.pendingEnd = false;
        return { kind: 'end' };
      }
      if (this.mode === 'head-literal') {
        if (this.buf.length < this.literalLeft) return undefined;
        this.pieces.push({ literal: this.buf.subarray(0, this.literalLeft).toString('latin1') });
        this.buf = this.buf.subarray(this.literalLeft);
        this.literalLeft = 0;
        this.mode = 'line';
        continue;
      }
      if (this.mode === 'skip-line') {
        const eol = this.buf.indexOf(CRLF);
        if (eol < 0) {
          this.buf = Buffer.alloc(0);
          return undefined;
        }
        this.buf = this.buf.subarray(eol + 2);
        this.mode = 'line';
        continue;
      }
      const eol = this.buf.indexOf(CRLF);
      if (eol < 0) {
        if (this.headBytes + this.buf.length > this.limits.maxLine) {
          const tag = this.tagSoFar();
          this.mode = 'skip-line';
          this.buf = Buffer.alloc(0);
          return this.fail(tag, 'line too long');
        }
        return undefined;
      }
      const text = this.buf.subarray(0, eol).toString('latin1');
      this.buf = this.buf.subarray(eol + 2);
      if (this.rawLine) {
        this.rawLine = false;
        return { kind: 'line', text };
      }
      this.headBytes += eol + 2;
      if (this.headBytes > this.limits.maxLine) {
        if (this.pieces.length === 0) this.pieces.push({ text });
        return this.fail(this.tagSoFar(), 'line too long');
      }
      const m = LITERAL.exec(text);
      if (!m) {
        this.pieces.push({ text });
        return this.command();
      }
      this.pieces.push({ text: text.slice(0, m.index) });
      const length = Number(m[1]);
      const sync = m[2] === '';
      const args = splitArgs(this.pieces);
      if (args.length >= 3 && args[1]!.value.toUpperCase() === 'APPEND' && TAG.test(args[0]!.value)) {
        // The mailbox is known: the message itself streams.
        const tag = args[0]!.value;
        this.pieces = [];
        this.headBytes = 0;
        this.mode = 'stream';
        this.streamingTag = tag;
        this.literalLeft = length;
        this.literalSync = sync;
        this.literalStarted = false;
        if (length === 0) this.literalStarted = true;
        return { kind: 'command', tag, name: 'APPEND', args: args.slice(2), streaming: { length, sync } };
      }
      if (length > this.limits.maxHeadLiteral) {
        const tag = this.tagSoFar();
        this.pieces = [];
        this.headBytes = 0;
        if (!sync) {
          this.mode = 'skip';
          this.literalLeft = length;
        }
        return { kind: 'bad', tag, message: 'literal too large' };
      }
      this.mode = 'head-literal';
      this.literalLeft = length;
      if (sync) return { kind: 'continue' };
    }
  }

  private pendingEnd = false;

  private command(): ClientEvent {
    const args = splitArgs(this.pieces);
    this.pieces = [];
    this.headBytes = 0;
    const tag = args[0]?.value ?? '';
    if (!TAG.test(tag) || args[0]!.raw !== tag) return { kind: 'bad', tag: '*', message: 'missing or invalid tag' };
    const name = args[1]?.value ?? '';
    if (!/^[A-Za-z]+$/.test(name) || args[1]!.raw !== name) return { kind: 'bad', tag, message: 'missing command' };
    return { kind: 'command', tag, name: name.toUpperCase(), args: args.slice(2) };
  }

  private tagSoFar(): string {
    const first = this.pieces[0];
    const text = first && 'text' in first ? first.text : this.buf.subarray(0, 64).toString('latin1');
    const tag = text.split(' ')[0] ?? '';
    return TAG.test(tag) ? tag : '*';
  }

  private fail(tag: string, message: string): ClientEvent {
    this.pieces = [];
    this.headBytes = 0;
    return { kind: 'bad', tag, message };
  }
}
