import type net from 'node:net';
import { BackendUnavailable } from '../backend.js';
import { ClientInput } from './input.js';
import { type Param, type Reply, formatParams, formatReply, parseLmtpCommand, replyClass } from './syntax.js';
import { DELIVERY_TIMEOUT_MS, type LmtpUpstream } from './upstream.js';

/** Message bytes waiting for a node's socket before the client is read again. */
const FORWARD_BACKLOG = 1 << 20;

/** Longest command line (RFC 5321 §4.5.3.1.4: 512; parameters make it longer). */
const MAX_LINE = 4096;

/** Where a recipient is delivered, as the front end resolved it. */
export type RecipientRoute =
  | { readonly kind: 'ok'; readonly tenant: string; readonly user: string; readonly dovecotUser: string; readonly node: string; readonly epoch: number; readonly address: string }
  /** The reply for this recipient (unknown user 550, cluster trouble 451, …). */
  | { readonly kind: 'reply'; readonly reply: Reply };

/** What a session needs of the gateway. */
export interface LmtpHost {
  readonly hostname: string;
  readonly maxSize: number;
  readonly maxRecipients: number;
  readonly idleTimeoutMs: number;
  /** Resolves, checks and (if needed) assigns a recipient. */
  route(address: string): Promise<RecipientRoute>;
  /** An LMTP connection to a node's Dovecot (pooled per client address, which it forwards). */
  connect(address: string, client: Origin | undefined): Promise<LmtpUpstream>;
  /** Gives a connection back after a clean transaction. */
  release(up: LmtpUpstream, client: Origin | undefined): void;
  /** Whether the node may serve at all now (a provable lease and a fresh view). */
  mayServe(): boolean;
  /** Whether `epoch` is still the recipient's assignment. */
  current(tenant: string, user: string, epoch: number): boolean;
  /** Counts a delivery as a session of the user (it keeps the user where it is), and its end. */
  opened(tenant: string, user: string, node: string): void;
  closed(tenant: string, user: string): void;
}

/** The client's address (TCP; none on a unix socket). */
export interface Origin {
  readonly ip: string;
  readonly port: number;
}

interface Recipient {
  readonly address: string;
  readonly tenant: string;
  readonly user: string;
  readonly epoch: number;
  readonly upstream: UpstreamTxn;
}

/** One node's share of a transaction: its connection and the recipients it accepted. */
interface UpstreamTxn {
  readonly node: string;
  readonly address: string;
  up: LmtpUpstream | undefined;
  readonly recipients: Recipient[];
  /** The reply every recipient here gets instead (the node failed, or a recipient moved). */
  failed?: Reply;
  /** The end of data went out: what the server says now stands. */
  final: boolean;
  /** Per recipient, after the end of data. */
  replies?: Reply[];
}

interface Transaction {
  readonly from: string;
  readonly params: readonly Param[];
  readonly upstreams: Map<string, UpstreamTxn>;
  readonly accepted: Recipient[];
  rcpts: number;
  /** BDAT chunks so far (DATA is refused after one). */
  chunked: boolean;
  /** Bytes of message data so far. */
  size: number;
  tooBig: boolean;
}

const R = (code: number, enhanced: string, text: string): Reply => ({ code, enhanced, text });
const TRY_LATER = (why: string): Reply => R(451, '4.4.0', why);

/**
 * One LMTP client (RFC 2033), usually an MTA: the envelope is parsed and
 * checked here, each recipient routed to the node that holds the user (and
 * assigned one if needed), one upstream transaction per node involved, the
 * message data streamed to all of them (never held whole), and one reply
 * per accepted recipient after the end of data, in RCPT order.
 *
 * Fencing: a recipient whose assignment changes before the end of data
 * reached its node makes that node's share fail with 451 (the MTA retries:
 * nothing lost, nothing delivered twice by the gateway); once the end of
 * data went out, the server's replies stand.
 */
export class LmtpSession {
  readonly done: Promise<void>;
  private readonly input: ClientInput;
  private txn: Transaction | undefined;
  private greeted = false;
  private readonly origin: Origin | undefined;

  constructor(
    private readonly host: LmtpHost,
    private readonly client: net.Socket,
  ) {
    this.input = new ClientInput(client);
    this.origin = client.remoteAddress ? { ip: client.remoteAddress.replace(/^::ffff:/, ''), port: client.remotePort ?? 0 } : undefined;
    client.setTimeout(host.idleTimeoutMs, () => {
      this.reply(R(421, '4.4.2', `${host.hostname} Timeout, closing connection`));
      client.destroySoon();
    });
    this.done = this.run().catch(() => undefined).finally(() => {
      this.abort(TRY_LATER('connection closed'));
      client.destroy();
    });
  }

  private reply(r: Reply | string): void {
    if (!this.client.destroyed) this.client.write(typeof r === 'string' ? r : formatReply(r));
  }

  /** Recipients of this session's open transaction whose assignment is no longer `epoch`: their node's share fails. */
  fence(tenant: string, user: string, epoch: number | undefined): void {
    for (const r of this.txn?.accepted ?? []) {
      if (r.tenant === tenant && r.user === user && r.epoch !== epoch) this.failUpstream(r.upstream, TRY_LATER(`<${r.address}> moved to another server during delivery; try again`));
    }
  }

  /** The node may not serve: every share not yet final fails. */
  fenceAll(why: string): void {
    for (const u of this.txn?.upstreams.values() ?? []) this.failUpstream(u, R(451, '4.3.0', why));
  }

  private failUpstream(u: UpstreamTxn, reply: Reply): void {
    if (u.final || u.failed) return;
    u.failed = reply;
    // Closing before the end of data makes the server drop the transaction.
    u.up?.destroy();
    u.up = undefined;
  }

  /**
   * Replies to pipelined commands (RFC 2920) leave together: the client
   * socket is corked while the client has sent more than was read, and
   * flushed before the gateway waits for it.
   */
  private corked = false;

  private flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.client.uncork();
  }

  private async run(): Promise<void> {
    this.reply(`220 ${this.host.hostname} mailshare LMTP ready\r\n`);
    for (;;) {
      if (!this.input.waiting) this.flush();
      const line = await this.input.line(MAX_LINE);
      if (line === undefined) return;
      if (this.input.waiting && !this.corked) {
        this.corked = true;
        this.client.cork();
      }
      if (line === 'too-long') {
        this.reply(R(500, '5.5.2', 'Line too long'));
        continue;
      }
      const cmd = parseLmtpCommand(line);
      switch (cmd.verb) {
        case 'bad':
          this.reply(`${cmd.reply}\r\n`);
          break;
        case 'LHLO':
          this.abort(undefined);
          this.greeted = true;
          this.reply(
            `250-${this.host.hostname}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 SIZE ${this.host.maxSize}\r\n`,
          );
          break;
        case 'HELO':
        case 'EHLO':
          this.reply(R(500, '5.5.1', 'This is LMTP: use LHLO'));
          break;
        case 'MAIL':
          this.mail(cmd.from, cmd.params);
          break;
        case 'RCPT':
          await this.rcpt(cmd.to, cmd.params);
          break;
        case 'DATA':
          if (!(await this.data())) return;
          break;
        case 'BDAT':
          if (!(await this.bdat(cmd.size, cmd.last))) return;
          break;
        case 'RSET':
          this.abort(undefined);
          this.reply(R(250, '2.0.0', 'OK'));
          break;
        case 'NOOP':
          this.reply(R(250, '2.0.0', 'OK'));
          break;
        case 'QUIT':
          this.reply(R(221, '2.0.0', 'Bye'));
          this.client.end();
          return;
        default:
          this.reply(R(502, '5.5.1', `${cmd.verb} is not implemented`));
      }
    }
  }

  private mail(from: string, params: readonly Param[]): void {
    if (!this.greeted) return this.reply(R(503, '5.5.1', 'Send LHLO first'));
    if (this.txn) return this.reply(R(503, '5.5.1', 'MAIL already given'));
    for (const p of params) {
      if (p.key === 'SIZE') {
        if (p.value === undefined || !/^\d{1,15}$/.test(p.value)) return this.reply(R(501, '5.5.4', 'Invalid SIZE'));
        if (Number(p.value) > this.host.maxSize) return this.reply(R(552, '5.3.4', 'Message too big'));
      } else if (p.key === 'BODY') {
        if (p.value?.toUpperCase() !== '7BIT' && p.value?.toUpperCase() !== '8BITMIME') return this.reply(R(555, '5.5.4', 'Unsupported BODY type'));
      } else if (p.key === 'SMTPUTF8') {
        if (p.value !== undefined) return this.reply(R(501, '5.5.4', 'SMTPUTF8 takes no value'));
      } else return this.reply(R(555, '5.5.4', `Unsupported parameter ${p.key}`));
    }
    this.txn = { from, params, upstreams: new Map(), accepted: [], rcpts: 0, chunked: false, size: 0, tooBig: false };
    this.input.resetData();
    this.reply(R(250, '2.1.0', 'OK'));
  }

  private async rcpt(to: string, params: readonly Param[]): Promise<void> {
    const txn = this.txn;
    if (!txn) return this.reply(R(503, '5.5.1', 'MAIL needed first'));
    for (const p of params) {
      if (p.key !== 'ORCPT') return this.reply(R(555, '5.5.4', `Unsupported parameter ${p.key}`));
      if (p.value === undefined || !/^[A-Za-z0-9-]{1,20};[\x21-\x7e]{1,500}$/.test(p.value)) return this.reply(R(501, '5.5.4', 'Invalid ORCPT'));
    }
    if (txn.rcpts >= this.host.maxRecipients) return this.reply(R(452, '4.5.3', 'Too many recipients'));
    txn.rcpts++;
    if (!this.host.mayServe()) return this.reply(R(451, '4.3.0', `<${to}> This server cannot reach the rest of the cluster right now; try again later`));
    const route = await this.host.route(to);
    if (this.txn !== txn) return;
    if (route.kind === 'reply') return this.reply(route.reply);
    const orcpt = params.find((p) => p.key === 'ORCPT');
    // ORCPT goes to a server that takes it (DSN, or Dovecot's LMTP, which takes it without saying).
    const rcptLine = (up: LmtpUpstream): string => `RCPT TO:<${route.dovecotUser}>${orcpt && (up.caps.has('DSN') || up.dovecot) ? formatParams([orcpt]) : ''}`;
    const withAddress = (x: Reply): Reply => ({ ...x, text: `<${to}> ${x.text}` });
    const known = txn.upstreams.get(route.node);
    const u: UpstreamTxn = known ?? { node: route.node, address: route.address, up: undefined, recipients: [], final: false };
    let r: Reply;
    try {
      if (!known) {
        txn.upstreams.set(route.node, u);
        // The node's first recipient: its RCPT goes out with the MAIL that opens the share.
        const first = await this.openUpstream(u, txn, rcptLine);
        if (this.txn !== txn) return;
        r = first ?? withAddress(u.failed ?? TRY_LATER('the mail server cannot be reached; try again later'));
      } else if (u.failed || !u.up) {
        r = withAddress(u.failed ?? TRY_LATER('the mail server cannot be reached; try again later'));
      } else {
        r = await u.up.command(rcptLine(u.up));
      }
    } catch {
      this.failUpstream(u, TRY_LATER('the mail server went away; try again later'));
      r = TRY_LATER(`<${to}> the mail server went away; try again later`);
    }
    if (this.txn !== txn) return;
    // (The share may have failed while the RCPT was on its way: a move, the node's lease.)
    const failedMeanwhile = failure(u);
    if (replyClass(r) === 2 && failedMeanwhile) r = withAddress(failedMeanwhile);
    if (replyClass(r) === 2) {
      const rec: Recipient = { address: to, tenant: route.tenant, user: route.user, epoch: route.epoch, upstream: u };
      u.recipients.push(rec);
      txn.accepted.push(rec);
      this.host.opened(route.tenant, route.user, route.node);
      // It may have moved while the RCPT was on its way.
      if (!this.host.current(route.tenant, route.user, route.epoch)) this.fence(route.tenant, route.user, undefined);
    }
    this.reply(r);
  }

  /**
   * Connects to the node and starts its transaction (MAIL with what the
   * server supports of the client's parameters) and, pipelined with it when
   * the server allows (RFC 2920), the first recipient's RCPT: its reply is
   * returned.
   */
  private async openUpstream(u: UpstreamTxn, txn: Transaction, rcptLine: (up: LmtpUpstream) => string): Promise<Reply | undefined> {
    try {
      const up = await this.host.connect(u.address, this.origin);
      if (u.failed) {
        up.destroy();
        return undefined;
      }
      const params = txn.params.filter((p) => (p.key === 'SIZE' ? up.caps.has('SIZE') : p.key === 'BODY' ? up.caps.has('8BITMIME') : p.key === 'SMTPUTF8' ? up.caps.has('SMTPUTF8') : false));
      const mailLine = `MAIL FROM:<${txn.from}>${formatParams(params)}\r\n`;
      const pipelined = up.caps.has('PIPELINING');
      const rcpt = rcptLine(up);
      up.send(pipelined ? `${mailLine}${rcpt}\r\n` : mailLine);
      const mail = await up.reply();
      if (replyClass(mail) !== 2) {
        up.destroy();
        u.failed = mail;
        return undefined;
      }
      u.up = up;
      return pipelined ? await up.reply() : await up.command(rcpt);
    } catch (err) {
      u.up?.destroy();
      u.up = undefined;
      u.failed ??= TRY_LATER(err instanceof BackendUnavailable ? 'the mail server cannot be reached; try again later' : 'delivery failed; try again later');
      return undefined;
    }
  }

  /** The shares that get the message: a live connection and recipients. */
  private live(txn: Transaction): UpstreamTxn[] {
    return [...txn.upstreams.values()].filter((u) => !u.failed && u.up && u.recipients.length > 0);
  }

  /** DATA: returns false when the client went away. */
  private async data(): Promise<boolean> {
    const txn = this.txn;
    if (!txn) {
      this.reply(R(503, '5.5.1', 'MAIL needed first'));
      return true;
    }
    if (txn.chunked) {
      this.reply(R(503, '5.5.1', 'DATA after BDAT'));
      return true;
    }
    if (txn.accepted.length === 0) {
      this.reply(R(503, '5.5.1', 'No valid recipients'));
      return true;
    }
    // Every node's DATA, and the client's 354 at once: the nodes' 354s are awaited before the first
    // bytes go to them (or their failure is their recipients'), which overlaps the two round trips.
    const accepting = Promise.all(
      this.live(txn).map(async (u) => {
        try {
          const r = await u.up!.command('DATA');
          if (r.code !== 354) this.failUpstream(u, r);
        } catch {
          this.failUpstream(u, TRY_LATER('the mail server went away; try again later'));
        }
      }),
    );
    this.reply('354 2.0.0 Start mail input; end with <CRLF>.<CRLF>\r\n');
    this.flush();
    let accepted = false;
    for (;;) {
      const piece = await this.input.data();
      if (!accepted) {
        await accepting;
        accepted = true;
      }
      if (!piece) return false;
      if (!txn.tooBig) {
        txn.size += piece.data.length;
        if (txn.size > this.host.maxSize) {
          txn.tooBig = true;
          for (const u of txn.upstreams.values()) this.failUpstream(u, R(552, '5.3.4', 'Message too big'));
        } else if (piece.data.length > 0) {
          // The last stretch and the end of data leave in one write.
          if (piece.end) for (const u of this.live(txn)) u.up!.cork();
          await this.forward(txn, piece.data);
        }
      }
      if (piece.end) break;
    }
    await this.finish(txn, '.\r\n');
    return true;
  }

  /** BDAT (RFC 3030): the chunk's bytes to every node as a chunk of the same size. */
  private async bdat(size: number, last: boolean): Promise<boolean> {
    const txn = this.txn;
    const ok = txn !== undefined && txn.accepted.length > 0 && !txn.tooBig;
    if (txn && ok) {
      txn.chunked = true;
      txn.size += size;
      if (txn.size > this.host.maxSize) {
        txn.tooBig = true;
        for (const u of txn.upstreams.values()) this.failUpstream(u, R(552, '5.3.4', 'Message too big'));
      }
    }
    const forwarding = txn !== undefined && ok && !txn.tooBig;
    if (forwarding) {
      for (const u of this.live(txn)) {
        if (!u.up!.caps.has('CHUNKING')) this.failUpstream(u, R(554, '5.5.1', 'the mail server does not take BDAT'));
        else u.up!.send(`BDAT ${size}${last ? ' LAST' : ''}\r\n`);
      }
    }
    // The chunk's bytes are read whatever happens: they are not commands.
    let left = size;
    while (left > 0) {
      const b = await this.input.bytes(left);
      if (!b) return false;
      left -= b.length;
      if (forwarding) await this.forward(txn, b);
    }
    if (!txn) {
      this.reply(R(503, '5.5.1', 'MAIL needed first'));
      return true;
    }
    if (txn.accepted.length === 0) {
      this.reply(R(503, '5.5.1', 'No valid recipients'));
      return true;
    }
    if (last) {
      await this.finish(txn, undefined);
      return true;
    }
    if (txn.tooBig) {
      this.reply(R(552, '5.3.4', 'Message too big'));
      return true;
    }
    // Each node confirms the chunk before the client hears it was taken.
    await Promise.all(
      this.live(txn).map(async (u) => {
        try {
          const r = await u.up!.reply();
          if (replyClass(r) !== 2) this.failUpstream(u, r);
        } catch {
          this.failUpstream(u, TRY_LATER('the mail server went away; try again later'));
        }
      }),
    );
    this.reply(R(250, '2.0.0', `${size} octets received`));
    return true;
  }

  /**
   * Message bytes to every live share, at the pace of the slowest: the
   * client is read again once every node's backlog is under 1 MiB (waiting
   * for each write to drain would make every chunk a round trip).
   */
  private async forward(txn: Transaction, data: Buffer): Promise<void> {
    const live = this.live(txn);
    for (const u of live) u.up!.send(data);
    if (live.some((u) => u.up!.backlog > FORWARD_BACKLOG)) {
      // A corked socket never drains: let go of what was held for one write.
      for (const u of live) u.up?.uncork();
      await Promise.all(live.map((u) => u.up?.drained()));
    }
  }

  /**
   * The end of data (`dot`, or the last BDAT already sent): each share
   * still current gets it and answers per recipient; then one reply per
   * accepted recipient, in RCPT order.
   */
  private async finish(txn: Transaction, dot: string | undefined): Promise<void> {
    // The client waits for the deliveries (up to DELIVERY_TIMEOUT_MS): not idle meanwhile.
    this.client.setTimeout(0);
    await Promise.all(
      this.live(txn).map(async (u) => {
        // Fencing, last look: a recipient that moved meanwhile fails its node's share before the end goes out.
        for (const r of u.recipients) if (!this.host.current(r.tenant, r.user, r.epoch)) this.fence(r.tenant, r.user, undefined);
        if (!this.host.mayServe()) this.fenceAll('This server cannot reach the rest of the cluster right now; try again later');
        if (u.failed || !u.up) return;
        u.final = true;
        if (dot) u.up.send(dot);
        u.up.uncork();
        const replies: Reply[] = [];
        try {
          for (let i = 0; i < u.recipients.length; i++) replies.push(await u.up.reply(DELIVERY_TIMEOUT_MS));
          u.replies = replies;
        } catch {
          // Replies that came stand; the rest are unknown: try again (a duplicate at worst, never a loss).
          u.replies = replies;
          u.up = undefined;
        }
      }),
    );
    for (const r of txn.accepted) {
      const u = r.upstream;
      const i = u.recipients.indexOf(r);
      const got = u.replies?.[i];
      const reply = got ?? u.failed ?? TRY_LATER('the mail server went away before it answered; try again later');
      this.reply({ ...reply, text: got ? reply.text : `<${r.address}> ${reply.text}` });
    }
    this.client.setTimeout(this.host.idleTimeoutMs);
    this.endTransaction(txn, true);
  }

  /** Ends the open transaction without delivering (RSET, LHLO, a lost client). */
  private abort(reason: Reply | undefined): void {
    const txn = this.txn;
    if (!txn) return;
    for (const u of txn.upstreams.values()) if (reason) this.failUpstream(u, reason);
    this.endTransaction(txn, false);
  }

  private endTransaction(txn: Transaction, delivered: boolean): void {
    if (this.txn !== txn) return;
    this.txn = undefined;
    for (const r of txn.accepted) this.host.closed(r.tenant, r.user);
    for (const u of txn.upstreams.values()) {
      const up = u.up;
      u.up = undefined;
      if (!up) continue;
      if (delivered && u.replies?.length === u.recipients.length) this.host.release(up, this.origin);
      else void resetAndRelease(this.host, up, this.origin);
    }
  }
}

function failure(u: UpstreamTxn): Reply | undefined {
  return u.failed;
}

/** RSET, then back to the pool; any trouble closes it. */
async function resetAndRelease(host: LmtpHost, up: LmtpUpstream, origin: Origin | undefined): Promise<void> {
  try {
    const r = await up.command('RSET', 10_000);
    if (r.code === 250) host.release(up, origin);
    else up.destroy();
  } catch {
    up.destroy();
  }
}
