import type net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import type { BackendTls } from '../backend.js';
import { resolveName } from '../../agent/names.js';
import type { LoginRouter } from '../core/login-router.js';
import type { FencedSession, SessionOwner } from '../core/sessions.js';
import { pop3Login } from './backend.js';
import { type Pop3LoginHost, pop3PreLogin } from './prelogin.js';
import { Pop3Session } from './session.js';

/**
 * The POP3 side of the gateway: the pre-login dialogue, logins through the
 * shared login router (penalties counted with IMAP's, the serving rule,
 * routing, fencing), and the relay to the home node's Dovecot POP3.
 */
export class Pop3FrontEnd {
  private readonly host: Pop3LoginHost;

  constructor(
    private readonly deps: {
      agent: Agent;
      /** A router whose node backend and protocol are POP3's. */
      router: LoginRouter;
      defaultTenant: string | undefined;
      backendTls: BackendTls | undefined;
      tlsAvailable: boolean;
      startTls: (client: net.Socket) => void;
      /** RFC 1939 §3: at least 10 minutes. */
      idleTimeoutMs: number;
      sessions: SessionOwner;
      loggedIn: (client: net.Socket) => void;
    },
  ) {
    this.host = {
      tlsAvailable: deps.tlsAvailable,
      startTls: deps.startTls,
      login: (client, user, password, rest) => this.login(client, user, password, rest),
    };
  }

  handle(client: net.Socket, secure: boolean, greet: boolean): void {
    pop3PreLogin(this.host, client, secure, greet);
  }

  private async login(client: net.Socket, name: string, password: string, rest: Buffer): Promise<boolean> {
    const ip = (client.remoteAddress ?? '?').replace(/^::ffff:/, '');
    const origin = { ip, port: client.remotePort ?? 0 };
    const { tenant, user, dovecotUser } = resolveName(this.deps.agent, this.deps.defaultTenant, name);
    const out = await this.deps.router.login({
      tenant,
      user,
      ip,
      attempt: (address) => pop3Login(address, dovecotUser, password, { client: origin, tls: this.deps.backendTls }),
      abandon: (login) => quit(login.socket),
      gone: () => client.destroyed,
    });
    if (!out || client.destroyed) {
      if (out?.kind === 'ok') out.login.socket.destroy();
      return false;
    }
    switch (out.kind) {
      case 'ok': {
        this.deps.loggedIn(client);
        client.write(out.login.tagged);
        const session: FencedSession & { done: Promise<void> } = new Pop3Session(client, out.login.socket, rest, this.deps.idleTimeoutMs);
        this.deps.sessions.track({ tenant: tenant!, user, epoch: out.home.epoch, node: out.home.node }, session, client);
        return true;
      }
      case 'refused':
        client.write(`-ERR ${out.code} ${out.text}\r\n`);
        return false;
      case 'failed':
        client.write('-ERR [AUTH] Authentication failed.\r\n');
        return false;
      case 'unavailable':
        client.write(
          `-ERR [SYS/TEMP] ${out.cause === 'cluster' ? 'This server cannot reach the rest of the cluster right now' : out.cause === 'backend' ? 'The mail server cannot be reached' : 'Mail service unavailable'}. Try again later.\r\n`,
        );
        return false;
    }
  }
}

/**
 * Ends a POP3 session and resolves once the server closed it (at most 5 s):
 * Dovecot lets go of the maildrop's session lock only then, and a login
 * elsewhere before that would wait for the lock.
 */
function quit(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, 5000);
    socket.once('close', done);
    socket.on('data', () => undefined);
    socket.end('QUIT\r\n');
    socket.resume();
  });
}
