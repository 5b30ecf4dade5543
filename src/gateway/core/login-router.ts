import type { Agent } from '../../agent/agent.js';
import { USER_ID_PATTERN } from '../../domain/ids.js';
import { type BackendLogin, BackendUnavailable } from '../backend.js';
import { FailureLimiter } from '../failure-limiter.js';

/** Where a user is served: the node, the epoch of the assignment, and that node's backend address. */
export interface Home {
  readonly node: string;
  readonly epoch: number;
  readonly address: string;
}

/**
 * How a login through a front end ended, in no protocol's words (the IMAP
 * front end says them; LMTP and POP3 front ends will too).
 */
export type LoginOutcome =
  /** Logged in at the user's home node: relay from here. */
  | { readonly kind: 'ok'; readonly login: BackendLogin; readonly home: Home }
  /** Wrong credentials (counted for the penalties); `challenge`: an OAuth error for the client. */
  | { readonly kind: 'failed'; readonly challenge?: string }
  /** The backend refused for another reason (e.g. a connection limit): its response code and text. */
  | { readonly kind: 'refused'; readonly code: string; readonly text: string }
  /** This node cannot serve now (no provable lease or fresh view), or the backend cannot be reached. */
  | { readonly kind: 'unavailable'; readonly cause: 'cluster' | 'backend' | 'service' };

/** One login to route: who, from where, and how to try it in the front end's protocol. */
export interface LoginRequest {
  /** undefined: no tenant owns the login's domain (or it has none and there is no default): refused as a wrong password. */
  tenant: string | undefined;
  user: string;
  /** The client's address (penalties count per address). */
  ip: string;
  attempt: (address: string) => Promise<BackendLogin>;
  /**
   * A login at the checking node that is not the user's node: let it go.
   * A promise: the login at the home node waits for it (a POP3 session
   * holds the maildrop's lock until it has quit).
   */
  abandon: (login: BackendLogin) => void | Promise<void>;
  /** The client went away while the penalty ran. */
  gone: () => boolean;
}

export interface LoginPenalty {
  readonly baseMs?: number;
  readonly maxMs?: number;
  readonly maxUserMs?: number;
}

/**
 * The protocol-neutral core of a front end's login: failed-login penalties
 * (they slow attempts down, never refuse one), the serving rule (a node
 * that cannot prove its lease serves nothing), routing through the agent's
 * cache (the user's node, or this node's backend checks the credentials
 * and only then is a node assigned), and fencing of the result (the node
 * must still serve when the login is done). `attempt` logs in at an address
 * in the front end's protocol.
 */
export class LoginRouter {
  readonly failures: FailureLimiter;

  constructor(
    private readonly opts: {
      agent: Agent;
      /** This node: its name and its backend's address for the protocol. */
      node: { name: string; backend: string };
      penalty?: LoginPenalty;
      /** Which of the nodes' servers logins go to (default "imap"). */
      protocol?: string;
      /** Failed logins counted with other front ends' (one limit for every protocol). */
      failures?: FailureLimiter;
      /** Told how each login ended: ok, failed, refused, unavailable (the login metrics). */
      outcome?: (result: LoginOutcome['kind']) => void;
    },
  ) {
    this.failures = opts.failures ?? new FailureLimiter();
  }

  private get protocol(): string {
    return this.opts.protocol ?? 'imap';
  }

  /**
   * Whether logins may be served: the node holds a provable lease and a fresh
   * view; or, while its own backend is down (suspended), a fresh view is
   * enough to route users to other nodes.
   */
  mayServe(): boolean {
    const a = this.opts.agent;
    return a.serving || (a.suspended !== undefined && a.viewFresh);
  }

  async login(req: LoginRequest): Promise<LoginOutcome | undefined> {
    const out = await this.route(req);
    if (out) this.opts.outcome?.(out.kind);
    return out;
  }

  private async route(req: LoginRequest): Promise<LoginOutcome | undefined> {
    const { tenant, user, ip } = req;
    const penalty = this.opts.penalty ?? {};
    // After failures from this address, and, less, after failures for this name from anywhere.
    const byIp = this.failures.count(`ip:${ip}`);
    const byUser = this.failures.count(`user:${user}`);
    const waitMs = Math.max(
      byIp === 0 ? 0 : Math.min(penalty.maxMs ?? 15_000, (penalty.baseMs ?? 500) * 2 ** (byIp - 1)),
      byUser === 0 ? 0 : Math.min(penalty.maxUserMs ?? 2000, (penalty.baseMs ?? 500) * 2 ** (byUser - 1)),
    );
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
    if (req.gone()) return undefined;
    if (!this.mayServe()) return { kind: 'unavailable', cause: 'cluster' };
    const failed = (login?: BackendLogin): LoginOutcome => {
      // Refused for another reason than the credentials: the client hears that reason, and it is no failed login.
      if (login?.refusal) return { kind: 'refused', code: login.refusal.code, text: login.refusal.text };
      this.failures.record(`ip:${ip}`);
      this.failures.record(`user:${user}`);
      return login?.challenge !== undefined ? { kind: 'failed', challenge: login.challenge } : { kind: 'failed' };
    };
    if (tenant === undefined || !USER_ID_PATTERN.test(user)) return failed();
    try {
      let home = await this.home(tenant, user, false);
      let login: BackendLogin;
      if (home) {
        login = await req.attempt(home.address);
        if (!login.ok) return failed(login);
      } else {
        // Not assigned: this node's backend checks the credentials (another live node's while ours is
        // down: all of them share the user database); only then assign.
        const checker = this.opts.agent.suspended === undefined ? this.opts.node.backend : this.otherBackend();
        if (!checker) return { kind: 'unavailable', cause: 'cluster' };
        login = await req.attempt(checker);
        if (!login.ok) return failed(login);
        home = (await this.home(tenant, user, true))!;
        if (home.address !== checker) {
          await req.abandon(login);
          login = await req.attempt(home.address);
          if (!login.ok) return failed(login);
        }
      }
      // The login took a while: serve only if the node still may.
      if (!this.mayServe()) {
        login.socket.destroy();
        return { kind: 'unavailable', cause: 'cluster' };
      }
      return { kind: 'ok', login, home };
    } catch (err) {
      // The backend could not be reached, or the coordinators could not assign a node.
      return { kind: 'unavailable', cause: err instanceof BackendUnavailable ? 'backend' : 'service' };
    }
  }

  /**
   * The user's node, from the agent's watch-fed cache (no RPC on the login
   * path; with assignmentView "followed", a user not followed yet is asked
   * of the coordinator once on the event stream); with `assign`, one RPC
   * assigns a node when there is none.
   */
  async home(tenant: string, user: string, assign: boolean): Promise<Home | undefined> {
    const agent = this.opts.agent;
    // From memory; a gateway that keeps only the users it follows asks the coordinator on a miss.
    const a = await agent.lookup(tenant, user);
    const address = a && agent.nodeAddress(a.node, this.protocol);
    if (a && address) return { node: a.node, epoch: a.epoch, address };
    if (a && agent.nodeAddress(a.node) !== undefined) throw new BackendUnavailable(`node ${a.node} registered no ${this.protocol} server`);
    if (!a && !assign) return undefined;
    const assigned = await agent.assign(tenant, user);
    const at = this.protocol === 'imap' ? assigned.imapAddress : agent.nodeAddress(assigned.node, this.protocol);
    if (!at) throw new BackendUnavailable(`node ${assigned.node} registered no ${this.protocol} server`);
    return { node: assigned.node, epoch: assigned.epoch, address: at };
  }

  /** Another live node's backend (to check credentials while ours is down). */
  private otherBackend(): string | undefined {
    const others = this.opts.agent.liveNodes(this.protocol).filter((n) => n.node !== this.opts.node.name);
    return others[Math.floor(Math.random() * others.length)]?.address;
  }
}
