import type * as grpc from '@grpc/grpc-js';
import { parseMailboxName } from '../../domain/mailbox-name.js';
import type { Rights } from '../../domain/rights.js';
import { decodeMutf7 } from '../mutf7.js';
import type { Piece } from '../imap-syntax.js';
import type { ImapValue, Streaming } from './parser.js';
import type { SessionContext } from '../session.js';
import type { Conn, Pending } from './upstream.js';

/** Where a mailbox name a client sent lives: the user's own, or an owner's (mailshare name and name on the owner's node). */
export type Target = { kind: 'home'; wire: string } | { kind: 'shared'; owner: string; name: string; wire: string };

/** A command refused or answered by the gateway itself: `response` is the tagged line. */
export class ImapNo extends Error {
  constructor(readonly response: string) {
    super(response);
  }
}

export const bad = (tag: string, why: string): ImapNo => new ImapNo(`${tag} BAD ${why}\r\n`);
export const nonexistent = (tag: string): ImapNo => new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);

/**
 * What the parts of a session (ACL commands, cross-node copy, registry)
 * use of it: its context, connections, name resolution, rights and the
 * sending primitives.
 */
export interface SessionCore {
  readonly ctx: SessionContext;
  readonly home: Conn;
  resolve(wire: string): Target | { kind: 'parent' } | { kind: 'invalid' };
  /** A shared mailbox the user may see, with the rights held; else ImapNo NONEXISTENT. */
  visible(tag: string, t: Target & { kind: 'shared' }): Rights;
  /** Until no command of the client is outstanding anywhere. */
  quiet(): Promise<void>;
  /** A command of the gateway's own; its responses are captured. */
  internal(conn: Conn, name: string, args: readonly ImapValue[]): Promise<{ status: string; untagged: Piece[][]; line: string }>;
  write(s: string): void;
  ownerConn(owner: string): Promise<Conn>;
  nextTag(): string;
  enqueue(conn: Conn, tag: string, clientTag: string | undefined, done: Pending['done']): Pending;
  /** The user's rights on a mailbox (undefined for the user's own: the home Dovecot decides). */
  rights(t: Target): Rights | undefined;
  /** ImapNo NOPERM unless `have` holds `need`. */
  require(tag: string, have: Rights, need: Rights, what: string): void;
  /** A client command, written from its values; its tagged response is forwarded (or given to `done`). */
  send(conn: Conn, clientTag: string, name: string, args: readonly ImapValue[], done?: Pending['done'], streaming?: Streaming): Promise<void>;
  /** A command alone on its connection (earlier ones finish first, later ones wait). */
  exclusive(
    conn: Conn,
    clientTag: string,
    name: string,
    args: readonly ImapValue[],
    hooks?: { start?: () => void; onStatus?: (status: string) => void; after?: (status: string) => Promise<void> | undefined },
  ): Promise<void>;
  /** IDLE on a connection: the client's line after it is read as DONE. */
  idle(conn: Conn, clientTag: string): Promise<void>;
  /** Ends the connection to an owner (a move, a lost connection): its commands answer NO [UNAVAILABLE]. */
  dropOwner(c: Conn, reason: string): void;
  /** The session's connections to owners now. */
  readonly owners: ReadonlyMap<string, Conn>;
  /** A server response from a connection, as if it had come now (routed, renamed or dropped). */
  response(c: Conn, pieces: Piece[], raw: Buffer): void;
  forward(chunk: Buffer): void;
  /** A SELECT or EXAMINE succeeded on `conn`: learn the UIDs the client's sequence numbers stand for. */
  trackView(conn: Conn): void;
  /** The selected mailbox on `conn` was closed. */
  unselected(conn: Conn): void;
  /** The selected mailbox and the connection it is selected on. */
  selected: { conn: Conn; target: Target } | undefined;
  /** The APPEND whose messages are streaming: where to, and the rights its messages' flags are filtered by. */
  streamTo: { conn: Conn; rights: Rights | undefined } | undefined;
}

/** A name as the client sent it (modified UTF-7) as mailshare names it, or undefined when it cannot be one. */
export function mailshareName(wire: string): string | undefined {
  const decoded = decodeMutf7(wire);
  if (decoded === undefined) return undefined;
  try {
    return parseMailboxName(decoded);
  } catch {
    return undefined;
  }
}

/** Options of a coordinator call made for a session. */
export function callOptions(): grpc.CallOptions {
  return { deadline: Date.now() + 10_000 };
}
