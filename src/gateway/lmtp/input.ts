import type net from 'node:net';

/** A line of message data longer than this is passed on in pieces (it is not the end-of-data dot). */
const LONG_LINE = 64 * 1024;
/** How far ahead `dataFollows` looks for the client's DATA (a few dozen pipelined RCPTs). */
const PEEK = 16 * 1024;

/**
 * The client's bytes, pulled by one reader as command lines, as
 * dot-terminated message data (RFC 5321 §4.5.2), or as counted BDAT bytes
 * (RFC 3030). At most `maxBuffered` bytes wait here: beyond that the socket
 * is paused until the reader catches up (the gateway never holds a whole
 * message).
 */
export class ClientInput {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private wake: (() => void) | undefined;
  // Message data: the current line so far (not yet passed on), and whether part of it already was.
  private partial: Buffer[] = [];
  private partialLen = 0;
  private midLine = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly maxBuffered = 1 << 20,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered > this.maxBuffered) socket.pause();
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.once('end', end);
    socket.once('close', end);
  }

  private async more(): Promise<boolean> {
    if (this.chunks.length > 0) return true;
    if (this.ended) return false;
    if (this.socket.isPaused()) this.socket.resume();
    await new Promise<void>((r) => (this.wake = r));
    this.wake = undefined;
    return this.chunks.length > 0;
  }

  private take(n?: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (n === undefined || n >= first.length) {
      out = this.chunks.shift()!;
    } else {
      out = first.subarray(0, n);
      this.chunks[0] = first.subarray(n);
    }
    this.buffered -= out.length;
    if (this.buffered <= this.maxBuffered / 2 && this.socket.isPaused()) this.socket.resume();
    return out;
  }

  /** Whether bytes the reader has not taken yet are here (the client pipelined more). */
  get waiting(): boolean {
    return this.buffered > 0;
  }

  /**
   * Whether the client has already sent, behind the command being handled,
   * only more RCPTs and then DATA or BDAT (RFC 2920 pipelining): it does not
   * wait for the replies to its recipients before the message. Only
   * complete command lines count, and nothing after the DATA or BDAT line is
   * looked at (a chunk's bytes follow BDAT at once).
   */
  dataFollows(): boolean {
    let pos = 0;
    let text = '';
    for (const c of this.chunks) {
      text += c.toString('latin1', 0, Math.min(c.length, PEEK - text.length));
      if (text.length >= PEEK) break;
    }
    for (;;) {
      const eol = text.indexOf('\n', pos);
      if (eol < 0) return false;
      const line = text.slice(pos, eol).replace(/\r$/, '').toUpperCase();
      if (line === 'DATA' || line.startsWith('BDAT ')) return true;
      if (!line.startsWith('RCPT ')) return false;
      pos = eol + 1;
    }
  }

  /** Puts bytes back in front (what followed a line or the end of data). */
  private unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.unshift(b);
    this.buffered += b.length;
  }

  /** The next command line without its ending; 'too-long' for one beyond `max` bytes (read to its end and dropped); undefined once the client is gone. */
  async line(max: number): Promise<string | 'too-long' | undefined> {
    const parts: Buffer[] = [];
    let size = 0;
    let tooLong = false;
    for (;;) {
      if (!(await this.more())) return undefined;
      const chunk = this.take();
      const eol = chunk.indexOf(10);
      const piece = eol < 0 ? chunk : chunk.subarray(0, eol + 1);
      if (eol >= 0) this.unshift(chunk.subarray(eol + 1));
      size += piece.length;
      if (size > max) tooLong = true;
      else parts.push(piece);
      if (eol >= 0) return tooLong ? 'too-long' : Buffer.concat(parts).toString('latin1').replace(/\r?\n$/, '');
    }
  }

  /**
   * The next piece of message data, rebuilt: every line ends in CRLF (a
   * bare LF becomes CRLF), lines stay dot-stuffed as the client sent them,
   * and a lone "." that did not end in CRLF is sent as ".." so that only
   * the real end of data can end it upstream. `end`: the CRLF "." CRLF came
   * (not included). undefined once the client is gone.
   */
  async data(): Promise<{ data: Buffer; end: boolean } | undefined> {
    if (!(await this.more())) return undefined;
    const chunk = this.take();
    const out: Buffer[] = [];
    let pos = 0;
    /** Start of the stretch of `chunk` that goes out as it came (lines ending in CRLF, none a lone dot). */
    let run = 0;
    while (pos < chunk.length) {
      const eol = chunk.indexOf(10, pos);
      if (eol < 0) {
        if (run < pos) out.push(chunk.subarray(run, pos));
        this.partial.push(chunk.subarray(pos));
        this.partialLen += chunk.length - pos;
        if (this.partialLen > LONG_LINE) {
          // A long line cannot be the dot: pass it on, keeping a final CR (it may begin a CRLF).
          const joined = Buffer.concat(this.partial);
          const keep = joined[joined.length - 1] === 13 ? 1 : 0;
          out.push(joined.subarray(0, joined.length - keep));
          this.partial = keep ? [joined.subarray(joined.length - 1)] : [];
          this.partialLen = keep;
          this.midLine = true;
        }
        return { data: out.length === 1 ? out[0]! : Buffer.concat(out), end: false };
      }
      if (this.partial.length > 0 || this.midLine) {
        // A line begun in an earlier chunk: put together, then judged like any other.
        this.partial.push(chunk.subarray(pos, eol));
        const line = Buffer.concat(this.partial);
        this.partial = [];
        this.partialLen = 0;
        const crlf = line.length > 0 && line[line.length - 1] === 13;
        const content = crlf ? line.subarray(0, line.length - 1) : line;
        const wasMid = this.midLine;
        this.midLine = false;
        pos = eol + 1;
        run = pos;
        if (!wasMid && content.length === 1 && content[0] === 0x2e) {
          if (crlf) {
            this.unshift(chunk.subarray(pos));
            return { data: Buffer.concat(out), end: true };
          }
          out.push(DOT_DOT);
        } else out.push(content, CRLF);
        continue;
      }
      const crlf = eol > pos && chunk[eol - 1] === 13;
      const end = crlf ? eol - 1 : eol;
      if (end - pos === 1 && chunk[pos] === 0x2e) {
        if (run < pos) out.push(chunk.subarray(run, pos));
        if (crlf) {
          this.unshift(chunk.subarray(eol + 1));
          return { data: out.length === 1 ? out[0]! : Buffer.concat(out), end: true };
        }
        // A lone dot ended by a bare LF: content, stuffed, so that it cannot end the data upstream.
        out.push(DOT_DOT);
        run = eol + 1;
      } else if (!crlf) {
        // A bare LF: the line goes on with CRLF.
        out.push(chunk.subarray(run, eol), CRLF);
        run = eol + 1;
      }
      pos = eol + 1;
    }
    if (run < chunk.length) out.push(chunk.subarray(run));
    return { data: out.length === 1 ? out[0]! : Buffer.concat(out), end: false };
  }

  /** Up to `n` bytes of a BDAT chunk; undefined once the client is gone. */
  async bytes(n: number): Promise<Buffer | undefined> {
    if (!(await this.more())) return undefined;
    return this.take(n);
  }

  /** Forgets a message's data state (a new transaction). */
  resetData(): void {
    this.partial = [];
    this.partialLen = 0;
    this.midLine = false;
  }
}

const CRLF = Buffer.from('\r\n');
const DOT_DOT = Buffer.from('..\r\n');
