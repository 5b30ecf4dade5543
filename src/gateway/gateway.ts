import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { type Agent, type AgentLogger, createAgent } from '../agent/agent.js';
import { USER_ID_PATTERN } from '../domain/ids.js';
import { BackendUnavailable, backendLogin } from './backend.js';
import { CommandReader } from './command-reader.js';
import { CoordinatorClients } from './coordinators.js';
import { FailureLimiter } from './failure-limiter.js';
import { Session } from './session.js';
import { SharedNamespace } from './shared-namespace.js';

export interface GatewayOptions {
  /** host:port for IMAP clients; port 0 picks one. */
  listen: string;
  /** Coordinator addresses, used in order (the next one when one is unavailable). */
  coordinators: string[];
  /** To the coordinators; default insecure (loopback). grpc.credentials.createSsl(ca, key, cert) for TLS. */
  credentials?: grpc.ChannelCredentials;
  /** gRPC channel options, e.g. grpc.ssl_target_name_override. */
  channelOptions?: grpc.ClientOptions;
  /** Token with role node. */
  token: string;
  /** This node: its name, and the address of its own Dovecot (what other gateways reach). */
  node: { name: string; backend: string; weight?: number; zone?: string };
  /** Tenant of every login through this gateway. */
  tenant: string;
  ttlSeconds?: number;
  logger?: AgentLogger;
  /** Failed logins allowed per client address and per user within a minute; default 10 and 5. */
  maxFailuresPerAddress?: number;
  maxFailuresPerUser?: number;
  /**
   * Dovecot master user (auth_master_user_separator "*"), used to open
   * owners' mailboxes on their nodes. Without it shared mailboxes answer
   * NO [UNAVAILABLE].
   */
  master?: { user: string; password: string };
  /**
   * A user with no session through any gateway for this long is released
   * (next login may land on another node); default 15 minutes, 0 never.
   */
  userExpireMs?: number;
  /** Prefix of the shared namespace (RFC 2342); default "Shared/". */
  sharedPrefix?: string;
  /**
   * Certificate and key (PEM). With them the gateway offers STARTTLS and
   * refuses authentication before it (LOGINDISABLED, RFC 3501 §6.2.3).
   */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** host:port for implicit TLS (RFC 8314, usually port 993); needs `tls`. */
  listenTls?: string;
}

const PRE_AUTH_CAPS = 'IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN';
const PRE_TLS_CAPS = 'IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED';
/**
 * Capabilities of the home Dovecot that survive the gateway: extensions
 * whose commands and responses carry no mailbox names the gateway would have
 * to map, or that it handles. Others (NOTIFY, METADATA, COMPRESS, UTF8=,
 * LIST-EXTENDED, QRESYNC, URLAUTH, CATENATE, QUOTA, …) are not offered.
 */
const PASSED_CAPS = new Set([
  'IMAP4REV1', 'LITERAL+', 'SASL-IR', 'ID', 'ENABLE', 'IDLE', 'SORT', 'SORT=DISPLAY', 'THREAD=REFERENCES', 'THREAD=REFS',
  'THREAD=ORDEREDSUBJECT', 'MULTIAPPEND', 'UNSELECT', 'CHILDREN', 'NAMESPACE', 'UIDPLUS', 'I18NLEVEL=1', 'CONDSTORE', 'ESEARCH',
  'ESORT', 'SEARCHRES', 'WITHIN', 'CONTEXT=SEARCH', 'BINARY', 'MOVE', 'SNIPPET=FUZZY', 'PREVIEW=FUZZY', 'PREVIEW', 'SPECIAL-USE', 'SAVEDATE',
]);
const OWN_CAPS = ['NAMESPACE', 'ACL', 'RIGHTS=texk'];

/** The capabilities offered after login, from the home Dovecot's LOGIN response. */
export function sessionCapabilities(tagged: string): string {
  const m = /\[CAPABILITY ([^\]]*)\]/i.exec(tagged);
  const all: string[] = [];
  for (const c of (m?.[1] ?? 'IMAP4rev1').split(' ')) {
    if (PASSED_CAPS.has(c.toUpperCase()) && !all.some((x) => x.toUpperCase() === c.toUpperCase())) all.push(c);
  }
  for (const c of OWN_CAPS) if (!all.some((x) => x.toUpperCase() === c.toUpperCase())) all.push(c);
  return all.join(' ');
}
const AUTH_FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';

interface LiveSession {
  readonly tenant: string;
  readonly user: string;
  readonly epoch: number;
  readonly session: Session;
}

/**
 * The IMAP side of one backend node. Clients connect to any gateway; after
 * a successful login the session is relayed, byte for byte, to the Dovecot
 * of the node that holds the user. Credentials are checked by Dovecot: the
 * home node's when the user is assigned, else this node's, and only a
 * successful login creates an assignment. When the user's assignment
 * changes (move, failover), the session ends with BYE [UNAVAILABLE] and the
 * client reconnects to the new node.
 */
export class Gateway {
  readonly agent: Agent;
  private readonly server: net.Server;
  private readonly tlsServer: tls.Server | undefined;
  private readonly secureContext: tls.SecureContext | undefined;
  private readonly md = new grpc.Metadata();
  private readonly sessions = new Set<LiveSession>();
  private readonly api: CoordinatorClients;
  private readonly namespace: SharedNamespace;
  private readonly failures = new FailureLimiter();
  private readonly clients = new Set<net.Socket>();

  constructor(private readonly opts: GatewayOptions) {
    this.md.set('authorization', `Bearer ${opts.token}`);
    this.agent = createAgent({
      coordinators: opts.coordinators,
      token: opts.token,
      node: { name: opts.node.name, imapAddress: opts.node.backend, weight: opts.node.weight, zone: opts.node.zone },
      ttlSeconds: opts.ttlSeconds,
      credentials: opts.credentials,
      channelOptions: opts.channelOptions,
      logger: opts.logger,
      // Sessions through other gateways hold the user (HoldUser), so idleness counts every session.
      userExpireMs: opts.userExpireMs ?? 15 * 60_000,
    });
    this.namespace = new SharedNamespace(opts.sharedPrefix ?? 'Shared/');
    this.api = new CoordinatorClients(opts.coordinators, opts.credentials ?? grpc.credentials.createInsecure(), opts.channelOptions);
    this.agent.on('assignmentChanged', ({ tenant, user, after }) => {
      for (const s of this.sessions) {
        if (s.tenant !== tenant) continue;
        if (s.user === user && after?.epoch !== s.epoch) s.session.bye('user moved to another node; reconnect');
        else s.session.ownerMoved(user, after?.epoch);
      }
    });
    this.agent.on('leaseLost', () => {
      for (const s of this.sessions) s.session.bye('node lost its lease; reconnect');
    });
    this.server = net.createServer((socket) => this.handle(socket, false));
    if (opts.listenTls && !opts.tls) throw new Error('listenTls needs tls (certificate and key)');
    if (opts.tls) {
      this.secureContext = tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' });
      if (opts.listenTls) this.tlsServer = tls.createServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, (socket) => this.handle(socket, true));
    }
  }

  async start(): Promise<string> {
    await this.agent.ready;
    const colon = this.opts.listen.lastIndexOf(':');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(Number(this.opts.listen.slice(colon + 1)), this.opts.listen.slice(0, colon), () => resolve());
    });
    if (this.tlsServer) {
      const at = this.opts.listenTls!.lastIndexOf(':');
      await new Promise<void>((resolve, reject) => {
        this.tlsServer!.once('error', reject);
        this.tlsServer!.listen(Number(this.opts.listenTls!.slice(at + 1)), this.opts.listenTls!.slice(0, at), () => resolve());
      });
    }
    return this.address();
  }

  address(): string {
    const a = this.server.address() as net.AddressInfo;
    return `${a.address}:${a.port}`;
  }

  /** Logged-in sessions now open (each holds a home connection, and owner connections as used). */
  get activeSessions(): number {
    return this.sessions.size;
  }

  /** The implicit-TLS address, when listening there. */
  tlsAddress(): string | undefined {
    const a = this.tlsServer?.address() as net.AddressInfo | undefined;
    return a ? `${a.address}:${a.port}` : undefined;
  }

  async close(): Promise<void> {
    const closed = Promise.all([new Promise<void>((r) => this.server.close(() => r())), new Promise<void>((r) => (this.tlsServer ? this.tlsServer.close(() => r()) : r()))]);
    for (const s of this.sessions) s.session.bye('gateway shutting down');
    for (const c of this.clients) c.destroy();
    await closed;
    await this.agent.close();
    this.api.close();
  }

  private handle(client: net.Socket, secure: boolean, greet = true): void {
    this.clients.add(client);
    client.on('close', () => this.clients.delete(client));
    client.setNoDelay(true);
    client.on('error', () => client.destroy());
    const reader = new CommandReader();
    const write = (s: string): void => {
      if (!client.destroyed) client.write(s);
    };
    // With TLS configured, credentials only travel encrypted.
    const plaintextRefused = this.secureContext !== undefined && !secure;
    const caps = plaintextRefused ? PRE_TLS_CAPS : PRE_AUTH_CAPS;
    if (greet) write(`* OK [CAPABILITY ${caps}] mailshare ready\r\n`);
    let saslTag: string | undefined;
    let busy = false;
    /** Runs a login; while it runs the client is paused, afterwards either relayed or read again. */
    const authenticate = (run: () => Promise<boolean>): void => {
      busy = true;
      client.pause();
      void run().then((relaying) => {
        if (relaying) return;
        busy = false;
        client.resume();
        drain();
      });
    };
    const drain = (): void => {
      while (!busy && !client.destroyed) {
        const out = reader.next();
        if (!out) return;
        if (out.kind === 'continue') write('+ Ready for literal data\r\n');
        else if (out.kind === 'bad') write(`${out.tag} BAD ${out.message}\r\n`);
        else if (out.kind === 'line') {
          const tag = saslTag!;
          saslTag = undefined;
          if (out.text === '*') write(`${tag} BAD Authentication cancelled\r\n`);
          else authenticate(() => this.loginPlain(client, reader, tag, out.text));
        } else {
          const { tag, name, args } = out.command;
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
              this.startTls(client);
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
            case 'AUTHENTICATE':
              if (plaintextRefused) {
                write(`${tag} NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first\r\n`);
                break;
              }
              if (name === 'AUTHENTICATE') {
                if ((args[0] ?? '').toUpperCase() !== 'PLAIN') write(`${tag} NO [CANNOT] Only AUTHENTICATE PLAIN is supported\r\n`);
                else if (args[1] !== undefined) authenticate(() => this.loginPlain(client, reader, tag, args[1]!));
                else {
                  saslTag = tag;
                  reader.rawLine = true;
                  write('+ \r\n');
                }
                break;
              }
              if (args.length !== 2) write(`${tag} BAD LOGIN needs a user name and a password\r\n`);
              else authenticate(() => this.login(client, reader, tag, args[0]!, args[1]!));
              break;
            default:
              write(`${tag} BAD ${name} is not valid before login\r\n`);
          }
        }
      }
    };
    client.on('data', (chunk: Buffer) => {
      reader.feed(chunk);
      drain();
    });
  }

  /**
   * RFC 3501 §6.2.1: after the OK the TLS handshake starts; whatever the
   * client sent before it is discarded (a man in the middle could have
   * injected it), and the session starts over with no greeting.
   */
  private startTls(client: net.Socket): void {
    client.removeAllListeners('data');
    client.pause();
    const secure = new tls.TLSSocket(client, { isServer: true, secureContext: this.secureContext });
    secure.once('secure', () => this.handle(secure, true, false));
    secure.on('error', () => client.destroy());
    this.clients.delete(client);
    this.clients.add(secure);
  }

  /** SASL PLAIN (RFC 4616): authzid NUL authcid NUL password, base64. */
  private async loginPlain(client: net.Socket, reader: CommandReader, tag: string, b64: string): Promise<boolean> {
    const parts = Buffer.from(b64, 'base64').toString('utf8').split('\0');
    if (parts.length !== 3 || (parts[0] !== '' && parts[0] !== parts[1])) {
      client.write(`${tag} ${AUTH_FAILED}\r\n`);
      return false;
    }
    return this.login(client, reader, tag, parts[1]!, parts[2]!);
  }

  /** Returns true when the session now relays (the pre-auth reader is done). */
  private async login(client: net.Socket, reader: CommandReader, tag: string, user: string, password: string): Promise<boolean> {
    const ip = client.remoteAddress ?? '?';
    const origin = { ip: (client.remoteAddress ?? '').replace(/^::ffff:/, ''), port: client.remotePort ?? 0 };
    const tenant = this.opts.tenant;
    const fail = async (): Promise<boolean> => {
      this.failures.record(`ip:${ip}`);
      this.failures.record(`user:${user}`);
      await new Promise((r) => setTimeout(r, 200));
      if (!client.destroyed) client.write(`${tag} ${AUTH_FAILED}\r\n`);
      return false;
    };
    if (this.failures.exceeded(`ip:${ip}`, this.opts.maxFailuresPerAddress ?? 10) || this.failures.exceeded(`user:${user}`, this.opts.maxFailuresPerUser ?? 5)) {
      await new Promise((r) => setTimeout(r, 1000));
      if (!client.destroyed) client.write(`${tag} ${AUTH_FAILED}\r\n`);
      return false;
    }
    if (!USER_ID_PATTERN.test(user)) return fail();
    try {
      let where = await this.home(tenant, user, false);
      let login;
      if (where) {
        login = await backendLogin(where.imapAddress, tag, user, password, { client: origin });
        if (!login.ok) return fail();
      } else {
        // Not assigned: this node's Dovecot checks the password; only then assign.
        login = await backendLogin(this.opts.node.backend, tag, user, password, { client: origin });
        if (!login.ok) return fail();
        where = (await this.home(tenant, user, true))!;
        if (where.imapAddress !== this.opts.node.backend) {
          login.socket.end(`${tag}x LOGOUT\r\n`);
          login = await backendLogin(where.imapAddress, tag, user, password, { client: origin });
          if (!login.ok) return fail();
        }
      }
      this.relay(client, reader, login.socket, login.tagged, { tenant, user, epoch: where.epoch, node: where.node });
      return true;
    } catch (err) {
      const why = err instanceof BackendUnavailable ? 'the mail server cannot be reached' : 'mail service unavailable';
      if (!client.destroyed) client.write(`${tag} NO [UNAVAILABLE] Login failed: ${why}. Try again later.\r\n`);
      return false;
    }
  }

  private relay(client: net.Socket, reader: CommandReader, backend: net.Socket, tagged: Buffer, who: { tenant: string; user: string; epoch: number; node: string }): void {
    client.removeAllListeners('data');
    const line = tagged.toString('latin1');
    const capabilities = sessionCapabilities(line);
    const tag = line.slice(0, line.indexOf(' '));
    client.write(`${tag} OK [CAPABILITY ${capabilities}] Logged in\r\n`);
    const session = new Session(
      {
        agent: this.agent,
        tenant: who.tenant,
        user: who.user,
        epoch: who.epoch,
        namespace: this.namespace,
        master: this.opts.master,
        api: this.api,
        metadata: this.md,
        capabilities,
        log: this.opts.logger ?? { info: () => undefined, warn: () => undefined, debug: () => undefined },
      },
      client,
      backend,
      reader.rest(),
    );
    const live: LiveSession = { tenant: who.tenant, user: who.user, epoch: who.epoch, session };
    this.sessions.add(live);
    this.agent.sessionOpened(who.tenant, who.user, who.node);
    const forget = (): void => {
      if (this.sessions.delete(live)) this.agent.sessionClosed(who.tenant, who.user);
    };
    void session.done.finally(forget);
    client.once('close', forget);
    // The assignment may have changed while we logged in.
    const now = this.agent.locate(who.tenant, who.user);
    if (now && now.epoch !== who.epoch && now.revision >= who.epoch) session.bye('user moved to another node; reconnect');
  }

  /**
   * The user's node, from the agent's watch-fed cache (no RPC on the login
   * path); with `assign`, one RPC assigns a node when there is none.
   */
  private async home(tenant: string, user: string, assign: boolean): Promise<{ node: string; epoch: number; imapAddress: string } | undefined> {
    const a = this.agent.locate(tenant, user);
    const imapAddress = a && this.agent.nodeAddress(a.node);
    if (a && imapAddress) return { node: a.node, epoch: a.epoch, imapAddress };
    if (!a && !assign) return undefined;
    return this.agent.assign(tenant, user);
  }

}

export function createGateway(opts: GatewayOptions): Gateway {
  return new Gateway(opts);
}
