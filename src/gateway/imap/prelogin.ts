import type net from 'node:net';
import type { Credentials } from '../backend.js';
import { quickAcker } from '../quick-ack.js';
import { CommandParser, PRE_LOGIN_LIMITS, astring } from './parser.js';

export const PRE_AUTH_CAPS = 'IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN';
export const OAUTH_CAPS = ' AUTH=OAUTHBEARER AUTH=XOAUTH2';
export const PRE_TLS_CAPS = 'IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED';
export const AUTH_FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';

/**
 * How a login attempt ended: relaying (true), answered (false), or an
 * OAuth failure whose challenge the client must answer before it hears
 * `final` (RFC 7628 §3.2.2).
 */
export type LoginResult = boolean | { challenge: string; final: string };

/** What the pre-login dialogue needs of the gateway. */
export interface PreLoginHost {
  /** STARTTLS is offered and logins before it are refused. */
  readonly tlsAvailable: boolean;
  /** AUTH=OAUTHBEARER and AUTH=XOAUTH2 are offered. */
  readonly oauth: boolean;
  startTls(client: net.Socket): void;
  /** Verifies and routes a login; true once the session relays. */
  login(client: net.Socket, reader: CommandParser, tag: string, user: string, credentials: string | Credentials): Promise<LoginResult>;
}

/**
 * An IMAP client before login (RFC 3501 not-authenticated state, as
 * Dovecot's imap-login speaks it): CAPABILITY, ID, NOOP, LOGOUT, STARTTLS,
 * LOGIN and AUTHENTICATE (PLAIN, LOGIN, and with `oauth` OAUTHBEARER and
 * XOAUTH2), parsed under the pre-login limits. A login hands the
 * connection on (`host.login`).
 */
export function preLogin(host: PreLoginHost, client: net.Socket, secure: boolean, greet: boolean): void {
  const reader = new CommandParser(PRE_LOGIN_LIMITS);
  const quickAck = quickAcker(client);
  const write = (s: string): void => {
    if (!client.destroyed) client.write(s);
    quickAck();
  };
  // With TLS configured, credentials only travel encrypted.
  const plaintextRefused = host.tlsAvailable && !secure;
  const caps = plaintextRefused ? PRE_TLS_CAPS : `${PRE_AUTH_CAPS}${host.oauth ? OAUTH_CAPS : ''}`;
  if (greet) write(`* OK [CAPABILITY ${caps}] mailshare ready\r\n`);
  /** An AUTHENTICATE exchange waiting for the client's next line (RFC 3501 §6.2.2). */
  let sasl: { tag: string; step: 'plain' | 'login-user' | 'login-password' | 'oauth' | 'oauth-failed'; mechanism?: 'OAUTHBEARER' | 'XOAUTH2'; user?: string; final?: string } | undefined;
  let busy = false;
  /** Runs a login; while it runs the client is paused, afterwards either relayed or read again. */
  const authenticate = (tag: string, run: () => Promise<LoginResult>): void => {
    busy = true;
    client.pause();
    void run().then((result) => {
      if (result === true) return;
      if (result !== false) {
        // An OAuth failure: its reason as a challenge, the NO once the client answers it.
        sasl = { tag, step: 'oauth-failed', final: result.final };
        reader.expectLine();
        write(`+ ${result.challenge}\r\n`);
      }
      busy = false;
      client.resume();
      drain();
    }, () => client.destroy());
  };
  const b64 = (text: string): string | undefined => (/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text) ? Buffer.from(text, 'base64').toString('latin1') : undefined);
  /** The next step of an AUTHENTICATE with this (base64) response. */
  const saslStep = (tag: string, step: NonNullable<typeof sasl>['step'], text: string, s: NonNullable<typeof sasl> = { tag, step }): void => {
    if (step === 'oauth-failed') {
      write(s.final!);
      return;
    }
    const decoded = b64(text);
    if (decoded === undefined) {
      write(`${tag} BAD Invalid base64 data in the response\r\n`);
      return;
    }
    switch (step) {
      case 'plain':
        return authenticate(tag, () => loginPlain(host, client, reader, tag, text));
      case 'login-user':
        sasl = { tag, step: 'login-password', user: utf8(decoded) };
        reader.expectLine();
        return write('+ UGFzc3dvcmQ6\r\n');
      case 'login-password':
        return authenticate(tag, () => host.login(client, reader, tag, s.user!, utf8(decoded)));
      case 'oauth': {
        const user = oauthUser(s.mechanism!, decoded);
        if (user === undefined) {
          write(`${tag} ${AUTH_FAILED}\r\n`);
          return;
        }
        return authenticate(tag, () => host.login(client, reader, tag, user, { mechanism: s.mechanism!, initial: text }));
      }
    }
  };
  const drain = (): void => {
    while (!busy && !client.destroyed) {
      const out = reader.next();
      if (!out) return;
      switch (out.kind) {
        case 'continue':
          write('+ Ready for literal data\r\n');
          break;
        case 'bad':
          write(`${out.tag} BAD ${out.message}\r\n`);
          if (out.close) {
            client.end(`* BYE ${out.message}\r\n`);
            return;
          }
          break;
        case 'line': {
          const s = sasl!;
          sasl = undefined;
          if (s.step === 'oauth-failed') write(s.final!);
          else if (out.text === '*') write(`${s.tag} BAD Authentication cancelled\r\n`);
          else if (out.overflow) write(`${s.tag} BAD Authentication response too long\r\n`);
          else saslStep(s.tag, s.step, out.text, s);
          break;
        }
        case 'command': {
          const { tag, name, args } = out;
          switch (name) {
            case 'CAPABILITY':
              write(`* CAPABILITY ${caps}\r\n${tag} OK Capability completed\r\n`);
              break;
            case 'STARTTLS':
              if (!plaintextRefused) {
                write(`${tag} BAD STARTTLS is not available here\r\n`);
                break;
              }
              write(`${tag} OK Begin TLS negotiation now\r\n`);
              host.startTls(client);
              return;
            case 'NOOP':
              write(`${tag} OK NOOP completed\r\n`);
              break;
            case 'ID':
              write(`* ID ("name" "mailshare")\r\n${tag} OK ID completed\r\n`);
              break;
            case 'LOGOUT':
              write(`* BYE Logging out\r\n${tag} OK Logout completed\r\n`);
              client.end();
              return;
            case 'LOGIN':
            case 'AUTHENTICATE': {
              if (plaintextRefused) {
                write(`${tag} NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first\r\n`);
                break;
              }
              if (name === 'AUTHENTICATE') {
                const mechanism = args[0]?.type === 'atom' ? args[0].value.toUpperCase() : undefined;
                const initial = args[1]?.type === 'atom' || args[1]?.type === 'string' ? args[1].value : undefined;
                const oauth = mechanism === 'OAUTHBEARER' || mechanism === 'XOAUTH2';
                const step = mechanism === 'PLAIN' ? 'plain' : mechanism === 'LOGIN' ? 'login-user' : oauth && host.oauth ? 'oauth' : undefined;
                if (step === undefined) write(`${tag} NO [CANNOT] Unsupported authentication mechanism\r\n`);
                else if (args.length > 2 || (args.length === 2 && initial === undefined)) write(`${tag} BAD Invalid AUTHENTICATE arguments\r\n`);
                // SASL-IR (RFC 4959): "=" is an empty initial response.
                else if (initial !== undefined) saslStep(tag, step, initial === '=' ? '' : initial, { tag, step, ...(oauth ? { mechanism: mechanism as 'OAUTHBEARER' | 'XOAUTH2' } : {}) });
                else {
                  sasl = { tag, step, ...(oauth ? { mechanism: mechanism as 'OAUTHBEARER' | 'XOAUTH2' } : {}) };
                  reader.expectLine();
                  write(step === 'login-user' ? '+ VXNlcm5hbWU6\r\n' : '+ \r\n');
                }
                break;
              }
              const user = astring(args[0]);
              const password = astring(args[1]);
              if (args.length !== 2 || user === undefined || password === undefined) write(`${tag} BAD LOGIN needs a user name and a password\r\n`);
              else authenticate(tag, () => host.login(client, reader, tag, utf8(user), utf8(password)));
              break;
            }
            default:
              write(`${tag} BAD ${name} is not valid before login\r\n`);
          }
          break;
        }
        default:
          // APPEND's streaming events do not occur before login (messages are not streamed there).
          break;
      }
    }
  };
  client.on('data', (chunk: Buffer) => {
    reader.feed(chunk);
    drain();
  });
}

/** SASL PLAIN (RFC 4616): authzid NUL authcid NUL password, base64. */
async function loginPlain(host: PreLoginHost, client: net.Socket, reader: CommandParser, tag: string, b64: string): Promise<LoginResult> {
  const parts = Buffer.from(b64, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3 || (parts[0] !== '' && parts[0] !== parts[1])) {
    client.write(`${tag} ${AUTH_FAILED}\r\n`);
    return false;
  }
  return host.login(client, reader, tag, parts[1]!, parts[2]!);
}

/**
 * The user an OAuth initial response names: OAUTHBEARER's GS2 header
 * `n,a=USER,` (RFC 7628 §3.1, "=2C" and "=3D" escaped), XOAUTH2's
 * `user=USER`. The gateway routes on it; the home Dovecot checks that the
 * token is that user's.
 */
export function oauthUser(mechanism: 'OAUTHBEARER' | 'XOAUTH2', decoded: string): string | undefined {
  if (mechanism === 'XOAUTH2') {
    // eslint-disable-next-line no-control-regex
    const m = /^user=([^\x01]+)\x01/.exec(decoded);
    return m ? utf8(m[1]!) : undefined;
  }
  const m = /^[ny],a=([^,]*),/.exec(decoded);
  if (!m || m[1] === '') return undefined;
  return utf8(m[1]!.replace(/=2C/g, ',').replace(/=3D/g, '='));
}

function utf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}
