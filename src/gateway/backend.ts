import net from 'node:net';
import tls from 'node:tls';
import { quote } from './imap/wire.js';

/**
 * TLS to the Dovecots (implicit TLS on the node's registered address),
 * verified against `ca`: users' passwords and the master password are
 * only sent to a server that proves it is one of the cluster's.
 */
export interface BackendTls {
  readonly ca: string | Buffer;
  /** Name expected in the servers' certificates; default the host of each address. */
  readonly servername?: string;
}

/**
 * A connection to an IMAP server at host:port, plain or verified TLS, and
 * the event after which it may be written to ('secureConnect' with TLS:
 * nothing is sent before the server's certificate was verified).
 */
export function connectBackend(address: string, t?: BackendTls): { socket: net.Socket; ready: 'connect' | 'secureConnect' } {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(colon + 1));
  if (!t) return { socket: net.connect(port, host), ready: 'connect' };
  const socket = tls.connect({ host, port, ca: t.ca, servername: t.servername ?? (net.isIP(host) ? undefined : host), minVersion: 'TLSv1.2', rejectUnauthorized: true });
  return { socket, ready: 'secureConnect' };
}

/** A connection to a Dovecot (or any IMAP server) on some node. */
export interface BackendLogin {
  readonly ok: boolean;
  /**
   * A failed OAUTHBEARER/XOAUTH2 login: the server's error challenge
   * (base64 JSON, RFC 7628 §3.2.2), which the client should see before the NO.
   */
  readonly challenge?: string;
  /** The server's tagged response line, CRLF included (forwarded to the client on success). */
  readonly tagged: Buffer;
  /**
   * A refusal for another reason than the credentials (a connection limit,
   * a server in trouble): its response code (e.g. "[UNAVAILABLE]") and text.
   * Not counted as a failed login.
   */
  readonly refusal?: { readonly code: string; readonly text: string };
  readonly socket: net.Socket;
}

export class BackendUnavailable extends Error {
  override readonly name: string = 'BackendUnavailable';
}

/** The server did not answer in time (as opposed to refusing or closing the connection). */
class BackendTimeout extends BackendUnavailable {
  override readonly name = 'BackendTimeout';
}

/**
 * How a login proves itself: a password (LOGIN), or a SASL mechanism whose
 * initial response the client gave (OAUTHBEARER, XOAUTH2: verified by the
 * Dovecot's own passdb, e.g. oauth2, never by the gateway).
 */
export type Credentials = { readonly password: string } | { readonly mechanism: 'OAUTHBEARER' | 'XOAUTH2'; readonly initial: string };

/** A socket read line by line until it is handed on (the login's tagged reply is the last line read). */
class LineReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly lines: Buffer[] = [];
  private wake: (() => void) | undefined;
  failed: BackendUnavailable | undefined;
  /** While kept in a pool: its removal from there, and the timer that retires it. */
  onFail: (() => void) | undefined;
  aged: NodeJS.Timeout | undefined;
  /** Taken from a pool (greeted a while ago) rather than connected for this login. */
  kept = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', (err: Error) => this.fail(err.message));
    socket.on('close', () => this.fail('connection closed'));
  }

  /** Bytes of a literal still to come (a line ending in {n} announces one: it is read as one piece). */
  private literalLeft = 0;

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.literalLeft > 0) {
        if (this.buf.length < this.literalLeft) break;
        this.lines.push(this.buf.subarray(0, this.literalLeft));
        this.buf = this.buf.subarray(this.literalLeft);
        this.literalLeft = 0;
        continue;
      }
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) break;
      const line = this.buf.subarray(0, eol + 2);
      this.lines.push(line);
      this.buf = this.buf.subarray(eol + 2);
      const m = /\{(\d{1,10})\}\r\n$/.exec(line.subarray(Math.max(0, line.length - 16)).toString('latin1'));
      if (m) this.literalLeft = Number(m[1]);
    }
    this.wake?.();
  };

  fail(why: string, timeout = false): void {
    this.failed ??= timeout ? new BackendTimeout(why) : new BackendUnavailable(why);
    this.wake?.();
    this.onFail?.();
  }

  /** Lines received but not read yet (a greeted connection has none). */
  get unread(): number {
    return this.lines.length + (this.buf.length > 0 ? 1 : 0);
  }

  async nextLine(): Promise<Buffer> {
    while (this.lines.length === 0) {
      if (this.failed) throw this.failed;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
    return this.lines.shift()!;
  }

  /** Stops reading: what arrived after the last line read goes back into the socket, paused. */
  detach(): net.Socket {
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

/** Connects and reads the server's greeting. */
async function greet(address: string, t: BackendTls | undefined, timeoutMs: number): Promise<LineReader> {
  const { socket, ready } = connectBackend(address, t);
  socket.setNoDelay(true);
  const reader = new LineReader(socket);
  const timer = setTimeout(() => reader.fail('backend timed out', true), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once(ready, resolve);
      socket.once('error', (e) => reject(new BackendUnavailable(e.message)));
    });
    const greeting = (await reader.nextLine()).toString();
    if (!greeting.startsWith('* OK')) throw new BackendUnavailable(`unexpected greeting: ${greeting.trim().slice(0, 80)}`);
    return reader;
  } catch (err) {
    socket.destroy();
    throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How the gateway reaches the Dovecots: plain or verified TLS, and a few
 * connections per recently used server kept connected and greeted ahead of
 * the logins that will need them. A Dovecot's greeting costs a login
 * process's start (~9 ms in Dovecot's default high-security mode, more
 * under load) plus the TLS handshake; without the pool every login through
 * the gateway paid it on top of the login itself.
 *
 * A kept connection is used once and replaced; it is closed after `maxAgeMs`
 * (well inside Dovecot's 3 minutes for a client to log in), and a server not
 * used for `idleMs` has none kept.
 */
export class BackendConnector {
  private readonly pools = new Map<string, { ready: LineReader[]; connecting: number; lastUse: number }>();
  private readonly size: number;
  private readonly maxAgeMs: number;
  private readonly idleMs: number;
  private closed = false;

  constructor(readonly tls?: BackendTls, opts: { pool?: number; maxAgeMs?: number; idleMs?: number } = {}) {
    this.size = opts.pool ?? 2;
    this.maxAgeMs = opts.maxAgeMs ?? 60_000;
    this.idleMs = opts.idleMs ?? 300_000;
  }

  /** A greeted connection to `address`: a kept one when there is one, else a new one. */
  async greeted(address: string, timeoutMs: number): Promise<LineReader> {
    if (this.size <= 0 || this.closed) return greet(address, this.tls, timeoutMs);
    let pool = this.pools.get(address);
    if (!pool) this.pools.set(address, (pool = { ready: [], connecting: 0, lastUse: 0 }));
    pool.lastUse = Date.now();
    let kept: LineReader | undefined;
    while (!kept && pool.ready.length > 0) {
      const r = pool.ready.shift()!;
      if (!r.failed && r.unread === 0 && !r.socket.destroyed) kept = r;
      else r.socket.destroy();
    }
    if (!kept) return greet(address, this.tls, timeoutMs);
    kept.onFail = undefined;
    clearTimeout(kept.aged);
    kept.kept = true;
    return kept;
  }

  /** Drops the connections kept for `address` (they proved stale). */
  forget(address: string): void {
    const pool = this.pools.get(address);
    if (!pool) return;
    for (const r of pool.ready.splice(0)) {
      clearTimeout(r.aged);
      r.socket.destroy();
    }
  }

  /**
   * Tops up the connections kept for `address`. Called once a login is done, not when it starts: a
   * Dovecot starting a login process for the pool while it logs a user in makes that login slower.
   */
  refill(address: string): void {
    const pool = this.pools.get(address);
    if (!pool || this.closed) return;
    while (pool.ready.length + pool.connecting < this.size) {
      pool.connecting++;
      greet(address, this.tls, 10_000).then(
        (r) => {
          pool.connecting--;
          if (this.closed || Date.now() - pool.lastUse > this.idleMs) {
            r.socket.destroy();
            if (pool.ready.length === 0 && pool.connecting === 0) this.pools.delete(address);
            return;
          }
          pool.ready.push(r);
          const drop = (): void => {
            const i = pool.ready.indexOf(r);
            if (i >= 0) pool.ready.splice(i, 1);
            clearTimeout(r.aged);
            r.socket.destroy();
          };
          // Replaced when it gets old: an unused connection is closed and a new one made if still wanted.
          r.aged = setTimeout(() => {
            drop();
            if (Date.now() - pool.lastUse <= this.idleMs) this.refill(address);
          }, this.maxAgeMs);
          r.aged.unref();
          r.onFail = drop;
        },
        () => {
          // The server is down: the next login finds out for itself; no retry loop here.
          pool.connecting--;
        },
      );
    }
  }

  /** Connections kept ready for `address` (for tests and metrics). */
  kept(address: string): number {
    return this.pools.get(address)?.ready.length ?? 0;
  }

  close(): void {
    this.closed = true;
    for (const pool of this.pools.values()) {
      for (const r of pool.ready.splice(0)) {
        clearTimeout(r.aged);
        r.socket.destroy();
      }
    }
    this.pools.clear();
  }
}

/**
 * Logs in with `tag` on a greeted connection (from `via`, or a new one)
 * and returns the socket positioned right after the tagged response. Bytes
 * that arrive after it (none are expected before the client speaks) stay
 * unread in the socket.
 */
export async function backendLogin(address: string, tag: string, user: string, password: string | Credentials, opts: { client?: { ip: string; port: number }; timeoutMs?: number; via: BackendConnector }): Promise<BackendLogin> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const via = opts.via;
  try {
    const first = await via.greeted(address, timeoutMs);
    // A kept connection can be dead without showing it: the login processes of a Dovecot whose
    // master was killed hold their clients until these speak, then answer NO [UNAVAILABLE] or
    // close. Then the others kept for that server go too, and the login runs once more on a new
    // connection.
    let login: BackendLogin;
    try {
      login = await loginOn(first, tag, user, password, opts.client, timeoutMs);
    } catch (err) {
      if (!first.kept || err instanceof BackendTimeout) throw err;
      login = { ok: false, tagged: Buffer.from(`${tag} NO [UNAVAILABLE] connection lost\r\n`), socket: first.socket };
    }
    if (login.ok || !first.kept || !/^\S+ NO \[UNAVAILABLE\]/.test(login.tagged.toString('latin1'))) return login;
    login.socket.destroy();
    via.forget(address);
    return await loginOn(await greet(address, via.tls, timeoutMs), tag, user, password, opts.client, timeoutMs);
  } finally {
    via.refill(address);
  }
}

async function loginOn(reader: LineReader, tag: string, user: string, credentials: string | Credentials, client: { ip: string; port: number } | undefined, timeoutMs: number): Promise<BackendLogin> {
  const socket = reader.socket;
  const timer = setTimeout(() => reader.fail('backend timed out', true), timeoutMs);
  try {
    if (client) {
      // Dovecot trusts this from login_trusted_networks: its logs, auth penalties and
      // per-IP limits then see the real client, not the gateway (Dovecot's own proxy does the same).
      const id = `("x-originating-ip" ${quote(client.ip)} "x-originating-port" "${client.port}")`;
      socket.write(`${tag}.id ID ${id}\r\n`);
    }
    const cred = typeof credentials === 'string' ? { password: credentials } : credentials;
    if ('password' in cred) {
      // Values are written byte for byte (latin1 strings: one char per byte) so literal counts are exact.
      const bytes = (v: string): string => Buffer.from(v, 'utf8').toString('latin1');
      socket.write(`${tag} LOGIN ${quote(bytes(user))} ${quote(bytes(cred.password))}\r\n`, 'latin1');
    } else {
      // The initial response was checked to be base64 (an atom): SASL-IR, RFC 4959.
      socket.write(`${tag} AUTHENTICATE ${cred.mechanism} ${cred.initial}\r\n`, 'latin1');
    }
    let challenge: string | undefined;
    for (;;) {
      const line = await reader.nextLine();
      const text = line.toString('latin1');
      if (text.startsWith('+') && !('password' in cred) && challenge === undefined) {
        // An OAuth failure: the server's reason as a challenge; the answer that ends the exchange is
        // %x01 for OAUTHBEARER (RFC 7628 §3.2.3), an empty response for XOAUTH2.
        challenge = text.slice(1).trim();
        socket.write(cred.mechanism === 'OAUTHBEARER' ? 'AQ==\r\n' : '\r\n', 'latin1');
        continue;
      }
      if (text.startsWith(`${tag} `)) {
        const ok = text.startsWith(`${tag} OK`);
        reader.detach();
        if (!ok) socket.end();
        const code = ok ? null : /^\S+ NO (\[[A-Z-]+\]) ?([^\r\n]*)/.exec(text);
        const refusal = code && code[1] !== '[AUTHENTICATIONFAILED]' ? { code: code[1]!, text: code[2]!.replace(/[^\x20-\x7e]/g, '') } : undefined;
        return { ok, tagged: line, socket, ...(challenge !== undefined && !ok ? { challenge } : {}), ...(refusal ? { refusal } : {}) };
      }
    }
  } catch (err) {
    socket.destroy();
    throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One part of one message (what a CATENATE URL names), read on a
 * connection of its own logged in as `user`: the mailbox is examined (never
 * changed), its UIDVALIDITY checked when given, and the part fetched with
 * BODY.PEEK. undefined when there is no such mailbox, message or part.
 */
export async function fetchPart(
  address: string,
  user: string,
  password: string,
  want: { mailbox: string; uidvalidity?: number; uid: number; section: string; partial?: { offset: number; length?: number } },
  opts: { via: BackendConnector; timeoutMs?: number; maxBytes?: number },
): Promise<Buffer | undefined> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const login = await backendLogin(address, 'mailshare.p0', user, password, { timeoutMs, via: opts.via });
  if (!login.ok) throw new BackendUnavailable(`login as ${user} was refused`);
  const reader = new LineReader(login.socket);
  login.socket.resume();
  const timer = setTimeout(() => reader.fail('backend timed out', true), timeoutMs);
  /** Sends a command; the lines (and literals) up to its tagged response, which comes last. */
  const run = async (tag: string, text: string): Promise<Buffer[]> => {
    login.socket.write(`${tag} ${text}\r\n`, 'latin1');
    const out: Buffer[] = [];
    for (;;) {
      const line = await reader.nextLine();
      out.push(line);
      if (line.toString('latin1').startsWith(`${tag} `)) return out;
    }
  };
  const ok = (lines: Buffer[]): boolean => / OK/i.test(lines[lines.length - 1]!.toString('latin1').slice(0, 20));
  try {
    const examined = await run('mailshare.p1', `EXAMINE ${quote(want.mailbox)}`);
    if (!ok(examined)) return undefined;
    const validity = /\[UIDVALIDITY (\d+)\]/i.exec(examined.map((l) => l.toString('latin1')).join(''));
    if (want.uidvalidity !== undefined && Number(validity?.[1]) !== want.uidvalidity) return undefined;
    const range = want.partial?.length !== undefined ? `<${want.partial.offset}.${want.partial.length}>` : '';
    const fetched = await run('mailshare.p2', `UID FETCH ${want.uid} (BODY.PEEK[${want.section}]${range})`);
    if (!ok(fetched)) return undefined;
    // The part is the literal after the line that names BODY[…]; NIL or "" when there is none.
    const at = fetched.findIndex((l) => /BODY\[[^\]]*\](<\d+>)? \{\d+\}\r\n$/i.test(l.toString('latin1')));
    if (at < 0 || at + 1 >= fetched.length) return undefined;
    let data = fetched[at + 1]!;
    if (want.partial && want.partial.length === undefined) data = data.subarray(want.partial.offset);
    if (data.length > (opts.maxBytes ?? 4 << 20)) throw new BackendUnavailable('part too large');
    return data;
  } finally {
    clearTimeout(timer);
    login.socket.end('mailshare.p9 LOGOUT\r\n');
    login.socket.destroySoon();
  }
}

/**
 * Logs in on a connection of its own, runs `commands` one after another
 * (each must answer without literals), logs out, and returns each tagged
 * response's status (OK, NO, BAD). For short jobs outside a session, such
 * as undoing a failed copy.
 */
export async function backendScript(address: string, user: string, password: string, commands: readonly string[], opts: { timeoutMs?: number; via: BackendConnector }): Promise<string[]> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const login = await backendLogin(address, 'mailshare.s0', user, password, { timeoutMs, via: opts.via });
  if (!login.ok) throw new BackendUnavailable(`login as ${user} was refused`);
  const socket = login.socket;
  let buf = '';
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  socket.on('data', (chunk: Buffer) => {
    buf += chunk.toString('latin1');
    wake?.();
  });
  socket.on('close', () => {
    failed = new BackendUnavailable('connection closed');
    wake?.();
  });
  const timer = setTimeout(() => {
    failed = new BackendUnavailable('backend timed out');
    wake?.();
  }, timeoutMs);
  socket.resume();
  try {
    const statuses: string[] = [];
    for (let i = 0; i < commands.length; i++) {
      const tag = `mailshare.s${i + 1}`;
      socket.write(`${tag} ${commands[i]}\r\n`, 'latin1');
      const re = new RegExp(`(?:^|\\r\\n)${tag.replace('.', '\\.')} (\\S+)[^\\r]*\\r\\n`);
      for (;;) {
        const m = re.exec(buf);
        if (m) {
          statuses.push(m[1]!.toUpperCase());
          buf = buf.slice(m.index + m[0].length);
          break;
        }
        if (failed) throw failed;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    }
    socket.end('mailshare.s9 LOGOUT\r\n');
    return statuses;
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}
