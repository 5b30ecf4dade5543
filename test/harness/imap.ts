import net from 'node:net';
import { waitFor } from './process.js';

/**
 * A plain IMAP conversation for tests that need exact protocol text: each
 * command gets a fresh tag and resolves with everything received up to and
 * including its tagged response.
 */
export class RawImap {
  private out = '';
  private seen = 0;
  private n = 0;
  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => (this.out += c.toString('latin1')));
    socket.on('error', () => undefined);
  }

  /** `localAddress`: connect from this loopback address (e.g. 127.0.0.2), to be another client to penalties. */
  static async connect(address: string, localAddress?: string): Promise<RawImap> {
    const [host, port] = address.split(':');
    const c = new RawImap(net.connect({ port: Number(port), host, ...(localAddress ? { localAddress } : {}) }));
    await waitFor(() => c.out.includes('\r\n'), 5000, 'greeting');
    c.seen = c.out.length;
    return c;
  }

  static async login(address: string, user: string, password: string): Promise<RawImap> {
    const c = await RawImap.connect(address);
    const r = await c.cmd(`LOGIN ${user} ${password}`);
    if (!/^t\d+ OK/m.test(r)) throw new Error(`login failed: ${r}`);
    return c;
  }

  /** Sends `TAG text` and returns the responses through the tagged one. */
  async cmd(text: string, timeoutMs = 10_000): Promise<string> {
    const tag = `t${++this.n}`;
    this.socket.write(`${tag} ${text}\r\n`);
    return this.until(new RegExp(`^${tag} (OK|NO|BAD)[^\\r]*\\r\\n`, 'm'), timeoutMs);
  }

  /** Writes raw bytes (a literal, IDLE's DONE). */
  write(s: string): void {
    this.socket.write(s);
  }

  /** Everything new up to the first match of `re`. */
  async until(re: RegExp, timeoutMs = 10_000): Promise<string> {
    await waitFor(() => re.test(this.out.slice(this.seen)), timeoutMs, `response matching ${re}`);
    const rest = this.out.slice(this.seen);
    const m = re.exec(rest)!;
    const end = m.index + m[0].length;
    this.seen += end;
    return rest.slice(0, end);
  }

  get closed(): boolean {
    return this.socket.destroyed || this.socket.readableEnded;
  }

  /** Everything received and not yet returned. */
  pending(): string {
    return this.out.slice(this.seen);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** An RFC 5322 message for APPEND. */
export function message(subject: string, body = 'hello'): string {
  return `From: test@example.com\r\nTo: someone@example.com\r\nSubject: ${subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n${body}\r\n`;
}

/**
 * Everything an account holds, read straight from its Dovecot: every
 * folder with its UIDVALIDITY, UIDNEXT and each message's UID, flags and
 * bytes (\Recent left out: opening a folder changes it). Two equal
 * snapshots mean nothing was created, deleted, stored or expunged.
 */
export async function accountSnapshot(address: string, user: string, password: string): Promise<string> {
  const c = await RawImap.login(address, user, password);
  try {
    const list = await c.cmd('LIST "" "*"');
    const names = [...list.matchAll(/^\* LIST \(([^)]*)\) "[^"]*" (.*)\r$/gm)]
      .filter((m) => !/\\Noselect|\\NonExistent/i.test(m[1]!))
      .map((m) => m[2]!)
      .sort();
    const out: string[] = [];
    for (const name of names) {
      const ex = await c.cmd(`EXAMINE ${name}`);
      const state = [...ex.matchAll(/\[(UIDVALIDITY|UIDNEXT) (\d+)\]|^\* (\d+) EXISTS/gm)].map((m) => m[0]).join(' ');
      const fetched = /^\* (\d+) EXISTS/m.exec(ex)?.[1] === '0' ? '' : await c.cmd('FETCH 1:* (UID FLAGS BODY.PEEK[])');
      // The tagged line reports timings: left out.
      out.push(`${name} ${state}\n${fetched.replace(/\\Recent ?/g, '').replace(/^t\d+ [^\r]*\r\n/gm, '')}`);
    }
    return out.join('\n');
  } finally {
    c.close();
  }
}
