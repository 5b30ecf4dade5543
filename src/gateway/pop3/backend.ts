import { type BackendLogin, type BackendTls, BackendUnavailable } from '../backend.js';
import { connectLines } from '../core/line-conn.js';

/** A POP3 response code (RFC 2449 §8, RFC 3206): `-ERR [CODE] text`. */
const CODED = /^-ERR \[([A-Z/-]+)\] ?(.*)$/;

/**
 * Logs in at a POP3 server (Dovecot's pop3-login): reads the greeting,
 * forwards the client's address with XCLIENT when the server offers it
 * (Dovecot does to login_trusted_networks: its logs, penalties and limits
 * then see the real client), then AUTH PLAIN with the initial response
 * (RFC 5034). The socket comes back positioned after the server's +OK,
 * paused. A wrong password is `ok: false` without a refusal; any other
 * coded -ERR ([IN-USE], [SYS/TEMP], …) is a refusal the client hears.
 */
export async function pop3Login(
  address: string,
  user: string,
  password: string,
  opts: { client?: { ip: string; port: number }; tls?: BackendTls; /** Default 30 s (Dovecot's proxy_timeout). */ timeoutMs?: number },
): Promise<BackendLogin> {
  // Dovecot's pop3 waits up to 10 s for another session's lock before it answers -ERR [IN-USE].
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const conn = await connectLines(address, opts.tls, timeoutMs);
  const socket = conn.socket;
  conn.deadline(timeoutMs);
  try {
    const greeting = await conn.nextLine();
    if (!greeting.startsWith('+OK')) throw new BackendUnavailable(`unexpected greeting: ${greeting.slice(0, 80)}`);
    if (opts.client && /^\+OK \[XCLIENT\]/.test(greeting)) {
      socket.write(`XCLIENT ADDR=${opts.client.ip} PORT=${opts.client.port}\r\n`);
      const r = await conn.nextLine();
      if (!r.startsWith('+OK')) throw new BackendUnavailable(`XCLIENT refused: ${r.slice(0, 80)}`);
    }
    const plain = Buffer.concat([Buffer.from([0]), Buffer.from(user, 'utf8'), Buffer.from([0]), Buffer.from(password, 'utf8')]).toString('base64');
    socket.write(`AUTH PLAIN ${plain}\r\n`);
    const reply = await conn.nextLine();
    const ok = reply.startsWith('+OK');
    const tagged = Buffer.from(`${reply}\r\n`, 'latin1');
    conn.detach();
    if (ok) return { ok, tagged, socket };
    socket.end();
    const coded = CODED.exec(reply);
    if (coded && coded[1] !== 'AUTH') return { ok, tagged, socket, refusal: { code: `[${coded[1]}]`, text: coded[2]!.replace(/[^\x20-\x7e]/g, '') } };
    return { ok, tagged, socket };
  } catch (err) {
    socket.destroy();
    throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
  }
}
