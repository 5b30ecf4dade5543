import type net from 'node:net';
import type { Piece } from '../imap-syntax.js';
import type { MailboxView } from './mailbox-view.js';
import type { ImapValue } from './parser.js';
import type { OwnerKey } from '../owner-pool.js';
import { type ResponseAction, ResponseStream } from '../response-stream.js';

/** A command in flight on an upstream connection. */
export interface Pending {
  /** The gateway's tag on the upstream connection (clients' tags never go upstream). */
  readonly tag: string;
  /** The client's tag, for a client's command: its responses go to the client. Internal ones are captured. */
  readonly clientTag: string | undefined;
  /** The command's name (UID for UID FETCH, …). */
  readonly name?: string;
  readonly untagged: Piece[][];
  /** An internal command that asks for no FETCH data: any FETCH during it is an update for the client. */
  readonly fetchIsUpdate?: boolean;
  done(status: string, raw: Buffer, pieces: Piece[]): void;
}

/** Where a connection's server responses go (the session). */
export interface ConnSink {
  classify(c: Conn, line: string): ResponseAction;
  forward(chunk: Buffer): void;
  response(c: Conn, pieces: Piece[], raw: Buffer): void;
}

/** One IMAP connection behind the session: the user's home node, or an owner's node as that owner. */
export class Conn {
  readonly pending: Pending[] = [];
  readonly stream: ResponseStream;
  selected = false;
  closed = false;
  /** A NOTIFY (RFC 5465) is set here: its reports come at any time and go to the client. */
  notify = false;
  /** An owner's connection: where it goes back to when the session no longer needs it. */
  poolKey: OwnerKey | undefined;
  /** Reported to the agent as a session of the owner (so the owner's node does not release the owner as idle). */
  counted = false;
  /** While a client FETCH asked for RFC822 items fetched as BODY.PEEK[…]: the answers' names to restore. */
  renames: ReadonlyMap<string, string> | undefined;
  /** How the mailbox selected here was opened: what a migrated session sends its new node. */
  selectedAs: { verb: string; args: readonly ImapValue[] } | undefined;
  /** The client's view of the mailbox selected here, once the gateway's UID SEARCH answered. */
  view: MailboxView | undefined;
  /** The tag of that UID SEARCH while it runs. */
  viewTag: string | undefined;
  /** UIDVALIDITY of the mailbox selected here (RFC 3501 §2.3.1.1). */
  uidValidity: string | undefined;
  /** The highest MODSEQ the client was shown here (CONDSTORE is active when set, RFC 7162). */
  modseq: bigint | undefined;
  /** The server has shown MODSEQs here: CONDSTORE is on for this connection (RFC 7162 §3.1). */
  condstore = false;
  /** A search result was saved here (RETURN (SAVE), RFC 5182): `$` means it until the mailbox is closed. */
  savedSearch = false;
  constructor(
    sink: ConnSink,
    readonly owner: string,
    readonly home: boolean,
    readonly socket: net.Socket,
    readonly epoch: number,
  ) {
    this.stream = new ResponseStream({
      classify: (line) => sink.classify(this, line),
      forward: (chunk) => sink.forward(chunk),
      response: (pieces, raw) => sink.response(this, pieces, raw),
    });
  }

  /** Nothing is selected here any more. */
  unselect(): void {
    this.selected = false;
    this.selectedAs = undefined;
    this.view = undefined;
    this.viewTag = undefined;
    this.uidValidity = undefined;
    this.modseq = undefined;
    this.savedSearch = false;
  }

  get clientPending(): number {
    return this.pending.filter((p) => p.clientTag !== undefined).length;
  }
}

/** A tagged response line from a server, with the client's tag in place of the gateway's. */
export function retag(raw: Buffer, p: Pending): Buffer {
  return Buffer.concat([Buffer.from(p.clientTag ?? p.tag, 'latin1'), raw.subarray(p.tag.length)]);
}

/** A connection is gone: its outstanding commands complete as BYE (their waiters go on). */
export function failPending(c: Conn): void {
  for (const p of c.pending.splice(0)) p.done('BYE', Buffer.alloc(0), []);
}
