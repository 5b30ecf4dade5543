import type net from 'node:net';
import zlib from 'node:zlib';

/**
 * A logged-in client's byte streams, plain or compressed (COMPRESS=DEFLATE,
 * RFC 4978: raw deflate both ways from the command's OK on). Output is
 * flushed (Z_SYNC_FLUSH) once per turn of the event loop, so every response
 * reaches the client whole without a flush per line. Input is inflated
 * before the command parser sees it, so the parser's limits count what the
 * client really sent; while the parser has more than it wants, neither the
 * socket nor the inflater is read (a small compressed input cannot grow
 * into a large buffer).
 */
/** Compressed output below this (socket and deflater) lets waiting output go on. */
const DRAINED = 256 << 10;

export class ClientIo {
  private deflate: zlib.DeflateRaw | undefined;
  private inflate: zlib.InflateRaw | undefined;
  private flushQueued = false;
  private inputPaused = false;
  private batching = false;
  /** Input between COMPRESS and its OK: compressed already, kept for the inflater. */
  private held: Buffer[] | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly handlers: {
      /** Bytes from the client, inflated when compressed. */
      input(chunk: Buffer): void;
      /** After bytes went to the socket (TCP_QUICKACK is set then). */
      written(): void;
      /** Output that waited for the client can go on. */
      drained(): void;
      /** The client's compressed stream is broken. */
      broken(why: string): void;
    },
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.inflate) this.inflate.write(chunk);
      else if (this.held) this.held.push(chunk);
      else handlers.input(chunk);
    });
    socket.on('drain', () => handlers.drained());
  }

  get compressed(): boolean {
    return this.deflate !== undefined;
  }

  /** Output not yet taken by the kernel (compressed or not). */
  get writableLength(): number {
    return this.socket.writableLength + (this.deflate ? this.deflate.writableLength + this.deflate.readableLength : 0);
  }

  write(data: string | Buffer, encoding: BufferEncoding = 'latin1'): void {
    if (this.socket.destroyed) return;
    if (!this.deflate) {
      this.socket.write(data, encoding);
      if (!this.batching) this.handlers.written();
      return;
    }
    this.deflate.write(typeof data === 'string' ? Buffer.from(data, encoding) : data);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => {
        this.flushQueued = false;
        if (!this.socket.destroyed) this.deflate?.flush(zlib.constants.Z_SYNC_FLUSH);
      });
    }
  }

  /** Several writes that belong together go to the kernel as one (uncompressed: cork/uncork). */
  batch(run: () => void): void {
    if (this.deflate) return run();
    this.socket.cork();
    this.batching = true;
    try {
      run();
    } finally {
      this.batching = false;
      this.socket.uncork();
      this.handlers.written();
    }
  }

  /** The last words: written (compressed, if so), then the connection ends. */
  end(data?: string): void {
    if (this.socket.destroyed) return;
    if (!this.deflate) {
      if (data === undefined) this.socket.end();
      else this.socket.end(data, 'latin1');
      return;
    }
    const d = this.deflate;
    if (data !== undefined) d.write(Buffer.from(data, 'latin1'));
    d.end(() => this.socket.end());
  }

  pause(): void {
    this.inputPaused = true;
    this.socket.pause();
    this.inflate?.pause();
  }

  resume(): void {
    this.inputPaused = false;
    this.socket.resume();
    this.inflate?.resume();
  }

  /** Keeps what the client sends from now on for startCompression. */
  holdInput(): void {
    this.held ??= [];
  }

  /**
   * From now on both directions are compressed. `rest`: bytes the client
   * sent after the COMPRESS command, already compressed.
   */
  startCompression(rest: Buffer): void {
    const deflate = zlib.createDeflateRaw();
    deflate.on('data', (c: Buffer) => {
      if (this.socket.destroyed) return;
      if (!this.socket.write(c)) deflate.pause();
      // The socket took it without backpressure, so no 'drain' will come: output that waited for
      // the deflater's backlog (counted in writableLength) goes on once that is small again.
      else if (this.writableLength < DRAINED) this.handlers.drained();
      this.handlers.written();
    });
    this.socket.on('drain', () => deflate.resume());
    deflate.on('error', () => this.socket.destroy());
    const inflate = zlib.createInflateRaw();
    inflate.on('data', (c: Buffer) => this.handlers.input(c));
    inflate.on('error', (err) => this.handlers.broken(err.message));
    this.deflate = deflate;
    this.inflate = inflate;
    if (this.inputPaused) inflate.pause();
    if (rest.length > 0) inflate.write(rest);
    for (const c of this.held ?? []) inflate.write(c);
    this.held = undefined;
  }
}
