import type { Param, Reply } from './syntax.js';
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
}

/** One node's share of a transaction: its connection and the recipients it accepted. */
export interface UpstreamTxn {
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

/** The shares that get the message: a live connection and recipients. */
export function liveShares(txn: Transaction): UpstreamTxn[] {
  return [...txn.upstreams.values()].filter((u) => !u.failed && u.up && u.recipients.length > 0);
}

/** A share fails (unless its end of data went out): closing before then makes the server drop it. */
export function failShare(u: UpstreamTxn, reply: Reply): void {
  if (u.final || u.failed) return;
  u.failed = reply;
  u.up?.destroy();
  u.up = undefined;
}

/** Why a share failed, read afresh (it may fail while a command is on its way). */
export function failure(u: UpstreamTxn): Reply | undefined {
  return u.failed;
}

/** RSET, then back to the pool; any trouble closes it. */
export async function resetAndRelease(host: LmtpHost, up: LmtpUpstream, origin: Origin | undefined): Promise<void> {
  try {
    const r = await up.command('RSET', 10_000);
    if (r.code === 250) host.release(up, origin);
    else up.destroy();
  } catch {
    up.destroy();
  }
}
