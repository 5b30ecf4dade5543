import type net from 'node:net';
import { type BackendTls, BackendUnavailable, connectBackend } from '../backend.js';

/**
 * A connection to a line-based server (POP3, LMTP) read a line at a time
 * while the gateway speaks to it itself (greeting, login, envelope). Lines
 * longer than `maxLine` fail the connection: a server is not trusted to
 * bound them.
 */
export class LineConn {
  private buf: Buffer = Buffer.alloc(0);
  private readonly lines: Buffer[] = [];
  private wake: (() => void) | undefined;
  failed: BackendUnavailable | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: net.Socket,
    private readonly maxLine = 64 * 1024,
  ) {
    socket.on('data', this.onData);
    socket.on('error', (err: Error) => this.fail(err.message));
    socket.on('close', () => this.fail('connection closed'));
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const eol = this.buf.indexOf(10);
      if (eol < 0) break;
      this.lines.push(this.buf.subarray(0, eol + 1));
      this.buf = this.buf.subarray(eol + 1);
    }
    if (this.buf.length > this.maxLine) {
      this.fail('response line too long');
      this.socket.destroy();
    }
    this.wake?.();
  };

  fail(why: string): void {
    this.failed ??= new BackendUnavailable(why);
    this.wake?.();
  }

  /** Fails a read that waits longer than `ms` from now on (0: no deadline). */
  deadline(ms: number): void {
    clearTimeout(this.timer);
    this.timer = ms > 0 ? setTimeout(() => this.fail('server timed out'), ms) : undefined;
  }

  /** The next line, its line ending removed (latin1: one char per byte). */
  async nextLine(): Promise<string> {
    while (this.lines.length === 0) {
      if (this.failed) throw this.failed;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
    return this.lines.shift()!.toString('latin1').replace(/\r?\n$/, '');
  }

  /** Lines (or part of one) received and not read yet. */
  get unread(): number {
    return this.lines.length + (this.buf.length > 0 ? 1 : 0);
  }

  /** Stops reading: what arrived after the last line read goes back into the socket, paused. */
  detach(): net.Socket {
    clearTimeout(this.timer);
    const socket = this.socket;
    socket.pause();
    socket.off('data', this.onData);
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
    socket.on('error', () => undefined);
    const rest = Buffer.concat([...this.lines, this.buf]);
    if (rest.length > 0) socket.unshift(rest);
    return socket;
  }
}

/** Connects (plain or verified TLS) and returns the connection once it may be written to. */
export async function connectLines(address: string, tls: BackendTls | undefined, timeoutMs: number): Promise<LineConn> {
  const { socket, ready } = connectBackend(address, tls);
  socket.setNoDelay(true);
  const conn = new LineConn(socket);
  const timer = setTimeout(() => {
    conn.fail('server timed out');
    socket.destroy();
  }, timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once(ready, resolve);
      socket.once('close', () => reject(conn.failed ?? new BackendUnavailable('connection closed')));
      socket.once('error', (e) => reject(new BackendUnavailable(e.message)));
    });
    return conn;
  } catch (err) {
    socket.destroy();
    throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
  } finally {
    clearTimeout(timer);
  }
}
