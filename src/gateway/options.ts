import type * as grpc from '@grpc/grpc-js';
import type { AgentLogger } from '../agent/agent.js';
import type { BackendTls } from './backend.js';
import type { BackendHealthOptions } from './backend-health.js';
import type { LmtpOptions } from './lmtp/front-end.js';

export interface GatewayOptions {
  /** host:port for IMAP clients; port 0 picks one. */
  listen: string;
  /** Coordinator addresses, used in order (the next one when one is unavailable). */
  coordinators: string[];
  /** To the coordinators; default insecure (loopback). grpc.credentials.createSsl(ca, key, cert) for TLS. */
  credentials?: grpc.ChannelCredentials;
  /** gRPC channel options, e.g. grpc.ssl_target_name_override. */
  channelOptions?: grpc.ClientOptions;
  /** This node's token (role node:<its name>). */
  token: string;
  /** This node: its name, and the address of its own Dovecot (what other gateways reach). */
  node: { name: string; backend: string; weight?: number; zone?: string };
  /** Tenant of every login through this gateway. */
  /**
   * Tenant of logins without a domain. Logins as user@domain go to the
   * tenant that owns the domain, whatever this is; without it, logins
   * without a domain are refused.
   */
  tenant?: string;
  ttlSeconds?: number;
  logger?: AgentLogger;
  /**
   * Failed logins slow the next attempts down, never refuse them: from a
   * client address, each attempt after a failure waits 2^(n-1) × `baseMs`
   * (n failures within a minute) up to `maxMs`; for a user name, attempts
   * from anywhere wait up to `maxUserMs` (the owner's correct password still
   * works, a little later). Defaults 500 ms, 15 s, 2 s.
   */
  loginPenalty?: { baseMs?: number; maxMs?: number; maxUserMs?: number };
  /** Open client connections at most (others get BYE at once); default 10,000. */
  maxConnections?: number;
  /** Open client connections from one address at most; default 500. */
  maxConnectionsPerIp?: number;
  /** A client that has not logged in this long after connecting is disconnected; default 3 minutes (Dovecot's). */
  preLoginTimeoutMs?: number;
  /** A logged-in client silent this long is logged out; default 30 minutes (RFC 3501 §5.4's least). */
  idleTimeoutMs?: number;
  /**
   * Dovecot master user (auth_master_user_separator "*"), used to open
   * owners' mailboxes on their nodes. Without it shared mailboxes answer
   * NO [UNAVAILABLE].
   */
  master?: { user: string; password: string };
  /**
   * When a user moves (move, drain, failover), keep each IMAP client
   * connected and move its session to the new node (state restored, the
   * mailbox reconciled with untagged responses) instead of ending it with
   * BYE. Needs `master`. Default true.
   */
  migrateSessions?: boolean;
  /**
   * A user with no session through any gateway for this long is released
   * (next login may land on another node); default 15 minutes, 0 never.
   */
  userExpireMs?: number;
  /**
   * Which users' assignments the gateway keeps in memory (AgentOptions.assignmentView):
   * "followed" (default) its own node's and those of users with sessions through it;
   * "all" every user's.
   */
  assignmentView?: 'all' | 'followed';
  /** Prefix of the shared namespace (RFC 2342); default "Shared/". */
  sharedPrefix?: string;
  /**
   * Certificate and key (PEM). With them the gateway offers STARTTLS and
   * refuses authentication before it (LOGINDISABLED, RFC 3501 §6.2.3).
   */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /**
   * TLS to the Dovecots (this node's and the others'): their registered
   * addresses are implicit-TLS ports, verified against this CA.
   * Recommended wherever the backend network is not private to the cluster.
   */
  backendTls?: BackendTls;
  /**
   * Connections kept greeted per Dovecot in recent use, ready for logins
   * (default 2; 0: connect for each login).
   */
  backendPool?: number;
  /**
   * Offer AUTH=OAUTHBEARER and AUTH=XOAUTH2: the token goes to the user's
   * home Dovecot, which must verify it (its oauth2 passdb); the gateway only
   * reads the user name to route.
   */
  oauth?: boolean;
  /**
   * Health checks of this node's Dovecot (default: on, every second, down
   * after 3 failures): while it is down the node claims no users (its lease
   * is revoked, with the reason), and logins through this gateway go to
   * other nodes. false turns them off.
   */
  health?: BackendHealthOptions | false;
  /** host:port for implicit TLS (RFC 8314, usually port 993); needs `tls`. */
  listenTls?: string;
  /**
   * POP3 (RFC 1939): `backend` is this node's Dovecot POP3 (registered with
   * the node, so other gateways reach it); `listen` where POP3 clients
   * connect, `listenTls` for implicit TLS (port 995; needs `tls`). With
   * `tls`, STLS is offered and logins before it refused.
   */
  pop3?: { backend: string; listen?: string; listenTls?: string };
  /**
   * LMTP (RFC 2033) for mail delivery: `backend` is this node's Dovecot LMTP
   * (registered with the node); `listen` where MTAs connect (host:port or
   * unix:PATH). Each recipient is delivered by the node that holds the user.
   */
  lmtp?: LmtpOptions;
  /** host:port where Prometheus scrapes /metrics (plain HTTP, no token: counts only); off when absent. */
  metricsListen?: string;
}
