/**
 * Client lines of a line-based protocol (POP3, LMTP commands): CRLF or a
 * bare LF ends a line; a line longer than `maxLine` bytes (ending
 * included) is reported as too long and the rest of it, up to its end, is
 * dropped. Every byte counts towards the limit.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;

  constructor(private maxLine: number) {}

  setLimit(maxLine: number): void {
    this.maxLine = maxLine;
  }

  /** Feeds bytes; returns the complete lines (latin1, ending removed), or 'too-long' in their place. */
  feed(chunk: Buffer, out: Array<string | 'too-long'> = []): Array<string | 'too-long'> {
    let pos = 0;
    while (pos < chunk.length) {
      const eol = chunk.indexOf(10, pos);
      const end = eol < 0 ? chunk.length : eol + 1;
      const piece = chunk.subarray(pos, end);
      pos = end;
      if (!this.skipping) {
        this.size += piece.length;
        if (this.size > this.maxLine) {
          this.skipping = true;
          this.parts = [];
          out.push('too-long');
        } else this.parts.push(piece);
      }
      if (eol >= 0) {
        if (!this.skipping) out.push(Buffer.concat(this.parts).toString('latin1').replace(/\r?\n$/, ''));
        this.parts = [];
        this.size = 0;
        this.skipping = false;
      }
    }
    return out;
  }

  /** Bytes of an unfinished line held. */
  get pending(): number {
    return this.size;
  }

  /** Takes back what is held (e.g. when the connection is handed on). */
  take(): Buffer {
    const rest = Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    return rest;
  }
}
