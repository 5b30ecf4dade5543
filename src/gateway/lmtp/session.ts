import type net from 'node:net';
import { ClientInput } from './input.js';
import { type DataPhaseHost, receiveBdat, receiveData } from './message-data.js';
import { type Param, type Reply, formatParams, formatReply, parseLmtpCommand, replyClass } from './syntax.js';
import { type LmtpHost, type Origin, R, type Recipient, TRY_LATER, type Transaction, type UpstreamTxn, delivering, failShare, openShare, queue, resetAndRelease } from './transaction.js';
import type { LmtpUpstream } from './upstream.js';

export type { LmtpHost, Origin, RecipientRoute } from './transaction.js';

/** Longest command line (RFC 5321 §4.5.3.1.4: 512; parameters make it longer). */
const MAX_LINE = 4096;

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
    failShare(u, reply);
  }

  /** What the message transfer needs of the session. */
  private get phase(): DataPhaseHost {
    return {
      input: this.input,
      host: this.host,
      client: this.client,
      reply: (r) => this.reply(r),
      flush: () => this.flush(),
      fence: (tenant, user, epoch) => this.fence(tenant, user, epoch),
      fenceAll: (why) => this.fenceAll(why),
      end: (txn, delivered) => this.endTransaction(txn, delivered),
    };
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
    if (!this.host.mayServe()) return this.recipientReply(R(451, '4.3.0', `<${to}> This server cannot reach the rest of the cluster right now; try again later`));
    const route = await this.host.route(to);
    if (this.txn !== txn) return;
    if (route.kind === 'reply') return this.recipientReply(route.reply);
    const orcpt = params.find((p) => p.key === 'ORCPT');
    // ORCPT goes to a server that takes it (DSN, or Dovecot's LMTP, which takes it without saying).
    const rcptLine = (up: LmtpUpstream): string => `RCPT TO:<${route.dovecotUser}>${orcpt && (up.caps.has('DSN') || up.dovecot) ? formatParams([orcpt]) : ''}`;
    let u = txn.upstreams.get(route.node);
    if (!u) {
      // The node's first recipient: its RCPT goes out right behind the MAIL that opens the share.
      u = openShare(this.host, route.node, route.address, txn, this.origin);
      txn.upstreams.set(route.node, u);
    }
    const share = u;
    const verdict = queue(share, rcptLine);
    const accept = (): void => {
      const rec: Recipient = { address: to, tenant: route.tenant, user: route.user, epoch: route.epoch, upstream: share, verdict };
      share.recipients.push(rec);
      txn.accepted.push(rec);
      this.host.opened(route.tenant, route.user, route.node);
      // It may have moved while the RCPT was on its way.
      if (!this.host.current(route.tenant, route.user, route.epoch)) this.fence(route.tenant, route.user, undefined);
    };
    if (!share.failed && this.input.dataFollows()) {
      // The client sent its DATA (or BDAT) behind this RCPT without waiting for the reply (RFC 2920):
      // the gateway answers for a recipient it routed, and the server's verdict becomes the
      // recipient's reply after the data (RFC 2033 §4.2 has one per recipient) if it refuses.
      // A client that waits for the reply (an address probe) gets the server's own.
      accept();
      return this.reply(R(250, '2.1.5', 'OK'));
    }
    let r = await verdict;
    if (this.txn !== txn) return;
    if (replyClass(r) !== 2 && share.failed === r) r = { ...r, text: `<${to}> ${r.text}` };
    if (replyClass(r) === 2) {
      accept();
      return this.reply(r);
    }
    this.recipientReply(r);
  }

  /** A recipient's RCPT refused: its final answer (the metrics count it). */
  private recipientReply(r: Reply): void {
    this.host.recipientDone?.(r.code);
    this.reply(r);
  }

  /** DATA: returns false when the client went away. */
  private data(): Promise<boolean> {
    return receiveData(this.phase, this.txn);
  }

  /** BDAT (RFC 3030). */
  private bdat(size: number, last: boolean): Promise<boolean> {
    return receiveBdat(this.phase, this.txn, size, last);
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
      if (delivered && u.final && u.replies?.length === delivering(u).length) this.host.release(up, this.origin);
      else if (u.dataSent) up.destroy();
      else void resetAndRelease(this.host, u, up, this.origin);
    }
  }
}

