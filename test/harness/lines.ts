import net from 'node:net';
import tls from 'node:tls';

/** A raw client of a line-based protocol (POP3, LMTP) for tests: write bytes, read lines. */
export class RawLines {
  private buf = '';
  private closed = false;
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  /** `localAddress`: connect from this loopback address (another client to penalties). */
  static async connect(address: string, opts: { tls?: { ca: string | Buffer }; localAddress?: string } = {}): Promise<RawLines> {
    const colon = address.lastIndexOf(':');
    const host = address.slice(0, colon);
    const port = Number(address.slice(colon + 1));
    const from = opts.localAddress ? { localAddress: opts.localAddress } : {};
    const socket = opts.tls ? tls.connect({ host, port, ca: opts.tls.ca, servername: 'localhost', ...from }) : net.connect({ port, host, ...from });
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawLines(socket);
  }

  /** Upgrades the connection to TLS (after STLS / STARTTLS). */
  async startTls(ca: string | Buffer): Promise<RawLines> {
    this.socket.removeAllListeners('data');
    const s = tls.connect({ socket: this.socket, ca, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    return new RawLines(s);
  }

  write(s: string | Buffer): void {
    this.socket.write(s);
  }

  /** The next line (without CRLF); rejects when the connection closes first or after `timeoutMs`. */
  async line(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const eol = this.buf.indexOf('\n');
      if (eol >= 0) {
        const l = this.buf.slice(0, eol).replace(/\r$/, '');
        this.buf = this.buf.slice(eol + 1);
        return l;
      }
      if (this.closed) throw new Error(`connection closed (unread: ${JSON.stringify(this.buf.slice(0, 200))})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${timeoutMs} ms (unread: ${JSON.stringify(this.buf.slice(0, 200))})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiter = undefined;
    }
  }

  /** Sends a command and returns its one-line answer. */
  async cmd(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.line();
  }

  /** Reads a multi-line POP3 answer after its status line: the lines up to ".", unstuffed. */
  async multi(): Promise<string[]> {
    const out: string[] = [];
    for (;;) {
      const l = await this.line();
      if (l === '.') return out;
      out.push(l.startsWith('..') ? l.slice(1) : l);
    }
  }

  /** Resolves when the server closes the connection (true), or false after `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  /** What arrived and was not read as lines. */
  get unread(): string {
    return this.buf;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Runs a Python 3 script (a real client library: poplib, smtplib) and returns its stdout; throws with stderr when it fails. */
export async function python(script: string, args: string[] = [], timeoutMs = 60_000): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', script, ...args], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}
