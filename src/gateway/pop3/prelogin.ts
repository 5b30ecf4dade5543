import type net from 'node:net';
import { LineSplitter } from '../core/lines.js';

/** Longest command line before login (AUTH PLAIN of a long password fits). */
export const POP3_PRELOGIN_LINE = 8192;

/** Extensions offered before and after login (RFC 2449 CAPA). */
export function pop3Capabilities(opts: { stls: boolean; loggedIn: boolean }): string[] {
  const caps = ['TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE'];
  if (!opts.loggedIn) {
    caps.push('USER', 'SASL PLAIN LOGIN');
    if (opts.stls) caps.push('STLS');
  }
  caps.push('IMPLEMENTATION mailshare');
  return caps;
}

/** What the POP3 pre-login dialogue needs of the gateway. */
export interface Pop3LoginHost {
  /** STLS is offered and logins before it are refused. */
  readonly tlsAvailable: boolean;
  startTls(client: net.Socket): void;
  /**
   * Verifies and routes a login: true once the session relays (`rest`:
   * what the client sent after the login line, for the session); false once
   * it has answered the client.
   */
  login(client: net.Socket, user: string, password: string, rest: Buffer): Promise<boolean>;
}

/**
 * A POP3 client in the AUTHORIZATION state (RFC 1939 §4, as Dovecot's
 * pop3-login speaks it): CAPA, USER and PASS, AUTH PLAIN and LOGIN (RFC
 * 5034, with an initial response or not), STLS (RFC 2595), QUIT. Lines are
 * bounded; a login hands the connection on (`host.login`).
 */
export function pop3PreLogin(host: Pop3LoginHost, client: net.Socket, secure: boolean, greet: boolean): void {
  const lines = new LineSplitter(POP3_PRELOGIN_LINE);
  const plaintextRefused = host.tlsAvailable && !secure;
  const write = (s: string): void => {
    if (!client.destroyed) client.write(s);
  };
  if (greet) write('+OK mailshare ready.\r\n');
  let user: string | undefined;
  /** An AUTH exchange waiting for the client's next line. */
  let sasl: { step: 'plain' | 'login-user' | 'login-password'; user?: string } | undefined;
  const queue: Array<string | 'too-long'> = [];
  let busy = false;
  const b64 = (text: string): string | undefined => (/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text) ? Buffer.from(text, 'base64').toString('utf8') : undefined);

  const authenticate = (name: string, password: string): void => {
    busy = true;
    client.pause();
    client.removeListener('data', onData);
    // Lines the client pipelined after this one belong to the session, not to the pre-login reader.
    const rest = Buffer.from(`${queue.splice(0).map((l) => (l === 'too-long' ? '' : `${l}\r\n`)).join('')}`, 'latin1');
    const after = Buffer.concat([rest, lines.take()]);
    void host.login(client, name, password, after).then((relaying) => {
      if (relaying || client.destroyed) return;
      busy = false;
      // Not logged in: what the client sent meanwhile is read here again.
      lines.feed(after, queue);
      client.on('data', onData);
      client.resume();
      drain();
    }, () => client.destroy());
  };

  const onLine = (line: string): void => {
    if (sasl) {
      const s = sasl;
      sasl = undefined;
      if (line === '*') return write('-ERR Authentication aborted.\r\n');
      const decoded = b64(line);
      if (decoded === undefined) return write('-ERR Invalid base64 data.\r\n');
      return saslStep(s.step, decoded, s.user);
    }
    const sp = line.indexOf(' ');
    const keyword = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const args = sp < 0 ? '' : line.slice(sp + 1);
    switch (keyword) {
      case 'CAPA':
        return write(`+OK\r\n${pop3Capabilities({ stls: plaintextRefused, loggedIn: false }).join('\r\n')}\r\n.\r\n`);
      case 'STLS':
        if (!plaintextRefused) return write('-ERR TLS is not available here.\r\n');
        write('+OK Begin TLS negotiation now.\r\n');
        client.removeListener('data', onData);
        return host.startTls(client);
      case 'QUIT':
        write('+OK Logging out.\r\n');
        client.end();
        return;
      case 'USER':
        if (plaintextRefused) return write('-ERR [AUTH] Plaintext authentication disallowed on non-secure connections: use STLS first.\r\n');
        // eslint-disable-next-line no-control-regex
        if (args === '' || /[\x00-\x1f]/.test(args)) return write('-ERR USER needs a user name.\r\n');
        user = Buffer.from(args, 'latin1').toString('utf8');
        return write('+OK\r\n');
      case 'PASS': {
        if (plaintextRefused) return write('-ERR [AUTH] Plaintext authentication disallowed on non-secure connections: use STLS first.\r\n');
        if (user === undefined) return write('-ERR No USER given.\r\n');
        const name = user;
        user = undefined;
        // RFC 1939 §7: the password is the rest of the line, spaces included.
        return authenticate(name, Buffer.from(args, 'latin1').toString('utf8'));
      }
      case 'AUTH': {
        if (args === '') return write('+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n');
        if (plaintextRefused) return write('-ERR [AUTH] Plaintext authentication disallowed on non-secure connections: use STLS first.\r\n');
        const [mechanism, initial, extra] = args.split(' ');
        const step = mechanism!.toUpperCase() === 'PLAIN' ? 'plain' : mechanism!.toUpperCase() === 'LOGIN' ? 'login-user' : undefined;
        if (step === undefined) return write('-ERR Unsupported authentication mechanism.\r\n');
        if (extra !== undefined) return write('-ERR Invalid AUTH arguments.\r\n');
        if (initial === undefined) {
          sasl = { step };
          return write(step === 'login-user' ? '+ VXNlcm5hbWU6\r\n' : '+ \r\n');
        }
        const decoded = initial === '=' ? '' : b64(initial);
        if (decoded === undefined) return write('-ERR Invalid base64 data.\r\n');
        return saslStep(step, decoded);
      }
      case 'APOP':
        return write('-ERR [AUTH] APOP is not offered here.\r\n');
      default:
        return write('-ERR Unknown command.\r\n');
    }
  };

  const saslStep = (step: 'plain' | 'login-user' | 'login-password', decoded: string, name?: string): void => {
    switch (step) {
      case 'plain': {
        // RFC 4616: authzid NUL authcid NUL password; acting as another user is not offered.
        const parts = decoded.split('\0');
        if (parts.length !== 3 || parts[1] === '' || (parts[0] !== '' && parts[0] !== parts[1])) return write('-ERR [AUTH] Authentication failed.\r\n');
        return authenticate(parts[1]!, parts[2]!);
      }
      case 'login-user':
        sasl = { step: 'login-password', user: decoded };
        return write('+ UGFzc3dvcmQ6\r\n');
      case 'login-password':
        return authenticate(name!, decoded);
    }
  };

  const drain = (): void => {
    while (!busy && !client.destroyed && queue.length > 0) {
      const line = queue.shift()!;
      if (line === 'too-long') {
        write('-ERR Input line too long.\r\n');
        client.end();
        return;
      }
      onLine(line);
    }
  };
  const onData = (chunk: Buffer): void => {
    lines.feed(chunk, queue);
    drain();
  };
  client.on('data', onData);
}
