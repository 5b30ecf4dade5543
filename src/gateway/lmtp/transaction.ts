import { BackendUnavailable } from '../backend.js';
import { type Param, type Reply, formatParams, replyClass } from './syntax.js';
import type { LmtpUpstream } from './upstream.js';

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
  /** A recipient got its final reply (after the data, or a refused RCPT): its code. */
  recipientDone?(code: number): void;
}

/** The client's address (TCP; none on a unix socket). */
export interface Origin {
  readonly ip: string;
  readonly port: number;
}

export interface Recipient {
  readonly address: string;
  readonly tenant: string;
  readonly user: string;
  readonly epoch: number;
  readonly upstream: UpstreamTxn;
  /** The server's reply to this recipient's RCPT (or its share's failure). */
  readonly verdict: Promise<Reply>;
  /** The server refused it after the gateway had answered for it: its final reply. */
  refused?: Reply;
}

/**
 * One node's share of a transaction: its connection and the recipients
 * the gateway accepted there. Commands are pipelined (RFC 2033 §4.1: every
 * LMTP server supports PIPELINING): each goes out as soon as the
 * connection is open and MAIL has gone, and replies are read one after
 * another in the order the commands went out.
 */
export interface UpstreamTxn {
  readonly node: string;
  readonly address: string;
  up: LmtpUpstream | undefined;
  /** Settles once the connection is open and MAIL went out (or the share failed). */
  readonly ready: Promise<void>;
  /** The last reply awaited: the next read starts after it. */
  reads: Promise<unknown>;
  readonly recipients: Recipient[];
  /** The reply every recipient here gets instead (the node failed, or a recipient moved). */
  failed?: Reply;
  /** DATA or BDAT went out: the server may be reading message data, so the connection can only be closed, not reset. */
  dataSent: boolean;
  /** The end of data went out: what the server says now stands. */
  final: boolean;
  /** Per recipient the server accepted, after the end of data. */
  replies?: Reply[];
}

export interface Transaction {
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

export const R = (code: number, enhanced: string, text: string): Reply => ({ code, enhanced, text });
export const TRY_LATER = (why: string): Reply => R(451, '4.4.0', why);
const WENT_AWAY = (): Reply => TRY_LATER('the mail server went away; try again later');

/**
 * Opens a node's share: connects (or takes a pooled connection) and sends
 * MAIL with what the server supports of the client's parameters, without
 * waiting for its reply (a refusal fails the share, and with it every
 * command queued behind).
 */
export function openShare(host: LmtpHost, node: string, address: string, txn: Transaction, origin: Origin | undefined): UpstreamTxn {
  let opened!: () => void;
  const u: UpstreamTxn = { node, address, up: undefined, ready: new Promise<void>((r) => (opened = r)), reads: Promise.resolve(), recipients: [], dataSent: false, final: false };
  void (async () => {
    try {
      const up = await host.connect(address, origin);
      if (u.failed) return up.destroy();
      u.up = up;
      const params = txn.params.filter((p) => (p.key === 'SIZE' ? up.caps.has('SIZE') : p.key === 'BODY' ? up.caps.has('8BITMIME') : p.key === 'SMTPUTF8' ? up.caps.has('SMTPUTF8') : false));
      up.send(`MAIL FROM:<${txn.from}>${formatParams(params)}\r\n`);
      void expect(u, up).then((mail) => {
        if (replyClass(mail) !== 2) failShare(u, mail);
      }, () => undefined);
    } catch (err) {
      u.failed ??= TRY_LATER(err instanceof BackendUnavailable ? 'the mail server cannot be reached; try again later' : 'delivery failed; try again later');
    } finally {
      opened();
    }
  })();
  return u;
}

/**
 * Sends a command on the share behind those queued before it and resolves
 * its reply; the share's failure instead when it failed (before, or while
 * the command was on its way: a move, the node's lease).
 */
export function queue(u: UpstreamTxn, line: (up: LmtpUpstream) => string, timeoutMs?: number): Promise<Reply> {
  return u.ready.then(() => {
    const up = u.up;
    if (u.failed || !up) return u.failed ?? WENT_AWAY();
    up.send(`${line(up)}\r\n`);
    return expect(u, up, timeoutMs).then(
      (r) => u.failed ?? r,
      () => u.failed ?? WENT_AWAY(),
    );
  });
}

/** The next reply on the share's connection, read after every reply awaited before it; a lost connection fails the share. */
export function expect(u: UpstreamTxn, up: LmtpUpstream, timeoutMs?: number): Promise<Reply> {
  const r = u.reads.then(() => up.reply(timeoutMs));
  u.reads = r.then(
    () => undefined,
    () => failShare(u, WENT_AWAY()),
  );
  return r;
}

/** Waits for the server's verdict on every recipient the gateway answered for: those it refused get that as their final reply. */
export async function settle(txn: Transaction): Promise<void> {
  await Promise.all(
    txn.accepted.map(async (r) => {
      const v = await r.verdict;
      if (replyClass(v) !== 2) r.refused = v;
    }),
  );
}

/** The recipients of a share that the server accepted (or has not refused yet). */
export function delivering(u: UpstreamTxn): Recipient[] {
  return u.recipients.filter((r) => !r.refused);
}

/** Shares still open with recipients (their connection may still be on its way). */
export function openShares(txn: Transaction): UpstreamTxn[] {
  return [...txn.upstreams.values()].filter((u) => !u.failed && u.recipients.length > 0);
}

/** The shares that get the message: a live connection and recipients the server accepted. */
export function liveShares(txn: Transaction): UpstreamTxn[] {
  return [...txn.upstreams.values()].filter((u) => !u.failed && u.up && delivering(u).length > 0);
}

/** A share fails (unless its end of data went out): closing before then makes the server drop it. */
export function failShare(u: UpstreamTxn, reply: Reply): void {
  if (u.final || u.failed) return;
  u.failed = reply;
  u.up?.destroy();
  u.up = undefined;
}

/** Once the replies awaited are in, RSET, then back to the pool; any trouble closes it. */
export async function resetAndRelease(host: LmtpHost, u: UpstreamTxn, up: LmtpUpstream, origin: Origin | undefined): Promise<void> {
  try {
    await u.reads;
    if (!up.usable) return up.destroy();
    const r = await up.command('RSET', 10_000);
    if (r.code === 250) host.release(up, origin);
    else up.destroy();
  } catch {
    up.destroy();
  }
}
