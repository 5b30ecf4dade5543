import type { Piece } from './imap-syntax.js';

/**
 * What to do with one server response, decided from its first line:
 * pass its bytes on, assemble it for the sink, drop it, or pass it on with
 * each line's text (not its literals) rewritten by `edit`.
 */
export type ResponseAction = 'forward' | 'buffer' | 'drop' | { edit: (text: string) => string };

export interface ResponseSink {
  classify(firstLine: string): ResponseAction;
  /** Bytes of forwarded responses, in order, without re-encoding. */
  forward(chunk: Buffer): void;
  /** A complete buffered response: its pieces (text without CRLF or literal marker, literal data) and its bytes. */
  response(pieces: Piece[], raw: Buffer): void;
}

const LITERAL = /\{(\d{1,10})\}$/;

/**
 * Splits a server's output into responses (RFC 3501 §7) without copying
 * the ones the gateway passes on: a FETCH literal of any size flows through
 * as slices of the received chunks. Only responses the sink asks for
 * (LIST, STATUS, tagged completions, …) are assembled.
 */
export class ResponseStream {
  private partial: Buffer | undefined;
  private action: ResponseAction | undefined;
  private literalLeft = 0;
  private pieces: Piece[] = [];
  private raw: Buffer[] = [];
  private literalParts: Buffer[] = [];

  constructor(private readonly sink: ResponseSink) {}

  push(chunk: Buffer): void {
    let i = 0;
    let fwdStart = -1;
    const flush = (end: number): void => {
      if (fwdStart >= 0 && end > fwdStart) this.sink.forward(chunk.subarray(fwdStart, end));
      fwdStart = -1;
    };
    while (i < chunk.length) {
      if (this.literalLeft > 0) {
        const n = Math.min(this.literalLeft, chunk.length - i);
        if (this.action === 'forward' || typeof this.action === 'object') {
          if (fwdStart < 0) fwdStart = i;
        } else if (this.action === 'buffer') {
          this.literalParts.push(chunk.subarray(i, i + n));
          this.raw.push(chunk.subarray(i, i + n));
        }
        i += n;
        this.literalLeft -= n;
        if (this.literalLeft === 0 && this.action === 'buffer') {
          this.pieces.push({ literal: Buffer.concat(this.literalParts).toString('latin1') });
          this.literalParts = [];
        }
        continue;
      }
      let end: number;
      if (this.partial && this.partial[this.partial.length - 1] === 0x0d && chunk[i] === 0x0a) {
        end = i + 1;
      } else {
        const eol = chunk.indexOf('\r\n', i);
        end = eol < 0 ? -1 : eol + 2;
      }
      if (end < 0) {
        flush(i);
        this.partial = this.partial ? Buffer.concat([this.partial, chunk.subarray(i)]) : Buffer.from(chunk.subarray(i));
        return;
      }
      let lineBytes: Buffer;
      let held: Buffer | undefined;
      if (this.partial) {
        held = this.partial;
        this.partial = undefined;
        lineBytes = Buffer.concat([held, chunk.subarray(i, end)]);
      } else {
        lineBytes = chunk.subarray(i, end);
      }
      const text = lineBytes.subarray(0, lineBytes.length - 2).toString('latin1');
      this.action ??= this.sink.classify(text);
      const m = LITERAL.exec(text);
      if (this.action === 'forward') {
        if (held) {
          flush(i);
          this.sink.forward(held);
        }
        if (fwdStart < 0) fwdStart = i;
      } else if (typeof this.action === 'object') {
        flush(i);
        const body = m ? text.slice(0, m.index) : text;
        this.sink.forward(Buffer.from(`${this.action.edit(body)}${m ? m[0] : ''}\r\n`, 'latin1'));
      } else {
        flush(i);
        if (this.action === 'buffer') {
          this.pieces.push({ text: m ? text.slice(0, m.index) : text });
          this.raw.push(lineBytes);
        }
      }
      i = end;
      if (m && Number(m[1]) > 0) {
        this.literalLeft = Number(m[1]);
      } else if (m) {
        if (this.action === 'buffer') this.pieces.push({ literal: '' });
      } else {
        const action = this.action;
        this.action = undefined;
        if (action === 'buffer') {
          flush(i);
          const pieces = this.pieces;
          const raw = Buffer.concat(this.raw);
          this.pieces = [];
          this.raw = [];
          this.sink.response(pieces, raw);
        }
      }
    }
    flush(i);
  }
}
