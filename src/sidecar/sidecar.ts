import { type ChildProcess, spawn } from 'node:child_process';
import type * as grpc from '@grpc/grpc-js';
import { type Agent, type AgentLogger, createAgent } from '../agent/agent.js';
import { addAgentGauges } from '../agent/metrics.js';
import { dovecotName, resolveName } from '../agent/names.js';
import { HttpListener, metricsRoute } from '../metrics/http-listener.js';
import { Counter, Gauge, type Registry, createRegistry } from '../metrics/registry.js';
import { Doveadm, type DoveadmOptions, type DovecotSession } from './doveadm.js';
import { WATCHDOG_STOP } from './watchdog-stop.js';

export interface SidecarOptions {
  coordinators: string[];
  credentials?: grpc.ChannelCredentials;
  channelOptions?: grpc.ClientOptions;
  /** This node's token (role node:<its name>). */
  token: string;
  /** This node: its name, its Dovecot's IMAP address, and its other protocols' (pop3, lmtp, sieve, submission). */
  node: { name: string; imap: string; addresses?: Record<string, string>; weight?: number; zone?: string };
  /** Tenant of Dovecot login names without a domain. */
  tenant?: string;
  ttlSeconds?: number;
  /** A user with no session on any node for this long is released; default 15 minutes, 0 never. */
  userExpireMs?: number;
  /** Which users' assignments the agent keeps (AgentOptions.assignmentView); default "followed". */
  assignmentView?: 'all' | 'followed';
  doveadm?: DoveadmOptions;
  /** How often Dovecot is asked who is logged in (doveadm who); default 1 s. */
  whoIntervalMs?: number;
  /** host:port for Prometheus /metrics; off when absent. */
  metricsListen?: string;
  /**
   * host:port of the login check the local Dovecot's userdb asks before every login and
   * delivery (deploy/dovecot/mailshare-check.lua): POST /v1/check {"user"} answers 200 only
   * for a user this node holds under a lease it can prove. Off when absent.
   */
  checkListen?: string;
  /** How long a check waits for an assignment made a moment ago to reach this node's view; default 2 s. */
  checkWaitMs?: number;
  /**
   * The watchdog process (the compiled watchdog.js) that kicks every local session if this
   * process dies without letting its users go (kill -9, a crash). Off when absent.
   */
  watchdogScript?: string;
  logger?: AgentLogger;
}

/** What the login check answers: 200 with the assignment, or why not. */
export interface CheckAnswer {
  status: 200 | 400 | 403 | 404 | 503;
  body: { tenant: string; user: string; epoch: number } | { error: string };
}

/**
 * `mailshare agent`: the sidecar of a stock Dovecot backend, for clusters
 * whose proxies are Dovecot's own (no mailshare gateway in front). It
 * registers the node with every protocol's address and keeps its lease
 * (the agent SDK), and enforces the assignment on the local Dovecot: a
 * user who leaves this node (move, drain, kick) has their sessions kicked
 * before the node releases them, the node that loses its lease or its view
 * of the cluster kicks everyone, and a session of a user this node does
 * not hold (seen twice in a row) is kicked too. Who is logged in comes
 * from Dovecot itself (doveadm who, every protocol), reported to the agent
 * so idle users expire as with the gateway.
 */
export class Sidecar {
  readonly agent: Agent;
  readonly registry: Registry = createRegistry();
  private readonly doveadm: Doveadm;
  private readonly http: HttpListener | undefined;
  private readonly checkHttp: HttpListener | undefined;
  private readonly checks: Counter;
  private watchdog: ChildProcess | undefined;
  /** Users being let go ("tenant/user" → the epoch they leave under): no new logins meanwhile. */
  private readonly leaving = new Map<string, number>();
  /** Checks waiting for a user's assignment to reach this node ("tenant/user" → their wake-ups). */
  private readonly assignedWaiters = new Map<string, Set<() => void>>();
  private readonly kicks: Counter;
  private readonly doveadmErrors: Counter;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  /** Users with sessions here at the last poll ("tenant/user"), and those seen that are not ours. */
  private present = new Map<string, { tenant: string; user: string; logins: Set<string> }>();
  private strays = new Set<string>();
  private lastSessions: DovecotSession[] = [];
  private closed = false;
  private readonly log: AgentLogger;

  constructor(private readonly opts: SidecarOptions) {
    this.log = opts.logger ?? { info: () => undefined, warn: () => undefined, debug: () => undefined };
    this.doveadm = new Doveadm(opts.doveadm);
    this.agent = createAgent({
      coordinators: opts.coordinators,
      token: opts.token,
      credentials: opts.credentials,
      channelOptions: opts.channelOptions,
      node: { name: opts.node.name, imapAddress: opts.node.imap, addresses: opts.node.addresses ?? {}, weight: opts.node.weight, zone: opts.node.zone },
      ttlSeconds: opts.ttlSeconds,
      logger: opts.logger,
      userExpireMs: opts.userExpireMs ?? 15 * 60_000,
      assignmentView: opts.assignmentView ?? 'followed',
      // The old node lets a user go only once Dovecot has ended their sessions.
      onUserLeaving: (u) => {
        this.leaving.set(`${u.tenant}/${u.user}`, u.epoch);
        return this.kick(u.tenant, u.user, 'moved');
      },
    });
    const registers = [this.registry];
    addAgentGauges(this.registry, this.agent);
    this.kicks = new Counter({ name: 'mailshare_agent_kicks_total', help: 'doveadm kicks by reason (moved: the user left this node; lease: the node lost its lease or view; stray: a session of a user this node does not hold) and result.', labelNames: ['reason', 'result'], registers });
    this.checks = new Counter({ name: 'mailshare_agent_login_checks_total', help: "Login checks the local Dovecot asked (deploy/dovecot/mailshare-check.lua), by answer: ok, not_held (another node's user, or nobody's), leaving, not_serving, unknown.", labelNames: ['result'], registers });
    this.doveadmErrors = new Counter({ name: 'mailshare_agent_doveadm_errors_total', help: 'doveadm calls that failed, by command.', labelNames: ['command'], registers });
    const sessions: Gauge = new Gauge({
      name: 'mailshare_agent_dovecot_sessions',
      help: 'Connections logged in at the local Dovecot (doveadm who), by protocol.',
      labelNames: ['protocol'],
      registers,
      collect: () => {
        sessions.reset();
        const by = new Map<string, number>();
        for (const s of this.lastSessions) by.set(s.protocol, (by.get(s.protocol) ?? 0) + s.connections);
        for (const [protocol, n] of by) sessions.set({ protocol }, n);
      },
    });
    // One listener for every waiting check (a burst of logins to a fresh node waits by the hundred).
    this.agent.on('userAssigned', (u) => {
      for (const wake of [...(this.assignedWaiters.get(`${u.tenant}/${u.user}`) ?? [])]) wake();
    });
    this.agent.on('leaseLost', () => void this.kickAll('the node lost its lease'));
    this.agent.on('servingChanged', ({ serving, reason }) => {
      if (!serving) void this.kickAll(reason);
    });
    if (opts.metricsListen !== undefined) {
      this.http = new HttpListener({ listen: opts.metricsListen, routes: [metricsRoute(this.registry)], onError: (err) => this.log.warn({ err: String(err) }, 'metrics handler failed') });
    }
    if (opts.checkListen !== undefined) {
      this.checkHttp = new HttpListener({
        listen: opts.checkListen,
        maxBodyBytes: 4096,
        routes: [
          {
            method: 'POST',
            path: '/v1/check',
            handle: async (_req, body) => {
              let user: unknown;
              try {
                user = (JSON.parse(body.toString('utf8')) as { user?: unknown }).user;
              } catch {
                user = undefined;
              }
              const a: CheckAnswer = typeof user === 'string' && user !== '' ? await this.check(user) : { status: 400, body: { error: 'user: a JSON body {"user": "NAME"} is required' } };
              return { status: a.status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(a.body) };
            },
          },
        ],
        onError: (err) => this.log.warn({ err: String(err) }, 'login check failed'),
      });
    }
  }

  /**
   * May the local Dovecot let `login` (a name as Dovecot sees it) in, or
   * deliver to them? Only while this node holds the user under a lease it
   * can prove and is not letting them go. A user assigned a moment ago
   * (the proxy's route call made the assignment, then sent the login here)
   * may not be in this node's view yet: the check waits for it, briefly.
   */
  async check(login: string): Promise<CheckAnswer> {
    const named = resolveName(this.agent, this.opts.tenant, login);
    if (named.tenant === undefined) {
      this.checks.inc({ result: 'unknown' });
      return { status: 404, body: { error: `${login}: no tenant has this login domain` } };
    }
    const { tenant, user } = named;
    const k = `${tenant}/${user}`;
    const verdict = (final: boolean): CheckAnswer | undefined => {
      if (!this.agent.serving) return this.answer('not_serving', 503, 'this node cannot prove its lease');
      const a = this.agent.locate(tenant, user);
      if (a !== undefined && this.leaving.get(k) === a.epoch) return this.answer('leaving', 503, `${login} is leaving this node`);
      if (a !== undefined && this.agent.isHolding(tenant, user)) {
        this.checks.inc({ result: 'ok' });
        return { status: 200, body: { tenant, user, epoch: a.epoch } };
      }
      return final ? this.answer('not_held', 403, `${login} is not this node's user (${a ? `node ${a.node} holds them` : 'no node holds them'})`) : undefined;
    };
    const now = verdict(false);
    if (now) return now;
    await new Promise<void>((resolve) => {
      const waiters = this.assignedWaiters.get(k) ?? new Set<() => void>();
      this.assignedWaiters.set(k, waiters);
      const done = (): void => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && this.assignedWaiters.get(k) === waiters) this.assignedWaiters.delete(k);
        resolve();
      };
      const timer = setTimeout(done, this.opts.checkWaitMs ?? 2000);
      waiters.add(done);
    });
    return verdict(true)!;
  }

  private answer(result: string, status: 403 | 503, error: string): CheckAnswer {
    this.checks.inc({ result });
    return { status, body: { error } };
  }

  async start(): Promise<void> {
    if (this.opts.watchdogScript !== undefined) this.startWatchdog(this.opts.watchdogScript);
    await this.agent.ready;
    await this.http?.start();
    await this.checkHttp?.start();
    const every = this.opts.whoIntervalMs ?? 1000;
    const tick = (): void => {
      this.polling = this.poll().finally(() => {
        if (!this.closed) this.timer = setTimeout(tick, every);
      });
    };
    tick();
  }

  metricsAddress(): string | undefined {
    return this.http?.listening ? this.http.address() : undefined;
  }

  checkAddress(): string | undefined {
    return this.checkHttp?.listening ? this.checkHttp.address() : undefined;
  }

  /** Its own process group: a Ctrl-C or a signal to this process's group does not reach it. */
  private startWatchdog(script: string): void {
    const child = spawn(process.execPath, [script, JSON.stringify(this.opts.doveadm ?? {})], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    child.stdin!.on('error', () => undefined);
    child.once('exit', (code, signal) => {
      if (this.watchdog !== child || this.closed) return;
      // Someone stopped it: start another, the node must not run unguarded.
      this.log.warn({ code, signal }, 'the watchdog exited; starting it again');
      this.startWatchdog(script);
    });
    this.watchdog = child;
  }

  /** Graceful: every user leaves (kicked, then released), the lease is revoked, polling stops. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    await this.polling?.catch(() => undefined);
    await this.agent.close();
    await this.http?.close();
    await this.checkHttp?.close();
    // Every user was let go: the watchdog has nothing to kick.
    const w = this.watchdog;
    this.watchdog = undefined;
    if (w?.stdin && !w.stdin.destroyed) await new Promise<void>((r) => w.stdin!.end(WATCHDOG_STOP, () => r()));
  }

  /** Ends the user's sessions; `login` the name Dovecot shows them by (default: user@primary domain). */
  private async kick(tenant: string, user: string, reason: string, login = dovecotName(this.agent, tenant, user)): Promise<void> {
    try {
      await this.doveadm.kick(login);
      this.kicks.inc({ reason, result: 'ok' });
      this.log.info({ tenant, user, reason }, 'sessions kicked');
    } catch (err) {
      this.kicks.inc({ reason, result: 'failed' });
      this.doveadmErrors.inc({ command: 'kick' });
      this.log.warn({ tenant, user, err: String(err) }, 'kick failed');
      throw err;
    }
  }

  private async kickAll(why: string): Promise<void> {
    if (this.closed) return;
    try {
      await this.doveadm.kickAll();
      this.kicks.inc({ reason: 'lease', result: 'ok' });
      this.log.warn({ why }, 'every session kicked');
    } catch (err) {
      this.kicks.inc({ reason: 'lease', result: 'failed' });
      this.doveadmErrors.inc({ command: 'kick' });
      this.log.warn({ why, err: String(err) }, 'kicking every session failed');
    }
  }

  /** Who is logged in now: sessions reported to the agent, strays kicked. */
  private async poll(): Promise<void> {
    let sessions: DovecotSession[];
    try {
      sessions = await this.doveadm.who();
    } catch (err) {
      this.doveadmErrors.inc({ command: 'who' });
      this.log.warn({ err: String(err) }, 'doveadm who failed');
      return;
    }
    this.lastSessions = sessions;
    const now = new Map<string, { tenant: string; user: string; logins: Set<string> }>();
    for (const s of sessions) {
      const named = resolveName(this.agent, this.opts.tenant, s.user);
      if (named.tenant === undefined) continue;
      const k = `${named.tenant}/${named.user}`;
      const seen = now.get(k) ?? { tenant: named.tenant, user: named.user, logins: new Set<string>() };
      seen.logins.add(s.user);
      now.set(k, seen);
    }
    for (const [k, u] of now) if (!this.present.has(k)) this.agent.sessionOpened(u.tenant, u.user, this.opts.node.name);
    for (const [k, u] of this.present) if (!now.has(k)) this.agent.sessionClosed(u.tenant, u.user);
    this.present = now;
    // A session of a user this node does not hold: twice in a row (an assignment made a moment
    // ago may not have reached this node's view yet), while the view is fresh.
    const strays = new Set<string>();
    if (!this.agent.serving) {
      // Nobody is provably this node's: whoever logged in meanwhile goes too.
      if (sessions.length > 0) await this.kickAll('the node cannot prove its lease');
    } else {
      for (const [k, u] of now) {
        if (this.agent.isHolding(u.tenant, u.user)) continue;
        // By the names it logged in with: a direct login may use another of the tenant's domains.
        // A user this node let go is no lag of its view: at once.
        if (this.strays.has(k) || this.leaving.has(k)) for (const login of u.logins) await this.kick(u.tenant, u.user, 'stray', login).catch(() => undefined);
        else strays.add(k);
      }
    }
    this.strays = strays;
    // A user let go (or back under a new epoch) is no longer leaving.
    for (const [k, epoch] of this.leaving) {
      const slash = k.indexOf('/');
      if (this.agent.locate(k.slice(0, slash), k.slice(slash + 1))?.epoch !== epoch) this.leaving.delete(k);
    }
  }
}
