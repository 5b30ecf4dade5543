import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { type Agent, createAgent } from '../agent/agent.js';
import { BackendConnector, type Credentials, backendLogin } from './backend.js';
import { LoginRouter } from './core/login-router.js';
import { Limiter } from './core/limiter.js';
import { dovecotName, resolveName } from '../agent/names.js';
import { AUTH_FAILED, type LoginResult, type PreLoginHost, preLogin } from './imap/prelogin.js';
import { BackendHealth } from './backend-health.js';
import { type CommandParser, POST_LOGIN_LIMITS } from './imap/parser.js';
import { CoordinatorClients } from './coordinators.js';
import { quickAckAvailable } from './quick-ack.js';
import { OwnerPool } from './owner-pool.js';
import { Session } from './session.js';
import type { GatewayOptions } from './options.js';
import { sessionCapabilities } from './imap/capabilities.js';
import type { FencedSession, SessionWho } from './core/sessions.js';
import { Pop3FrontEnd } from './pop3/front-end.js';
import { LmtpFrontEnd } from './lmtp/front-end.js';
import { SharedNamespace } from './shared-namespace.js';
import { GatewayMetrics, type GatewayView } from './metrics.js';
import { HttpListener, metricsRoute } from '../metrics/http-listener.js';

export type { GatewayOptions } from './options.js';

interface LiveSession {
  readonly protocol: 'imap' | 'pop3';
  readonly tenant: string;
  readonly user: string;
  /** The assignment the session began under (FencedSession.epoch, when set, is the one now). */
  readonly epoch: number;
  readonly session: FencedSession;
}

type Protocol = 'imap' | 'pop3' | 'lmtp';

/** Logins of migrating sessions at once, per gateway (the rest wait their turn). */
const MIGRATION_LOGINS = 16;
/**
 * How long this node's sessions have to stop using a user it lets go before it releases the user
 * anyway: a little over a migration's wait for a busy session to come to rest (then it ends).
 */
const LET_GO_MS = 6000;

/** What a client over the limits hears before the connection closes. */
const TOO_MANY: Record<Protocol, string> = {
  imap: '* BYE [UNAVAILABLE] Too many connections, try again later\r\n',
  pop3: '-ERR [SYS/TEMP] Too many connections, try again later.\r\n',
  lmtp: '421 4.3.2 Too many connections, try again later\r\n',
};
const INACTIVE: Record<Protocol, string> = {
  imap: '* BYE Disconnected for inactivity.\r\n',
  pop3: '-ERR Disconnected for inactivity.\r\n',
  lmtp: '421 4.4.2 Timeout, closing connection\r\n',
};

/**
 * The mail side of one backend node: IMAP, and with their options POP3
 * (pop3/) and LMTP delivery (lmtp/). Clients connect to any gateway; after
 * a successful login the session is relayed to the Dovecot of the node
 * that holds the user. Credentials are checked by Dovecot: the
 * home node's when the user is assigned, else this node's, and only a
 * successful login creates an assignment. When the user's assignment
 * changes (move, failover), the session ends with BYE [UNAVAILABLE] and the
 * client reconnects to the new node.
 */
export class Gateway {
  readonly agent: Agent;
  private readonly server: net.Server;
  private readonly tlsServer: tls.Server | undefined;
  private readonly pop3Server: net.Server | undefined;
  private readonly pop3TlsServer: tls.Server | undefined;
  private readonly pop3: Pop3FrontEnd | undefined;
  private readonly lmtpServer: net.Server | undefined;
  private readonly lmtp: LmtpFrontEnd | undefined;
  private readonly secureContext: tls.SecureContext | undefined;
  private readonly md = new grpc.Metadata();
  private readonly sessions = new Set<LiveSession>();
  private readonly api: CoordinatorClients;
  private readonly namespace: SharedNamespace;
  /** Logins: penalties, the serving rule, routing (the protocol-neutral core). */
  private readonly router: LoginRouter;
  private readonly preLoginHost: PreLoginHost;
  /** Every client connection open, with its protocol. */
  private readonly clients = new Map<net.Socket, Protocol>();
  /** Bytes of client connections already closed, by protocol (open ones are read off their sockets). */
  private readonly closedBytes: Record<Protocol, { received: number; sent: number }> = { imap: { received: 0, sent: 0 }, pop3: { received: 0, sent: 0 }, lmtp: { received: 0, sent: 0 } };
  readonly metrics: GatewayMetrics;
  private readonly http: HttpListener | undefined;
  private readonly perIp = new Map<string, number>();
  private readonly backends: BackendConnector;
  /** Owner connections no session needs right now. */
  readonly owners: OwnerPool;
  private readonly health: BackendHealth | undefined;
  /** Migrated sessions' logins at their new nodes, a few at a time. */
  private readonly migrationLogins = new Limiter(MIGRATION_LOGINS);
  /** Pre-login timers of connections not yet logged in. */
  private readonly loginDeadlines = new WeakMap<net.Socket, NodeJS.Timeout>();

  constructor(private readonly opts: GatewayOptions) {
    this.md.set('authorization', `Bearer ${opts.token}`);
    this.agent = createAgent({
      coordinators: opts.coordinators,
      token: opts.token,
      node: {
        name: opts.node.name,
        imapAddress: opts.node.backend,
        addresses: { ...(opts.pop3 ? { pop3: opts.pop3.backend } : {}), ...(opts.lmtp ? { lmtp: opts.lmtp.backend } : {}) },
        weight: opts.node.weight,
        zone: opts.node.zone,
      },
      ttlSeconds: opts.ttlSeconds,
      credentials: opts.credentials,
      channelOptions: opts.channelOptions,
      logger: opts.logger,
      // Sessions through other gateways hold the user (HoldUser), so idleness counts every session.
      userExpireMs: opts.userExpireMs ?? 15 * 60_000,
      assignmentView: opts.assignmentView ?? 'followed',
      // Before this node releases a user, its sessions stop sending there (they move on once the
      // new assignment exists): no command reaches this node after it let the user go.
      onUserLeaving: (u) => this.letGo(u.tenant, u.user, u.epoch, u.kick === true),
    });
    this.namespace = new SharedNamespace(opts.sharedPrefix ?? 'Shared/');
    this.backends = new BackendConnector(opts.backendTls, { pool: opts.backendPool });
    this.preLoginHost = {
      tlsAvailable: opts.tls !== undefined,
      oauth: opts.oauth === true,
      startTls: (client) => this.startTls(client, 'imap'),
      login: (client, reader, tag, user, credentials) => this.login(client, reader, tag, user, credentials),
    };
    this.metrics = new GatewayMetrics(this.agent, this.metricsView());
    this.router = new LoginRouter({ agent: this.agent, node: { name: opts.node.name, backend: opts.node.backend }, penalty: opts.loginPenalty, outcome: (r) => this.metrics.login('imap', r) });
    if (opts.pop3) {
      this.pop3 = new Pop3FrontEnd({
        agent: this.agent,
        // One failed-login count for every protocol: a password guessed over POP3 is guessed for IMAP too.
        router: new LoginRouter({ agent: this.agent, node: { name: opts.node.name, backend: opts.pop3.backend }, penalty: opts.loginPenalty, protocol: 'pop3', failures: this.router.failures, outcome: (r) => this.metrics.login('pop3', r) }),
        defaultTenant: opts.tenant,
        backendTls: opts.backendTls,
        tlsAvailable: opts.tls !== undefined,
        startTls: (client) => this.startTls(client, 'pop3'),
        idleTimeoutMs: 10 * 60_000,
        sessions: { track: (who, session, client) => this.track(who, session, client, 'pop3') },
        loggedIn: (client) => clearTimeout(this.loginDeadlines.get(client)),
      });
    }
    this.api = new CoordinatorClients(opts.coordinators, opts.credentials ?? grpc.credentials.createInsecure(), opts.channelOptions);
    this.owners = new OwnerPool({ released: (key) => this.agent.sessionClosed(key.tenant, key.owner) });
    this.agent.on('assignmentChanged', ({ tenant, user, after, kicked }) => {
      this.owners.dropOwner(tenant, user);
      this.lmtp?.fence(tenant, user, after?.epoch);
      for (const s of this.sessions) {
        if (s.tenant !== tenant) continue;
        if (s.user === user && after?.epoch !== (s.session.epoch ?? s.epoch)) {
          // A kick ends the user's sessions (an operator's word); a move carries them over.
          if (kicked) s.session.bye('an administrator ended this session; reconnect');
          else if (s.session.userMoved) s.session.userMoved();
          else s.session.bye('user moved to another node; reconnect');
        }
        else s.session.ownerMoved(user, after?.epoch);
      }
    });
    this.agent.on('leaseLost', () => {
      this.lmtp?.fenceAll('This server lost its lease; try again later');
      for (const s of this.sessions) s.session.bye('node lost its lease; reconnect');
    });
    // A node that cannot prove its lease, or whose view of the cluster is stale, serves nothing:
    // another node may hold its users by now.
    this.agent.on('servingChanged', ({ serving, reason }) => {
      // Suspended for a dead Dovecot, the node's own users are let go (userLost); sessions relayed
      // to other nodes go on. Otherwise nothing here can be trusted any more.
      if (serving || this.agent.suspended !== undefined) return;
      this.lmtp?.fenceAll('This server cannot reach the rest of the cluster right now; try again later');
      for (const s of this.sessions) s.session.bye(`this server cannot reach the cluster (${reason}); reconnect`);
    });
    if (opts.health !== false) {
      this.health = new BackendHealth(opts.node.backend, { ...opts.health, tls: opts.backendTls, master: opts.master }, (healthy, reason) => {
        opts.logger?.warn({ node: opts.node.name, healthy, reason }, healthy ? 'IMAP server is back; taking users again' : 'IMAP server is down; letting users go');
        if (healthy) this.agent.resume();
        else void this.agent.suspend(reason);
      });
    }
    if (opts.lmtp) {
      this.lmtp = new LmtpFrontEnd({
        agent: this.agent,
        router: new LoginRouter({ agent: this.agent, node: { name: opts.node.name, backend: opts.lmtp.backend }, protocol: 'lmtp' }),
        defaultTenant: opts.tenant,
        node: opts.node.name,
        backendTls: opts.backendTls,
        options: opts.lmtp,
        recipientDone: (code) => this.metrics.lmtpRecipient(code),
      });
      if (opts.lmtp.listen) this.lmtpServer = net.createServer((socket) => this.accept(socket, false, 'lmtp'));
    }
    this.server = net.createServer((socket) => this.accept(socket, false, 'imap'));
    if (opts.metricsListen !== undefined) {
      this.http = new HttpListener({ listen: opts.metricsListen, routes: [metricsRoute(this.metrics.registry)], onError: (err) => opts.logger?.warn({ err: String(err) }, 'metrics handler failed') });
    }
    if (opts.listenTls && !opts.tls) throw new Error('listenTls needs tls (certificate and key)');
    if (opts.pop3?.listenTls && !opts.tls) throw new Error('pop3.listenTls needs tls (certificate and key)');
    if (opts.pop3?.listen) this.pop3Server = net.createServer((socket) => this.accept(socket, false, 'pop3'));
    if (opts.tls) {
      const serverTls = { cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' as const };
      this.secureContext = tls.createSecureContext(serverTls);
      if (opts.listenTls) this.tlsServer = tls.createServer(serverTls, (socket) => this.accept(socket, true, 'imap'));
      if (opts.pop3?.listenTls) this.pop3TlsServer = tls.createServer(serverTls, (socket) => this.accept(socket, true, 'pop3'));
    }
  }

  async start(): Promise<string> {
    await this.agent.ready;
    this.health?.start();
    if (!quickAckAvailable) {
      this.opts.logger?.warn(
        {},
        'TCP_QUICKACK helper not built (build/native; needs a C compiler): clients that leave Nagle on wait ~40 ms per APPEND literal',
      );
    }
    await listen(this.server, this.opts.listen);
    if (this.tlsServer) await listen(this.tlsServer, this.opts.listenTls!);
    if (this.pop3Server) await listen(this.pop3Server, this.opts.pop3!.listen!);
    if (this.pop3TlsServer) await listen(this.pop3TlsServer, this.opts.pop3!.listenTls!);
    if (this.lmtpServer) await listen(this.lmtpServer, this.opts.lmtp!.listen!);
    await this.http?.start();
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
    return boundAddress(this.tlsServer);
  }

  /** Where Prometheus scrapes /metrics, when listening. */
  metricsAddress(): string | undefined {
    return this.http?.listening ? this.http.address() : undefined;
  }

  /** Where MTAs deliver by LMTP (host:port or unix:PATH), when listening. */
  lmtpAddress(): string | undefined {
    if (this.opts.lmtp?.listen?.startsWith('unix:')) return this.lmtpServer?.listening ? this.opts.lmtp.listen : undefined;
    return boundAddress(this.lmtpServer);
  }

  /** Where POP3 clients connect (plain/STLS, and implicit TLS), when listening. */
  pop3Addresses(): { plain?: string; tls?: string } {
    return { plain: boundAddress(this.pop3Server), tls: boundAddress(this.pop3TlsServer) };
  }

  async close(): Promise<void> {
    this.health?.stop();
    this.lmtp?.close();
    const closed = Promise.all([this.server, this.tlsServer, this.pop3Server, this.pop3TlsServer, this.lmtpServer].map((srv) => new Promise<void>((r) => (srv ? srv.close(() => r()) : r()))));
    for (const s of this.sessions) s.session.bye('gateway shutting down');
    for (const c of this.clients.keys()) c.destroy();
    await closed;
    await this.http?.close();
    this.backends.close();
    this.owners.close();
    await this.agent.close();
    this.api.close();
  }

  /** A new client connection: counted against the limits, then greeted (or told BYE). */
  private accept(client: net.Socket, secure: boolean, protocol: Protocol): void {
    client.on('error', () => client.destroy());
    const ip = clientIp(client);
    const fromIp = this.perIp.get(ip) ?? 0;
    if (this.clients.size >= (this.opts.maxConnections ?? 10_000) || fromIp >= (this.opts.maxConnectionsPerIp ?? 500)) {
      client.end(TOO_MANY[protocol]);
      return;
    }
    this.perIp.set(ip, fromIp + 1);
    client.once('close', () => {
      const n = (this.perIp.get(ip) ?? 1) - 1;
      if (n <= 0) this.perIp.delete(ip);
      else this.perIp.set(ip, n);
    });
    this.handle(client, secure, protocol);
  }

  private handle(client: net.Socket, secure: boolean, protocol: Protocol, greet = true): void {
    this.clients.set(client, protocol);
    client.on('close', () => this.forgetClient(client));
    client.setNoDelay(true);
    client.on('error', () => client.destroy());
    // LMTP has no login: its session keeps its own idle timeout.
    if (protocol === 'lmtp') return this.lmtp!.handle(client);
    // As Dovecot's login processes: a client has 3 minutes from connecting to log in, however busy.
    const loginDeadline = setTimeout(() => {
      client.end(INACTIVE[protocol]);
      client.destroySoon();
    }, this.opts.preLoginTimeoutMs ?? 180_000);
    client.once('close', () => clearTimeout(loginDeadline));
    this.loginDeadlines.set(client, loginDeadline);
    if (protocol === 'pop3') this.pop3!.handle(client, secure, greet);
    else preLogin(this.preLoginHost, client, secure, greet);
  }

  /**
   * RFC 3501 §6.2.1: after the OK the TLS handshake starts; whatever the
   * client sent before it is discarded (a man in the middle could have
   * injected it), and the session starts over with no greeting.
   */
  private startTls(client: net.Socket, protocol: Protocol): void {
    client.removeAllListeners('data');
    // The TLS socket over it gets a login deadline of its own once the handshake is done (a BYE
    // written here would not be TLS); a handshake gets 30 s.
    clearTimeout(this.loginDeadlines.get(client));
    const handshake = setTimeout(() => client.destroy(), 30_000);
    client.pause();
    const secure = new tls.TLSSocket(client, { isServer: true, secureContext: this.secureContext });
    secure.once('secure', () => {
      clearTimeout(handshake);
      this.handle(secure, true, protocol, false);
    });
    secure.once('close', () => clearTimeout(handshake));
    secure.on('error', () => client.destroy());
    this.forgetClient(client);
    this.clients.set(secure, protocol);
  }

  /** A client connection is gone (or became TLS): its bytes so far join the closed ones. */
  private forgetClient(socket: net.Socket): void {
    const protocol = this.clients.get(socket);
    if (protocol === undefined) return;
    this.clients.delete(socket);
    this.closedBytes[protocol].received += socket.bytesRead;
    this.closedBytes[protocol].sent += socket.bytesWritten;
  }

  /** What the metrics read at scrape time. */
  private metricsView(): GatewayView {
    return {
      sessions: () => {
        const out: Record<string, number> = { imap: 0, ...(this.pop3 ? { pop3: 0 } : {}) };
        for (const s of this.sessions) out[s.protocol] = (out[s.protocol] ?? 0) + 1;
        return out;
      },
      connections: () => {
        const out: Record<string, number> = { imap: 0, ...(this.pop3 ? { pop3: 0 } : {}), ...(this.lmtp ? { lmtp: 0 } : {}) };
        for (const p of this.clients.values()) out[p] = (out[p] ?? 0) + 1;
        return out;
      },
      clientBytes: () => {
        const out: Record<string, { received: number; sent: number }> = {};
        for (const [p, b] of Object.entries(this.closedBytes)) out[p] = { ...b };
        for (const [socket, p] of this.clients) {
          out[p]!.received += socket.bytesRead;
          out[p]!.sent += socket.bytesWritten;
        }
        if (!this.pop3) delete out.pop3;
        if (!this.lmtp) delete out.lmtp;
        return out;
      },
      ownerConnections: () => {
        let inUse = 0;
        for (const s of this.sessions) if (s.session instanceof Session) inUse += s.session.owners.size;
        return { inUse, idle: this.owners.size };
      },
    };
  }

  /** Returns true when the session now relays (the pre-auth reader is done). */
  private async login(client: net.Socket, reader: CommandParser, tag: string, user: string, password: string | Credentials): Promise<LoginResult> {
    const ip = clientIp(client);
    const origin = { ip, port: client.remotePort ?? 0 };
    // user@domain: the tenant that owns the domain; no domain: this gateway's tenant. Neither is
    // refused by the router like a wrong password (after the same penalty; nothing is written).
    const { tenant: known, user: local, dovecotUser } = resolveName(this.agent, this.opts.tenant, user);
    const out = await this.router.login({
      tenant: known,
      user: local,
      ip,
      attempt: (address) => backendLogin(address, tag, dovecotUser, password, { client: origin, via: this.backends }),
      abandon: (login) => {
        login.socket.end(`${tag}x LOGOUT\r\n`);
      },
      gone: () => client.destroyed,
    });
    if (!out || client.destroyed) return false;
    switch (out.kind) {
      case 'ok':
        this.relay(client, reader, out.login.socket, out.login.tagged, { tenant: known!, user: local, epoch: out.home.epoch, node: out.home.node });
        return true;
      case 'refused':
        client.write(`${tag} NO ${out.code} ${out.text}\r\n`);
        return false;
      case 'failed':
        // An OAuth failure's reason (base64 JSON) reaches the client as the server's challenge first.
        if (out.challenge !== undefined && /^[A-Za-z0-9+/]*={0,2}$/.test(out.challenge)) return { challenge: out.challenge, final: `${tag} ${AUTH_FAILED}\r\n` };
        client.write(`${tag} ${AUTH_FAILED}\r\n`);
        return false;
      case 'unavailable':
        if (out.cause === 'cluster') return this.unavailable(client, tag);
        client.write(`${tag} NO [UNAVAILABLE] Login failed: ${out.cause === 'backend' ? 'the mail server cannot be reached' : 'mail service unavailable'}. Try again later.\r\n`);
        return false;
    }
    return false;
  }

  private dovecotName(tenant: string, user: string): string {
    return dovecotName(this.agent, tenant, user);
  }


  private unavailable(client: net.Socket, tag: string): false {
    if (!client.destroyed) client.write(`${tag} NO [UNAVAILABLE] This server cannot reach the rest of the cluster right now. Try again later.\r\n`);
    return false;
  }

  private relay(client: net.Socket, reader: CommandParser, backend: net.Socket, tagged: Buffer, who: { tenant: string; user: string; epoch: number; node: string }): void {
    client.removeAllListeners('data');
    clearTimeout(this.loginDeadlines.get(client));
    client.setTimeout(this.opts.idleTimeoutMs ?? 30 * 60_000, () => session.bye('Disconnected for inactivity'));
    reader.setLimits(POST_LOGIN_LIMITS);
    const line = tagged.toString('latin1');
    const capabilities = sessionCapabilities(line);
    const tag = line.slice(0, line.indexOf(' '));
    client.write(`${tag} OK [CAPABILITY ${capabilities}] Logged in\r\n`);
    const migrate = this.opts.migrateSessions !== false && this.opts.master !== undefined;
    const session = new Session(
      {
        agent: this.agent,
        tenant: who.tenant,
        user: who.user,
        dovecotName: (owner) => this.dovecotName(who.tenant, owner),
        epoch: who.epoch,
        client: { ip: clientIp(client), port: client.remotePort ?? 0 },
        namespace: this.namespace,
        master: this.opts.master,
        backends: this.backends,
        ownerPool: this.owners,
        api: this.api,
        metadata: this.md,
        capabilities,
        log: this.opts.logger ?? { info: () => undefined, warn: () => undefined, debug: () => undefined },
        metrics: this.metrics,
        migration: migrate
          ? {
              leaseTtlMs: (this.opts.ttlSeconds ?? 5) * 1000,
              logins: this.migrationLogins,
              migrated: (node) => {
                // The session now counts for the new node (a hold, if that is another node's).
                this.agent.sessionOpened(who.tenant, who.user, node);
                this.agent.sessionClosed(who.tenant, who.user);
              },
            }
          : undefined,
      },
      client,
      backend,
      reader,
    );
    this.track(who, session, client, 'imap');
  }

  /**
   * This node is about to release `user` (assignment `epoch`): pooled owner
   * connections to the user's mailboxes close, deliveries not yet final fail
   * as temporary, and every session stops sending there (IMAP sessions
   * migrate, the others end), within LET_GO_MS; the release follows.
   */
  private async letGo(tenant: string, user: string, epoch: number, kick: boolean): Promise<void> {
    this.owners.dropOwner(tenant, user);
    this.lmtp?.fence(tenant, user, undefined);
    const waits: Array<Promise<void>> = [];
    for (const s of this.sessions) {
      if (s.tenant !== tenant) continue;
      if (s.session.letGo) waits.push(s.session.letGo(user, epoch, kick).catch(() => undefined));
      else if (s.user === user) s.session.bye(kick ? 'an administrator ended this session; reconnect' : 'user moved to another node; reconnect');
    }
    if (waits.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(waits), new Promise<void>((r) => (timer = setTimeout(r, LET_GO_MS)))]);
    clearTimeout(timer);
  }

  /**
   * Registers a logged-in session for fencing and idle expiry: it ends when
   * the user's assignment changes or the node may no longer serve, and the
   * agent counts it as the user's.
   */
  private track(who: SessionWho, session: FencedSession, client: net.Socket, protocol: 'imap' | 'pop3'): void {
    const live: LiveSession = { protocol, tenant: who.tenant, user: who.user, epoch: who.epoch, session };
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
}

/** Listens on host:port, or on unix:PATH (a socket file left by an earlier run is replaced). */
async function listen(server: net.Server, at: string): Promise<void> {
  if (at.startsWith('unix:')) {
    const file = at.slice(5);
    const { rmSync, statSync } = await import('node:fs');
    try {
      if (statSync(file).isSocket()) rmSync(file);
    } catch {
      // none there
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    // As Dovecot's own LMTP socket (mode 0666): the MTA beside the gateway runs as another user;
    // who may reach the socket is the directory's to say.
    const { chmodSync } = await import('node:fs');
    chmodSync(file, 0o666);
    return;
  }
  const colon = at.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(at.slice(colon + 1)), at.slice(0, colon), () => resolve());
  });
}

function boundAddress(server: net.Server | undefined): string | undefined {
  const a = server?.address() as net.AddressInfo | null | undefined;
  return a ? `${a.address}:${a.port}` : undefined;
}

function clientIp(client: net.Socket): string {
  return (client.remoteAddress ?? '?').replace(/^::ffff:/, '');
}

/** A LOGIN argument as the client's bytes (latin1 from the parser) read as UTF-8. */

export function createGateway(opts: GatewayOptions): Gateway {
  return new Gateway(opts);
}
