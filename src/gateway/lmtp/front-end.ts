import os from 'node:os';
import type net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import { USER_ID_PATTERN } from '../../domain/ids.js';
import type { BackendTls } from '../backend.js';
import { resolveName } from '../../agent/names.js';
import type { LoginRouter } from '../core/login-router.js';
import { type LmtpHost, LmtpSession, type RecipientRoute } from './session.js';
import { type Reply, replyClass } from './syntax.js';
import { LmtpPool } from './upstream.js';

export interface LmtpOptions {
  /** This node's Dovecot LMTP (host:port), registered with the node. */
  backend: string;
  /** Where MTAs connect: host:port, or unix:PATH. */
  listen?: string;
  /** Largest message taken, in bytes (announced as SIZE); default 64 MiB. */
  maxSize?: number;
  /** Recipients per transaction at most; default 1000. */
  maxRecipients?: number;
}

const UNKNOWN = (address: string): Reply => ({ code: 550, enhanced: '5.1.1', text: `<${address}> User doesn't exist` });
const LATER = (address: string, why: string): Reply => ({ code: 451, enhanced: '4.3.0', text: `<${address}> ${why}; try again later` });

/**
 * Mail delivery through the gateway (RFC 2033 LMTP): each recipient is
 * resolved (login domain → tenant), delivered by the node that holds the
 * user, and a user who holds no node yet gets one, but only once a
 * Dovecot knows the recipient (mail to made-up names assigns nobody).
 * Sessions are fenced like IMAP's: a move, or the node losing its right
 * to serve, fails the shares not yet delivered with 451.
 */
export class LmtpFrontEnd {
  private readonly sessions = new Set<LmtpSession>();
  private readonly pool: LmtpPool;
  private readonly host: LmtpHost;

  constructor(
    private readonly deps: {
      agent: Agent;
      /** A router whose protocol is LMTP (its home() finds the user's node's LMTP address). */
      router: LoginRouter;
      defaultTenant: string | undefined;
      node: string;
      backendTls: BackendTls | undefined;
      options: LmtpOptions;
      /** Told each recipient's final reply code (the metrics). */
      recipientDone?: (code: number) => void;
    },
  ) {
    const hostname = os.hostname();
    this.pool = new LmtpPool({ tls: deps.backendTls, helo: hostname });
    const agent = deps.agent;
    this.host = {
      hostname,
      maxSize: deps.options.maxSize ?? 64 << 20,
      maxRecipients: deps.options.maxRecipients ?? 1000,
      idleTimeoutMs: 5 * 60_000,
      route: (address) => this.route(address),
      connect: (address, client) => this.pool.take(address, client),
      release: (up, client) => this.pool.give(up, client),
      mayServe: () => deps.router.mayServe(),
      current: (tenant, user, epoch) => agent.locate(tenant, user)?.epoch === epoch,
      opened: (tenant, user, node) => agent.sessionOpened(tenant, user, node),
      closed: (tenant, user) => agent.sessionClosed(tenant, user),
      recipientDone: deps.recipientDone,
    };
  }

  handle(client: net.Socket): void {
    const s = new LmtpSession(this.host, client);
    this.sessions.add(s);
    void s.done.finally(() => this.sessions.delete(s));
  }

  /** A user's assignment changed: their deliveries not yet final fail with 451. */
  fence(tenant: string, user: string, epoch: number | undefined): void {
    for (const s of this.sessions) s.fence(tenant, user, epoch);
  }

  /** The node may not serve: every delivery not yet final fails with 451. */
  fenceAll(why: string): void {
    for (const s of this.sessions) s.fenceAll(why);
  }

  close(): void {
    this.fenceAll('server shutting down');
    this.pool.close();
  }

  private async route(address: string): Promise<RecipientRoute> {
    const { agent, router } = this.deps;
    const { tenant, user, dovecotUser } = resolveName(agent, this.deps.defaultTenant, address);
    if (tenant === undefined || !USER_ID_PATTERN.test(user)) return { kind: 'reply', reply: UNKNOWN(address) };
    try {
      let home = await router.home(tenant, user, false);
      if (!home) {
        // Nobody holds the user: a Dovecot must know the recipient before one is assigned.
        const checked = await this.check(dovecotUser);
        if (replyClass(checked) !== 2) return { kind: 'reply', reply: { ...checked, text: checked.code === 550 ? UNKNOWN(address).text : `<${address}> ${checked.text}` } };
        home = (await router.home(tenant, user, true))!;
      }
      return { kind: 'ok', tenant, user, dovecotUser, node: home.node, epoch: home.epoch, address: home.address };
    } catch {
      return { kind: 'reply', reply: LATER(address, 'the mail system cannot place this recipient right now') };
    }
  }

  /** Asks a Dovecot LMTP (this node's; another live node's while ours is down) whether it knows the recipient. */
  private async check(dovecotUser: string): Promise<Reply> {
    const { agent } = this.deps;
    let at: string | undefined = this.deps.options.backend;
    if (agent.suspended !== undefined) {
      const others = agent.liveNodes('lmtp').filter((n) => n.node !== this.deps.node);
      at = others[Math.floor(Math.random() * others.length)]?.address;
    }
    if (!at) return { code: 451, enhanced: '4.3.0', text: 'no mail server can check this recipient now' };
    const up = await this.pool.take(at, undefined);
    try {
      const mail = await up.command('MAIL FROM:<>');
      if (replyClass(mail) !== 2) throw new Error(`MAIL refused: ${mail.code}`);
      const r = await up.command(`RCPT TO:<${dovecotUser}>`);
      const reset = await up.command('RSET');
      if (reset.code === 250) this.pool.give(up, undefined);
      else up.destroy();
      return r;
    } catch (err) {
      up.destroy();
      throw err;
    }
  }
}
