import type net from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import type { Agent, AgentLogger } from '../agent/agent.js';
import { type Rights, formatRights, hasAll, hasAny, L } from '../domain/rights.js';
import { type BackendConnector, BackendUnavailable, backendLogin } from './backend.js';
import { aclCommand } from './imap/acl-commands.js';
import { ClientIo } from './imap/client-io.js';
import { crossCopy } from './imap/cross-copy.js';
import { checkCopy, checkEnable, checkNoArgs, parseAppendMessage } from './imap/grammar.js';
import { listCommand } from './imap/list-commands.js';
import { appendArgs, mailboxCommand, selectCommand } from './imap/mailbox-commands.js';
import { notifyCommand } from './imap/notify.js';
import { type CommandParser, type ImapValue, type ParserEvent, type Streaming, astring, atomUpper } from './imap/parser.js';
import { I, R } from './imap/rights-table.js';
import { ImapNo, type SessionCore, type Target, bad, nonexistent } from './imap/session-core.js';
import { sharedSelected } from './imap/shared-selected.js';
import { commandLabel } from './metrics.js';
import { Conn, type ConnSink, type Pending, failPending, retag } from './imap/upstream.js';
import { WireError, atom, command, commandHead, list, quote, str, wireAll } from './imap/wire.js';
import { type IdleState, type MigrationHost, migrateConn } from './imap/migration.js';
import { observe } from './imap/view-tracker.js';
import type { CoordinatorClients } from './coordinators.js';
import { type Piece, fetchItemRenamer, splitArgs } from './imap-syntax.js';
import { decodeMutf7 } from './mutf7.js';
import type { OwnerPool } from './owner-pool.js';
import { quickAcker } from './quick-ack.js';
import type { ResponseAction } from './response-stream.js';
import type { SharedNamespace } from './shared-namespace.js';

export interface SessionContext {
  readonly agent: Agent;
  readonly tenant: string;
  readonly user: string;
  /** A user's name at Dovecot (user@primary domain for tenants with login domains). */
  dovecotName(user: string): string;
  /** Epoch of the user's assignment when the session began. */
  readonly epoch: number;
  /** The client's address, passed on to owners' Dovecots (their logs and per-address limits see the reader). */
  readonly client: { ip: string; port: number };
  readonly namespace: SharedNamespace;
  /** Dovecot master user (auth_master_user_separator "*") for connections to owners' nodes. */
  readonly master: { user: string; password: string } | undefined;
  /** How the Dovecots are reached (TLS, kept connections). */
  readonly backends: BackendConnector;
  /** Owner connections between uses (gateway-wide). */
  readonly ownerPool: OwnerPool;
  /** The coordinators, for ACL and mailbox calls. */
  readonly api: CoordinatorClients;
  readonly metadata: grpc.Metadata;
  readonly capabilities: string;
  readonly log: AgentLogger;
  /** Told how long each command relayed to a Dovecot took, until its tagged response (the metrics). */
  readonly metrics?: { command(label: string, seconds: number): void; migration?(outcome: 'migrated' | 'fell_back'): void };
  /**
   * Session migration (see migration.ts): when set, a move or a lost
   * Dovecot connection moves the session to the user's new node instead of
   * ending it. `migrated` is told the home connection's new node and epoch.
   */
  readonly migration?: {
    leaseTtlMs: number;
    migrated(node: string): void;
    /** Logins at new nodes take turns (gateway-wide): a drain moves many sessions at once. */
    logins: { run<T>(task: () => Promise<T>): Promise<T> };
  };
}

/** Output to a client that does not read is held up to this, then the servers wait. */
const MAX_CLIENT_OUTPUT = 1 << 20;
/** Commands in flight on one upstream connection; a client pipelining more waits (its input with it). */
const MAX_PIPELINE = 64;

/** Commands that act on the selected mailbox (RFC 3501 §6.4 and extensions). */
const SELECTED_STATE = new Set(['CHECK', 'CLOSE', 'UNSELECT', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE', 'UID', 'SORT', 'THREAD', 'NOOP', 'IDLE']);
/** UID takes these (RFC 3501 §6.4.8, RFC 4315, RFC 6851, RFC 5256). */
const UID_COMMANDS = new Set(['FETCH', 'SEARCH', 'STORE', 'COPY', 'MOVE', 'EXPUNGE', 'SORT', 'THREAD']);
/** Commands answered from mailshare (RFC 4314 §3). */
const ACL_COMMANDS = new Set(['GETACL', 'SETACL', 'DELETEACL', 'LISTRIGHTS', 'MYRIGHTS']);
/** Commands that would change what the connection to the home node speaks (the gateway relays and parses it). */
const REFUSED = new Map([
  ['LOGIN', 'BAD Already logged in.'],
  ['AUTHENTICATE', 'BAD Already logged in.'],
  ['STARTTLS', 'BAD TLS is already set up or not available here.'],
]);

/**
 * One authenticated client. Commands are parsed into values (APPEND
 * messages streamed) and routed: to the home node's Dovecot for the user's
 * own mailboxes, to a connection logged in as the owner (master user) on the
 * owner's node for shared ones, or answered here (ACL commands, shared LIST
 * entries). Every command sent upstream is written anew from the parsed
 * values under a tag of the gateway's own; those for an owner's connection
 * are checked against their command's grammar and the user's rights (from
 * the agent's watch-fed cache, RFC 4314 §4) first. Responses stream back as
 * they arrive; only the few that carry names of the shared namespace are
 * rewritten. Commands to one connection pipeline; a command for another
 * connection, or one that changes the selected mailbox, waits until the
 * earlier ones completed, so responses never interleave mid-response.
 */
export class Session implements SessionCore, ConnSink, MigrationHost {
  home: Conn;
  readonly owners = new Map<string, Conn>();
  selected: { conn: Conn; target: Target } | undefined;
  /** The APPEND whose messages are streaming: where to, and the rights its messages' flags are filtered by. */
  streamTo: { conn: Conn; rights: Rights | undefined } | undefined;
  idling: IdleState | undefined;
  /** A connection of the session is moving to another node: new commands wait for it. */
  migrating: Promise<void> | undefined;
  /** The UIDs of mail announced during an IDLE being learnt (refreshIdle). */
  idleRefresh: Promise<void> | undefined;
  /** Moves asked for while one ran (a connection and whether it died), looked at again after it. */
  private readonly queuedMoves: Array<{ c: Conn; dead: boolean }> = [];
  /** Connections whose node is letting their user go (letGo): they move even before the assignment changes. */
  private readonly lettingGo = new WeakSet<Conn>();
  private wake: (() => void) | undefined;
  private quietWaiters: Array<() => void> = [];
  closed = false;
  private paused = false;
  private outputPaused = false;
  private tagSeq = 0;
  enabled: string[] = [];
  /**
   * Searches with RETURN (UPDATE) (RFC 5267 CONTEXT=SEARCH) outlive their
   * command: their updates and CANCELUPDATE name the command's tag. Upstream
   * tag → the client's, per connection.
   */
  readonly updateTags = new WeakMap<Conn, Map<string, string>>();
  /** NOTIFY reports held back until no other connection is answering. */
  private readonly deferred: Array<{ c: Conn; pieces: Piece[]; raw: Buffer }> = [];
  readonly done: Promise<void>;
  /** After each write: the client's next data (an APPEND literal's CRLF behind Nagle) is ACKed at once. */
  private readonly quickAck: () => void;
  /** The client's streams, compressed after COMPRESS DEFLATE. */
  private readonly io: ClientIo;
  /** The last words are on their way (compressed output ends when the deflater has flushed). */
  private closing = false;
  /** A client command is being handled (owner connections are given back only between commands). */
  busy = false;

  constructor(
    readonly ctx: SessionContext,
    private readonly client: net.Socket,
    homeSocket: net.Socket,
    private readonly reader: CommandParser,
  ) {
    this.quickAck = quickAcker(client);
    this.io = new ClientIo(client, {
      input: (chunk) => {
        this.reader.feed(chunk);
        if (this.reader.buffered > 1 << 20 && !this.paused) {
          this.paused = true;
          this.io.pause();
        }
        this.wake?.();
      },
      written: () => this.quickAck(),
      drained: () => this.resumeOutput(),
      broken: (why) => {
        ctx.log.info({ user: ctx.user, why }, 'client compression stream broken');
        client.destroy();
      },
    });
    this.home = this.attach(ctx.user, true, homeSocket, ctx.epoch);
    client.on('close', () => this.end());
    client.on('error', () => this.end());
    client.resume();
    // The client may have gone while its login ran.
    if (client.destroyed || client.readableEnded) this.end();
    this.done = this.loop().catch((err: unknown) => {
      ctx.log.warn({ user: ctx.user, err: String(err) }, 'session failed');
      this.bye('internal error');
    });
  }

  /** Ends the session with BYE [UNAVAILABLE] (move, failover, shutdown). */
  bye(reason: string): void {
    if (this.closed) return;
    this.closing = true;
    this.io.end(`* BYE [UNAVAILABLE] ${reason}\r\n`);
    this.end();
  }

  /** An owner's assignment changed: drop the connection to that owner's old node. */
  ownerMoved(owner: string, epoch: number | undefined): void {
    const c = this.owners.get(owner);
    if (!c || c.epoch === epoch || c.closed) return;
    // The owner's mailbox is open here: the client keeps it, on the owner's new node.
    if (this.selected?.conn === c && this.canMigrate()) return this.migrate(c, false);
    this.dropOwner(c, `${owner}'s mailboxes moved to another node; reconnect`);
  }

  /** The user's own assignment changed: the session moves with it (or ends, when it cannot). */
  userMoved(): void {
    if (this.closed) return;
    if (!this.canMigrate()) return this.bye('user moved to another node; reconnect');
    this.migrate(this.home, false);
  }

  /**
   * The node of `user`'s assignment `epoch` is letting the user go: the
   * connections under it stop (the home one and an owner's with a mailbox
   * selected migrate, waiting for the new assignment; another owner's
   * closes; a kick ends the session). Resolves once none of them is open,
   * or when the session ends.
   */
  async letGo(user: string, epoch: number, kick: boolean): Promise<void> {
    const conns = [this.home, this.owners.get(user)].filter((c): c is Conn => c !== undefined && c.owner === user && c.epoch === epoch && !c.closed);
    if (conns.length === 0 || this.closed) return;
    for (const c of conns) {
      this.lettingGo.add(c);
      if (kick) {
        if (c.home) this.bye('an administrator ended this session; reconnect');
        else this.dropOwner(c, `${user}'s mailboxes moved to another node; reconnect`);
      } else if (c.home) this.userMoved();
      else this.ownerMoved(user, undefined);
    }
    while (!this.closed && conns.some((c) => !c.closed && !this.restsQueued(c))) await new Promise((r) => setTimeout(r, 5));
  }

  /**
   * `c` waits for its migration behind another one and nothing is in flight on it: nothing more
   * reaches its node (commands wait for the running migration; the queued one retires `c` before
   * anything else), so its node may let go now. Waiting for `c` to close instead would make this
   * node's release wait for another user's release, which may wait for this one's.
   */
  private restsQueued(c: Conn): boolean {
    if (!this.migrating || !this.queuedMoves.some((q) => q.c === c) || this.busy || this.streamTo?.conn === c) return false;
    const idle = this.idling?.conn === c ? this.idling : undefined;
    if (c.pending.some((p) => idle === undefined || p.clientTag !== idle.clientTag)) return false;
    // An IDLE open there keeps its DONE for the node the queued migration takes it to.
    if (idle) idle.moving = true;
    return true;
  }

  /** The epoch of the home connection's assignment (it changes when the session migrates). */
  get epoch(): number {
    return this.home.epoch;
  }

  private canMigrate(): boolean {
    return this.ctx.migration !== undefined && this.ctx.master !== undefined && !this.closed && !this.closing;
  }

  /** Moves `c` to its user's new node; one move at a time, later ones after it. */
  private migrate(c: Conn, dead: boolean): void {
    if (this.migrating) {
      this.queuedMoves.push({ c, dead });
      return;
    }
    this.migrating = migrateConn(this, c, dead)
      .then((outcome) => {
        this.ctx.metrics?.migration?.(outcome === true ? 'migrated' : 'fell_back');
        if (outcome !== true) {
          this.ctx.log.warn({ user: this.ctx.user, owner: c.owner, why: outcome }, 'session not migrated');
          this.bye(c.home ? 'user moved to another node; reconnect' : `${c.owner}'s mailboxes moved to another node; reconnect`);
        } else this.ctx.log.debug({ user: this.ctx.user, owner: c.owner }, 'session migrated');
      })
      .catch((err: unknown) => {
        this.ctx.log.warn({ user: this.ctx.user, err: String(err) }, 'session migration failed');
        this.bye('user moved to another node; reconnect');
      })
      .finally(() => {
        this.migrating = undefined;
        this.wake?.();
        this.nextMove();
      });
  }

  /** A move asked for while another ran: whatever still needs one now (the rest queue again behind it). */
  private nextMove(): void {
    const { agent, tenant } = this.ctx;
    for (const { c, dead } of this.queuedMoves.splice(0)) {
      if (this.closed) return;
      // The connection that stands for `c` now: the same, or the one a migration put in its place.
      const now = c.home ? this.home : (this.owners.get(c.owner) ?? (this.selected?.conn === c ? c : undefined));
      if (!now) continue;
      if (now === c && dead && c.closed) this.migrate(c, true);
      else if (this.lettingGo.has(now) || agent.locate(tenant, now.owner)?.epoch !== now.epoch) {
        if (now.home) this.userMoved();
        else this.ownerMoved(now.owner, this.lettingGo.has(now) ? undefined : agent.locate(tenant, now.owner)?.epoch);
      }
    }
  }

  private end(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of [this.home, ...this.owners.values()]) {
      c.closed = true;
      c.socket.destroy();
      failPending(c);
      this.uncount(c);
    }
    // Compressed last words go out when the deflater is done (it ends the socket); not later than 2 s.
    if (this.closing && this.io.compressed && !this.client.destroyed) setTimeout(() => this.client.destroy(), 2000).unref();
    else this.client.destroy();
    this.wake?.();
    for (const w of this.quietWaiters.splice(0)) w();
  }

  attach(owner: string, home: boolean, socket: net.Socket, epoch: number): Conn {
    const c = new Conn(this, owner, home, socket, epoch);
    socket.on('data', (chunk: Buffer) => {
      if (this.closed) return;
      // One chunk from the server becomes many slices (a FETCH line, its literal, the closing
      // parenthesis, …): hand them to the kernel together, in one writev.
      this.io.batch(() => c.stream.push(chunk));
      // A client that does not read its output makes the servers wait, not the gateway's memory grow.
      if (this.io.writableLength > MAX_CLIENT_OUTPUT && !this.outputPaused) {
        this.outputPaused = true;
        for (const x of [this.home, ...this.owners.values()]) x.socket.pause();
      }
    });
    socket.on('close', () => {
      if (c.closed) return;
      // The server went away (a Dovecot killed, a node lost): the session follows its user's
      // assignment once it changes, if what the client holds can be carried over.
      if ((home || this.selected?.conn === c) && this.canMigrate()) {
        c.closed = true;
        return this.migrate(c, true);
      }
      c.closed = true;
      if (home) {
        failPending(c);
        if (!this.closed) {
          this.closing = true;
          this.io.end();
        }
        this.end();
      } else {
        this.dropOwner(c, `connection to ${owner}'s mailboxes was lost`);
      }
    });
    socket.on('error', () => socket.destroy());
    if (this.outputPaused) socket.pause();
    else socket.resume();
    return c;
  }

  private resumeOutput(): void {
    if (!this.outputPaused) return;
    this.outputPaused = false;
    for (const x of [this.home, ...this.owners.values()]) if (!x.closed) x.socket.resume();
  }

  uncount(c: Conn): void {
    if (!c.counted) return;
    c.counted = false;
    this.ctx.agent.sessionClosed(this.ctx.tenant, c.owner);
  }

  unselected(conn: Conn): void {
    conn.unselect();
    if (this.selected?.conn === conn) this.selected = undefined;
  }

  dropOwner(c: Conn, reason: string): void {
    c.closed = true;
    c.socket.destroy();
    this.uncount(c);
    if (this.owners.get(c.owner) === c) this.owners.delete(c.owner);
    for (const p of c.pending) if (p.clientTag !== undefined) this.write(`${p.clientTag} NO [UNAVAILABLE] ${reason}\r\n`);
    failPending(c);
    this.notifyQuiet();
    // The client had the owner's mailbox open: it cannot go on without re-selecting somewhere valid.
    if (this.selected?.conn === c) this.bye(reason);
  }

  // ---- responses from backends ----

  classify(c: Conn, line: string): ResponseAction {
    if (this.ctx.migration) {
      observe(c, line);
      // New mail announced during an IDLE: its UIDs are learnt at once, so the session stays movable.
      const idle = this.idling;
      if (idle?.conn === c && (c.view?.unknown ?? 0) > 0 && !idle.moving && !idle.sentDone && !this.idleRefresh) {
        this.idleRefresh = this.refreshIdle(idle).finally(() => (this.idleRefresh = undefined));
      }
    }
    if (line.startsWith('+')) {
      // The continuation of an IDLE carried over from another node: the client has had its own.
      if (this.idling?.conn === c && this.idling.quietPlus) {
        this.idling.quietPlus = false;
        return 'drop';
      }
      return c.clientPending > 0 ? 'forward' : 'drop';
    }
    if (!line.startsWith('* ')) return 'buffer';
    // Only the gateway's own commands are outstanding: capture (response() passes mailbox updates on).
    if (c.pending.length > 0 && c.clientPending === 0) return 'buffer';
    if (c.clientPending === 0 && !c.selected && !c.notify) return 'drop';
    const kind = /^\* (\S+)/.exec(line)?.[1]?.toUpperCase() ?? '';
    // RFC 4731 §3.1: ESEARCH names the command's tag, which upstream is the gateway's own.
    if (kind === 'ESEARCH' && /^\* ESEARCH \(TAG "/i.test(line)) return { edit: (text) => this.clientTagIn(c, text) };
    if (c.home) return ['LIST', 'LSUB', 'STATUS', 'NAMESPACE', 'CAPABILITY'].includes(kind) ? 'buffer' : 'forward';
    if (kind === 'BYE') return 'drop';
    if (c.renames && /^\* \d+ FETCH /i.test(line)) return { edit: fetchItemRenamer(c.renames) };
    return ['STATUS', 'LIST', 'LSUB'].includes(kind) ? 'buffer' : 'forward';
  }

  /** An ESEARCH line with the client's tag in place of the gateway's. */
  private clientTagIn(c: Conn, text: string): string {
    return text.replace(/^(\* ESEARCH \(TAG )"([^"]*)"/i, (whole, head: string, tag: string) => {
      const client = c.pending.find((x) => x.tag === tag)?.clientTag ?? this.updateTags.get(c)?.get(tag);
      return client !== undefined ? `${head}${quote(client)}` : whole;
    });
  }

  /** CANCELUPDATE (RFC 5267 §4.2) names client tags: the connection's searches by their upstream tags. */
  private async cancelUpdate(tag: string, args: ImapValue[], conn: Conn): Promise<void> {
    const tags = args.map(astring);
    if (tags.length === 0 || tags.some((t) => t === undefined)) throw bad(tag, 'CANCELUPDATE needs the tags of searches');
    const known = this.updateTags.get(conn) ?? new Map<string, string>();
    const upstream = (tags as string[]).map((t) => [...known].find(([, c]) => c === t)?.[0]);
    if (upstream.some((t) => t === undefined)) throw new ImapNo(`${tag} NO Unknown tag.\r\n`);
    await this.send(conn, tag, 'CANCELUPDATE', (upstream as string[]).map(str), (status, raw) => {
      if (status === 'OK') for (const u of upstream) known.delete(u!);
      this.forward(raw);
    });
  }

  forward(chunk: Buffer): void {
    this.io.write(chunk);
  }

  response(c: Conn, pieces: Piece[], raw: Buffer): void {
    const first = (pieces[0] && 'text' in pieces[0] ? pieces[0].text : '') ?? '';
    if (!first.startsWith('* ')) {
      const [tag, status] = first.split(' ');
      const i = c.pending.findIndex((p) => p.tag === tag);
      if (i < 0) return;
      const [p] = c.pending.splice(i, 1);
      p!.done((status ?? '').toUpperCase(), retag(raw, p!), pieces);
      this.notifyQuiet();
      return;
    }
    if (c.pending.length === 0 && c.notify && !c.selected && this.answering(c)) {
      // A NOTIFY report while another connection's response is on its way: it waits for the end.
      this.deferred.push({ c, pieces, raw });
      return;
    }
    const internal = c.pending.find((p) => p.clientTag === undefined);
    if (internal && c.clientPending === 0) {
      // Updates of the selected mailbox belong to the client, whoever's command they came with.
      const update = /^\* (\d+ (EXISTS|EXPUNGE|RECENT)\b|VANISHED (?!\(EARLIER\)))/i.test(first) || (internal.fetchIsUpdate === true && !c.renames && /^\* \d+ FETCH /i.test(first));
      if (c.selected && update) this.forward(raw);
      else internal.untagged.push(pieces);
      return;
    }
    const args = splitArgs(pieces);
    const kind = (args[1]?.value ?? '').toUpperCase();
    if (c.home) {
      if (kind === 'CAPABILITY') return this.write(`* CAPABILITY ${this.ctx.capabilities}\r\n`);
      if (kind === 'NAMESPACE' && args.length >= 5) {
        const shared = `((${quote(this.ctx.namespace.prefix)} ${quote(this.ctx.namespace.separator)}))`;
        return this.write(`* NAMESPACE ${args[2]!.raw} ${args[3]!.raw} ${shared}\r\n`);
      }
      if ((kind === 'LIST' || kind === 'LSUB') && args.length >= 5) {
        // The home node's own folders never shadow the shared namespace.
        if (this.ctx.namespace.resolve(args[4]!.value).kind !== 'home') return;
      }
      if (kind === 'STATUS' && args.length >= 3 && this.ctx.namespace.resolve(args[2]!.value).kind !== 'home') return;
      this.forward(raw);
      return;
    }
    const nameAt = kind === 'STATUS' ? 2 : 4;
    const name = args[nameAt];
    const decoded = name ? decodeMutf7(name.value) : undefined;
    if (!name || decoded === undefined) return this.forward(raw);
    if (c.notify && c.clientPending === 0) {
      // A NOTIFY report: only while the user may still read that mailbox (a revoke ends its reports).
      const r = this.ctx.agent.access(this.ctx.tenant, this.ctx.user, c.owner, decoded);
      if (r === undefined || !hasAll(r, L) || !hasAll(r, R)) return;
    }
    const mapped = args.map((a, i) => (i === nameAt ? quote(this.ctx.namespace.nameOf(c.owner, decoded)) : a.raw));
    this.write(`${mapped.join(' ')}\r\n`);
  }

  // ---- the command loop ----

  private async loop(): Promise<void> {
    while (!this.closed) {
      const ev = this.reader.next();
      if (this.paused && this.reader.buffered < 1 << 18) {
        this.paused = false;
        this.io.resume();
      }
      if (!ev) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        continue;
      }
      // Commands that come while a connection moves run on the new node (the move is bounded).
      if (ev.kind === 'command' || ev.kind === 'bad') while (this.migrating && !this.closed) await this.migrating;
      if (this.closed) return;
      try {
        this.busy = true;
        await this.handle(ev);
      } catch (err) {
        if (!(err instanceof ImapNo || err instanceof BackendUnavailable || err instanceof WireError)) throw err;
        if (ev.kind === 'command' && ev.streaming) {
          this.reader.discard();
          this.streamTo = undefined;
        }
        await this.quiet();
        if (ev.kind !== 'command') continue;
        if (err instanceof ImapNo) this.write(err.response);
        else if (err instanceof BackendUnavailable) this.write(`${ev.tag} NO [UNAVAILABLE] The mail server of that mailbox cannot be reached. Try again later.\r\n`);
        else {
          this.ctx.log.warn({ user: this.ctx.user, err: String(err) }, 'command not written');
          this.write(`${ev.tag} BAD Invalid arguments.\r\n`);
        }
      } finally {
        this.busy = false;
        this.releaseIdleOwners();
      }
    }
  }

  private async handle(ev: ParserEvent): Promise<void> {
    switch (ev.kind) {
      case 'continue':
        return this.write('+ Ready for literal data\r\n');
      case 'bad':
        await this.quiet();
        this.write(`${ev.tag} BAD ${ev.message}\r\n`);
        if (ev.close) this.bye(ev.message);
        return;
      case 'line':
        return this.idleLine(ev.text, ev.overflow === true);
      case 'data': {
        const to = this.streamTo?.conn;
        if (to && !to.closed && !to.socket.write(ev.chunk)) await new Promise<void>((r) => to.socket.once('drain', r));
        return;
      }
      case 'append-next':
        return this.appendNext(ev.args, ev.streaming);
      case 'end': {
        const to = this.streamTo?.conn;
        this.streamTo = undefined;
        // After a message, anything but the next message or CRLF makes the server refuse the whole
        // command (RFC 3502 §6.3.11: nothing is appended): an unbalanced ")" is such a token.
        if (to && !to.closed) to.socket.write(ev.error ? ' )\r\n' : '\r\n', 'latin1');
        return;
      }
      case 'command':
        return this.command(ev.tag, ev.name, ev.args, ev.streaming);
    }
  }

  private async command(tag: string, name: string, args: ImapValue[], streaming?: Streaming): Promise<void> {
    if (ACL_COMMANDS.has(name)) return aclCommand(this, tag, name, args);
    const refused = REFUSED.get(name);
    if (refused) throw new ImapNo(`${tag} ${refused}\r\n`);
    if (!/^[A-Z][A-Z0-9-]*$/.test(name)) throw bad(tag, 'Unknown command.');
    switch (name) {
      case 'CAPABILITY':
        await this.quiet();
        return this.write(`* CAPABILITY ${this.ctx.capabilities}\r\n${tag} OK Capability completed\r\n`);
      case 'LOGOUT':
        await this.exclusive(this.home, tag, name, []);
        for (const c of this.owners.values()) c.socket.end(command(this.nextTag(), 'LOGOUT', []));
        this.closing = true;
        this.io.end();
        this.end();
        return;
      case 'ENABLE': {
        const wrong = checkEnable(args);
        if (wrong) throw bad(tag, wrong);
        await this.exclusive(this.home, tag, name, args);
        const names = args.map((a) => (a as { value: string }).value);
        this.enabled.push(...names);
        for (const c of this.owners.values()) await this.internal(c, 'ENABLE', names.map(atom));
        return;
      }
      case 'LIST':
      case 'LSUB':
        return listCommand(this, tag, name, args);
      case 'NOTIFY':
        return notifyCommand(this, tag, args);
      case 'COMPRESS': {
        // RFC 4978. What the client sent after the command is compressed already: it is taken out
        // of the parser now, before anything else reads it, and inflated once compression starts.
        if (this.io.compressed) throw new ImapNo(`${tag} NO [COMPRESSIONACTIVE] DEFLATE is active already.\r\n`);
        if (args.length !== 1 || atomUpper(args[0]) !== 'DEFLATE') throw new ImapNo(`${tag} NO Unknown compression mechanism.\r\n`);
        const rest = this.reader.take();
        this.io.holdInput();
        await this.quiet();
        this.write(`${tag} OK DEFLATE active.\r\n`);
        this.io.startCompression(rest);
        return;
      }
      case 'SELECT':
      case 'EXAMINE':
        return selectCommand(this, tag, name, args);
      case 'STATUS':
      case 'SUBSCRIBE':
      case 'UNSUBSCRIBE':
      case 'CREATE':
      case 'DELETE':
      case 'RENAME':
      case 'APPEND':
        return mailboxCommand(this, tag, name, args, streaming);
    }
    if (name === 'UID' && !UID_COMMANDS.has(atomUpper(args[0]) ?? '')) throw bad(tag, 'UID needs FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE, SORT or THREAD.');
    const sel = this.selected;
    if (name === 'CANCELUPDATE') return this.cancelUpdate(tag, args, sel?.conn ?? this.home);
    if (SELECTED_STATE.has(name) && sel && sel.target.kind === 'shared') return sharedSelected(this, tag, name, args, sel.conn, sel.target);
    if (name === 'IDLE') {
      const wrong = checkNoArgs(name, args);
      if (wrong) throw bad(tag, wrong);
      return this.idle(this.home, tag);
    }
    if (name === 'CLOSE' || name === 'UNSELECT') {
      const home = this.home;
      await this.exclusive(home, tag, name, args, { onStatus: (status) => {
        if (status !== 'OK') return;
        this.selected = undefined;
        home.unselect();
      } });
      return;
    }
    const copyVerb = name === 'UID' ? atomUpper(args[0]) : name;
    if ((copyVerb === 'COPY' || copyVerb === 'MOVE') && sel) {
      const uid = name === 'UID';
      const rest = uid ? args.slice(1) : args;
      const to = this.resolve(astring(rest[1]) ?? '');
      if (to.kind === 'parent' || to.kind === 'invalid') throw nonexistent(tag);
      if (to.kind === 'shared') {
        const wrong = checkCopy(rest);
        if (wrong) throw bad(tag, `${copyVerb} ${wrong}`);
        const tr = this.visible(tag, to);
        this.require(tag, tr, I, 'Copying into that mailbox');
        return crossCopy(this, tag, copyVerb === 'MOVE', uid, rest[0]!, this.home, to, tr);
      }
    }
    return this.send(this.home, tag, name, args);
  }

  // ---- mailbox-named commands ----

  resolve(wire: string): Target | { kind: 'parent' } | { kind: 'invalid' } {
    const r = this.ctx.namespace.resolve(wire);
    if (r.kind === 'shared' && r.owner === this.ctx.user) return { kind: 'invalid' };
    return r;
  }

  rights(t: Target): Rights | undefined {
    if (t.kind === 'home') return undefined;
    return this.ctx.agent.access(this.ctx.tenant, this.ctx.user, t.owner, t.name);
  }

  /** A shared mailbox the user may see (RFC 4314 §6: without "l" it does not exist), with the rights held. */
  visible(tag: string, t: Target & { kind: 'shared' }): Rights {
    const r = this.rights(t);
    if (r === undefined || !hasAny(r, L)) throw nonexistent(tag);
    return r;
  }

  require(tag: string, have: Rights, need: Rights, what: string): void {
    if (!hasAll(have, need)) throw new ImapNo(`${tag} NO [NOPERM] ${what} needs the "${formatRights(need)}" right\r\n`);
  }

  /** MULTIAPPEND (RFC 3502): the next message of the streaming APPEND, its flags filtered like the first one's. */
  private async appendNext(args: ImapValue[], streaming: Streaming): Promise<void> {
    const to = this.streamTo;
    if (!to || to.conn.closed) return;
    const message = parseAppendMessage(args);
    if (typeof message === 'string') {
      // The server refuses the command as a whole; its tagged BAD reaches the client.
      this.streamTo = undefined;
      this.reader.discard();
      to.conn.socket.write(' )\r\n', 'latin1');
      return;
    }
    const values = to.rights === undefined ? args : appendArgs(message, to.rights);
    to.conn.socket.write(`${values.length > 0 ? ` ${wireAll(values)}` : ''} ${literalMarker(streaming)}\r\n`, 'latin1');
  }

  async idle(conn: Conn, clientTag: string): Promise<void> {
    await this.barrier(conn, true);
    if (conn.closed) throw new BackendUnavailable('connection closed');
    const state: IdleState = { conn, clientTag, sentDone: false, badDone: false, moving: false, quietPlus: false };
    this.idling = state;
    this.reader.expectLine();
    this.idleOn(state);
  }

  /** Sends IDLE for `state` on its connection (again, on a new node, after a migration). */
  idleOn(state: IdleState): void {
    const tag = this.nextTag();
    this.enqueue(state.conn, tag, state.clientTag, (status, raw) => {
      // The connection went while the session moves: the client's IDLE goes on at the new node.
      if (state.moving) return;
      this.idling = undefined;
      if (!state.sentDone) this.reader.cancelLine();
      // RFC 2177: IDLE ends with "DONE" alone; anything else is refused as Dovecot does.
      if (state.badDone && status === 'OK') this.write(`${state.clientTag} BAD Expected DONE.\r\n`);
      else this.forward(raw);
    });
    state.conn.socket.write(command(tag, 'IDLE', []), 'latin1');
  }

  /**
   * The client is in IDLE and was told of messages whose UIDs the gateway
   * does not know: the IDLE upstream ends (DONE), a FETCH of their UIDs
   * runs, and IDLE starts again, all unseen by the client, whose IDLE stays
   * open (a DONE it sends meanwhile is answered at the end).
   */
  private async refreshIdle(state: IdleState): Promise<void> {
    await Promise.resolve();
    const c = state.conn;
    if (this.closed || c.closed || state.sentDone || this.idling !== state) return;
    state.moving = true;
    c.socket.write('DONE\r\n', 'latin1');
    for (let i = 0; i < 3 && c.view && c.view.unknown > 0 && !c.closed; i++) {
      await this.internal(c, 'FETCH', [atom(`${c.view.known + 1}:*`), list([atom('UID')])]);
    }
    // A migration that started meanwhile carries the IDLE over itself.
    if (this.closed || c.closed || this.idling !== state || state.conn !== c) return;
    this.resumeIdle(state, c);
  }

  /**
   * The client's IDLE goes on at `conn` after its upstream IDLE ended
   * behind its back: sent again (its continuation not shown twice), or,
   * when the client sent its DONE meanwhile, answered here.
   */
  resumeIdle(state: IdleState, conn: Conn): void {
    state.conn = conn;
    state.moving = false;
    if (state.sentDone) {
      this.idling = undefined;
      this.write(`${state.clientTag} ${state.badDone ? 'BAD Expected DONE.' : 'OK Idle completed.'}\r\n`);
      return;
    }
    state.quietPlus = true;
    this.idleOn(state);
  }

  /** The line after IDLE: only "DONE" is sent on, whatever the client wrote. */
  private idleLine(text: string, overflow: boolean): void {
    const idle = this.idling;
    if (!idle || idle.sentDone || (idle.conn.closed && !idle.moving)) return;
    idle.sentDone = true;
    idle.badDone = overflow || text.toUpperCase() !== 'DONE';
    // While the session moves, the DONE is answered when it has (see migration.ts).
    if (!idle.moving) idle.conn.socket.write('DONE\r\n', 'latin1');
  }

  // ---- connections ----

  async ownerConn(owner: string): Promise<Conn> {
    const { agent, tenant } = this.ctx;
    const existing = this.owners.get(owner);
    if (existing && !existing.closed) {
      if (agent.locate(tenant, owner)?.epoch === existing.epoch) return existing;
      this.dropOwner(existing, `${owner}'s mailboxes moved to another node; reconnect`);
      if (this.closed) throw new BackendUnavailable('session closed');
    }
    if (!this.ctx.master) throw new BackendUnavailable('no master user configured for shared mailboxes');
    const located = agent.locate(tenant, owner);
    let epoch: number;
    let node: string;
    let address: string | undefined;
    if (located) {
      epoch = located.epoch;
      node = located.node;
      address = agent.nodeAddress(located.node);
    } else {
      const a = await agent.assign(tenant, owner).catch((err: unknown) => {
        throw new BackendUnavailable(String(err));
      });
      epoch = a.epoch;
      node = a.node;
      address = a.imapAddress;
    }
    if (!address) throw new BackendUnavailable(`no address for ${owner}'s node`);
    // A kept connection has the same extensions enabled as this session (ENABLE changes responses).
    const key = { tenant, owner, address, epoch, clientIp: this.ctx.client.ip, enabled: this.enabledKey() };
    const kept = this.ctx.ownerPool.take(key);
    if (kept) {
      // Still counted as a session of the owner (the pool counted it while it was kept).
      const conn = this.attach(owner, false, kept, epoch);
      conn.poolKey = key;
      conn.counted = true;
      this.owners.set(owner, conn);
      return conn;
    }
    const login = await backendLogin(address, 'mailshare.login', `${this.ctx.dovecotName(owner)}*${this.ctx.master.user}`, this.ctx.master.password, { via: this.ctx.backends, client: this.ctx.client });
    if (!login.ok) throw new BackendUnavailable(`the master login for ${owner} was refused`);
    const conn = this.attach(owner, false, login.socket, epoch);
    conn.poolKey = key;
    this.owners.set(owner, conn);
    conn.counted = true;
    agent.sessionOpened(tenant, owner, node);
    if (this.enabled.length > 0) await this.internal(conn, 'ENABLE', this.enabled.map(atom));
    return conn;
  }

  private enabledKey(): string {
    return [...new Set(this.enabled.map((e) => e.toUpperCase()))].sort().join(' ');
  }

  /**
   * Between commands, owner connections the session does not need (nothing
   * selected there, no IDLE, no NOTIFY, nothing outstanding) go back to the
   * gateway's pool; the next command on that owner's mailboxes takes one.
   */
  private releaseIdleOwners(): void {
    // Not while a connection moves: the new one is not selected yet, but it is the session's.
    if (this.busy || this.closed || this.migrating) return;
    for (const c of [...this.owners.values()]) {
      if (c.closed || c.pending.length > 0 || c.selected || c.notify || this.idling?.conn === c || this.streamTo?.conn === c || !c.poolKey) continue;
      this.owners.delete(c.owner);
      c.closed = true;
      c.socket.removeAllListeners('data');
      c.socket.removeAllListeners('close');
      c.socket.removeAllListeners('error');
      const key = { ...c.poolKey, enabled: this.enabledKey() };
      if (this.ctx.ownerPool.give(key, c.socket)) {
        // The pool holds the count now.
        c.counted = false;
      } else {
        c.socket.end(command(this.nextTag(), 'LOGOUT', []), 'latin1');
        this.uncount(c);
      }
    }
  }

  // ---- sending ----

  nextTag(): string {
    return `m${++this.tagSeq}`;
  }

  enqueue(conn: Conn, tag: string, clientTag: string | undefined, done: Pending['done'], name?: string, fetchIsUpdate = false): Pending {
    const p: Pending = { tag, clientTag, name, untagged: [], done, fetchIsUpdate };
    conn.pending.push(p);
    return p;
  }

  /**
   * Waits until no other connection has client commands outstanding (and,
   * when `all`, this one neither): responses then never interleave.
   */
  private async barrier(conn: Conn, all: boolean): Promise<void> {
    // The gateway's own commands on `conn` (the UID SEARCH after a SELECT) finish first too:
    // their responses are the gateway's, never mixed with a client command's.
    const busy = (): boolean => [this.home, ...this.owners.values()].some((c) => ((c !== conn || all) && c.pending.length > 0) || (c === conn && c.pending.some((p) => p.clientTag === undefined)));
    while (busy() && !this.closed) await new Promise<void>((r) => this.quietWaiters.push(r));
  }

  quiet(): Promise<void> {
    return this.barrier(this.home, true);
  }

  private notifyQuiet(): void {
    for (const w of this.quietWaiters.splice(0)) w();
    this.releaseIdleOwners();
    if (this.deferred.length > 0 && !this.answering(undefined)) {
      for (const d of this.deferred.splice(0)) if (!d.c.closed) this.response(d.c, d.pieces, d.raw);
    }
  }

  /** Whether a connection other than `c` has commands outstanding (its responses may be mid-way). */
  private answering(c: Conn | undefined): boolean {
    return [this.home, ...this.owners.values()].some((x) => x !== c && x.pending.length > 0);
  }

  /** Sends a client command, written from its values; its tagged response is forwarded (or given to `done`). */
  async send(conn: Conn, clientTag: string, name: string, args: readonly ImapValue[], done?: Pending['done'], streaming?: Streaming): Promise<void> {
    const timed = this.timer(name, args);
    await this.barrier(conn, false);
    while (conn.pending.length >= MAX_PIPELINE && !conn.closed && !this.closed) await new Promise<void>((r) => this.quietWaiters.push(r));
    if (conn.closed) throw new BackendUnavailable('connection closed');
    const tag = this.nextTag();
    const line = streaming ? `${commandHead(tag, name, args)} ${literalMarker(streaming)}\r\n` : command(tag, name, args);
    if (returnsOption(name, args, 'SAVE')) conn.savedSearch = true;
    // RETURN (UPDATE) (RFC 5267 §4): the search outlives its command.
    if (returnsOption(name, args, 'UPDATE')) {
      const known = this.updateTags.get(conn) ?? new Map<string, string>();
      this.updateTags.set(conn, known);
      // A server keeps few such searches (Dovecot: a handful); so does the gateway's table.
      if (known.size >= 64) known.delete(known.keys().next().value!);
      known.set(tag, clientTag);
    }
    this.enqueue(conn, tag, clientTag, (status, raw, pieces) => {
      timed();
      // Answered before the client sent its synchronizing literal: it will not send it.
      if (streaming && this.reader.cancelSyncLiteral(clientTag) && this.streamTo?.conn === conn) this.streamTo = undefined;
      if (done) done(status, raw, pieces);
      else this.forward(raw);
    }, name);
    conn.socket.write(line, 'latin1');
  }

  /**
   * A command that changes state: earlier commands finish first, and the
   * next command waits for this one. `after` runs before the client sees
   * the tagged response (e.g. updating mailshare's registry).
   */
  async exclusive(
    conn: Conn,
    clientTag: string,
    name: string,
    args: readonly ImapValue[],
    hooks: {
      /** Runs once the connection is this command's alone, right before it is sent. */
      start?: () => void;
      onStatus?: (status: string) => void;
      after?: (status: string) => Promise<void> | undefined;
    } = {},
  ): Promise<void> {
    const { start, onStatus, after } = hooks;
    const timed = this.timer(name, args);
    await this.barrier(conn, true);
    if (conn.closed) throw new BackendUnavailable('connection closed');
    const line = command(this.nextTag(), name, args);
    start?.();
    const tag = line.slice(0, line.indexOf(' '));
    const result = await new Promise<{ status: string; raw: Buffer }>((resolve) => {
      this.enqueue(conn, tag, clientTag, (status, raw) => {
        timed();
        onStatus?.(status);
        if (!after) this.forward(raw);
        resolve({ status, raw });
      }, name);
      conn.socket.write(line, 'latin1');
    });
    if (after) {
      await after(result.status);
      this.forward(result.raw);
    }
  }

  /** Starts the clock of a client command; the function returned records it (once). */
  private timer(name: string, args: readonly ImapValue[]): () => void {
    const metrics = this.ctx.metrics;
    if (!metrics) return () => undefined;
    const started = performance.now();
    const first = args[0];
    const label = commandLabel(name, first?.type === 'atom' ? first.value : undefined);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      metrics.command(label, (performance.now() - started) / 1000);
    };
  }

  /** A command of the gateway's own; its responses are captured, never shown to the client. */
  async internal(conn: Conn, name: string, args: readonly ImapValue[]): Promise<{ status: string; untagged: Piece[][]; line: string }> {
    await this.barrier(conn, true);
    const tag = this.nextTag();
    const line = command(tag, name, args);
    return new Promise((resolve) => {
      const p = this.enqueue(conn, tag, undefined, (status, raw) => resolve({ status, untagged: p.untagged, line: raw.toString('latin1') }), name);
      conn.socket.write(line, 'latin1');
    });
  }

  /**
   * After a SELECT or EXAMINE on `conn` succeeded: the gateway's own UID
   * SEARCH, sent at once, gives the UIDs the client's sequence numbers
   * stand for (view-tracker.ts keeps them from then on), so the session
   * can migrate. Client commands on `conn` wait for it (barrier).
   */
  trackView(conn: Conn): void {
    conn.view = undefined;
    if (!this.ctx.migration || conn.closed) return;
    const tag = this.nextTag();
    conn.viewTag = tag;
    this.enqueue(
      conn,
      tag,
      undefined,
      (status) => {
        if (status !== 'OK' && conn.viewTag === tag) conn.viewTag = undefined;
      },
      'UID',
      true,
    );
    conn.socket.write(command(tag, 'UID', [atom('SEARCH'), atom('RETURN'), list([atom('ALL')]), atom('ALL')]), 'latin1');
  }

  write(s: string): void {
    this.io.write(s, 'latin1');
  }
}

/** SEARCH or SORT (UID too) with `option` among its RETURN options (RFC 4731, 5182, 5267). */
function returnsOption(name: string, args: readonly ImapValue[], option: string): boolean {
  const rest = name === 'UID' ? args.slice(1) : args;
  const verb = name === 'UID' ? atomUpper(args[0]) : name;
  if (verb !== 'SEARCH' && verb !== 'SORT') return false;
  const opts = rest[1];
  return atomUpper(rest[0]) === 'RETURN' && opts?.type === 'list' && opts.items.some((o) => atomUpper(o) === option);
}

function literalMarker(s: Streaming): string {
  return `${s.binary ? '~' : ''}{${s.length}${s.sync ? '' : '+'}}`;
}
