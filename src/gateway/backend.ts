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
  /** The server's tagged response line, CRLF included (forwarded to the client on success). */
  readonly tagged: Buffer;
  readonly socket: net.Socket;
}

export class BackendUnavailable extends Error {
  override readonly name = 'BackendUnavailable';
}

/**
 * Connects, reads the greeting, logs in with `tag`, and returns the socket
 * positioned right after the tagged response. Bytes that arrive after it
 * (none are expected before the client speaks) stay unread in the socket.
 */
export async function backendLogin(address: string, tag: string, user: string, password: string, opts: { client?: { ip: string; port: number }; timeoutMs?: number; tls?: BackendTls } = {}): Promise<BackendLogin> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const { socket, ready } = connectBackend(address, opts.tls);
  socket.setNoDelay(true);
  let buf = Buffer.alloc(0);
  const lines: Buffer[] = [];
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  const onData = (chunk: Buffer): void => {
    buf = Buffer.concat([buf, chunk]);
    for (let eol = buf.indexOf('\r\n'); eol >= 0; eol = buf.indexOf('\r\n')) {
      lines.push(buf.subarray(0, eol + 2));
      buf = buf.subarray(eol + 2);
    }
    wake?.();
  };
  const onError = (err: Error): void => {
    failed = new BackendUnavailable(err.message);
    wake?.();
  };
  socket.on('data', onData);
  socket.on('error', onError);
  socket.on('close', () => onError(new Error('connection closed')));
  const timer = setTimeout(() => onError(new Error('backend timed out')), timeoutMs);
  const nextLine = async (): Promise<Buffer> => {
    while (lines.length === 0) {
      if (failed) throw failed;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
    return lines.shift()!;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once(ready, resolve);
      socket.once('error', (e) => reject(new BackendUnavailable(e.message)));
    });
    const greeting = (await nextLine()).toString();
    if (!greeting.startsWith('* OK')) throw new BackendUnavailable(`unexpected greeting: ${greeting.trim().slice(0, 80)}`);
    if (opts.client) {
      // Dovecot trusts this from login_trusted_networks: its logs, auth penalties and
      // per-IP limits then see the real client, not the gateway (Dovecot's own proxy does the same).
      const id = `("x-originating-ip" ${quote(opts.client.ip)} "x-originating-port" "${opts.client.port}")`;
      socket.write(`${tag}.id ID ${id}\r\n`);
    }
    // Values are written byte for byte (latin1 strings: one char per byte) so literal counts are exact.
    const bytes = (v: string): string => Buffer.from(v, 'utf8').toString('latin1');
    socket.write(`${tag} LOGIN ${quote(bytes(user))} ${quote(bytes(password))}\r\n`, 'latin1');
    for (;;) {
      const line = await nextLine();
      if (line.toString('latin1').startsWith(`${tag} `)) {
        const ok = line.toString('latin1').startsWith(`${tag} OK`);
        socket.pause();
        socket.off('data', onData);
        socket.removeAllListeners('error');
        socket.removeAllListeners('close');
        socket.on('error', () => undefined);
        if (buf.length > 0) socket.unshift(buf);
        if (!ok) socket.end();
        return { ok, tagged: line, socket };
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
 * Logs in on a connection of its own, runs `commands` one after another
 * (each must answer without literals), logs out, and returns each tagged
 * response's status (OK, NO, BAD). For short jobs outside a session, such
 * as undoing a failed copy.
 */
export async function backendScript(address: string, user: string, password: string, commands: readonly string[], opts: { timeoutMs?: number; tls?: BackendTls } = {}): Promise<string[]> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const login = await backendLogin(address, 'mailshare.s0', user, password, { timeoutMs, tls: opts.tls });
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
