import type net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Agent, AgentLogger } from '../agent/agent.js';
import { type Rights, formatRights, formatRightsForResponse, hasAll, hasAny, L, rightsOf } from '../domain/rights.js';
import { parseMailboxName } from '../domain/mailbox-name.js';
import { BackendUnavailable, backendLogin, backendScript } from './backend.js';
import { ClientStream, type ClientEvent } from './client-stream.js';
import type { CoordinatorClients } from './coordinators.js';
import { type Arg, type Piece, fetchItemRenamer, listItems, quote, splitArgs } from './imap-syntax.js';
import { decodeMutf7 } from './mutf7.js';
import { type ResponseAction, ResponseStream } from './response-stream.js';
import type { SharedNamespace } from './shared-namespace.js';

export interface SessionContext {
  readonly agent: Agent;
  readonly tenant: string;
  readonly user: string;
  /** Epoch of the user's assignment when the session began. */
  readonly epoch: number;
  readonly namespace: SharedNamespace;
  /** Dovecot master user (auth_master_user_separator "*") for connections to owners' nodes. */
  readonly master: { user: string; password: string } | undefined;
  /** The coordinators, for ACL and mailbox calls. */
  readonly api: CoordinatorClients;
  readonly metadata: grpc.Metadata;
  readonly capabilities: string;
  readonly log: AgentLogger;
}

const R = rightsOf('r');
const S = rightsOf('s');
const W = rightsOf('w');
const I = rightsOf('i');
const K = rightsOf('k');
const X = rightsOf('x');
const T = rightsOf('t');
const E = rightsOf('e');
const WRITE_ANY = rightsOf('swte');

/** Commands that act on the selected mailbox (RFC 3501 §6.4 and extensions). */
const SELECTED_STATE = new Set(['CHECK', 'CLOSE', 'UNSELECT', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE', 'UID', 'SORT', 'THREAD', 'NOOP', 'IDLE']);
/** Commands answered from mailshare (RFC 4314 §3). */
const ACL_COMMANDS = new Set(['GETACL', 'SETACL', 'DELETEACL', 'LISTRIGHTS', 'MYRIGHTS']);

interface Pending {
  readonly tag: string;
  /** A client's command: its responses go to the client. Internal ones are captured. */
  readonly client: boolean;
  readonly untagged: Piece[][];
  done(status: string, raw: Buffer, pieces: Piece[]): void;
}

/** One IMAP connection behind the session: the user's home node, or an owner's node as that owner. */
class Conn {
  readonly pending: Pending[] = [];
  readonly stream: ResponseStream;
  selected = false;
  closed = false;
  /** Reported to the agent as a session of the owner (so the owner's node does not release the owner as idle). */
  counted = false;
  /** While a client FETCH asked for RFC822 items fetched as BODY.PEEK[…]: the answers' names to restore. */
  renames: ReadonlyMap<string, string> | undefined;
  constructor(
    readonly session: Session,
    readonly owner: string,
    readonly home: boolean,
    readonly socket: net.Socket,
    readonly epoch: number,
  ) {
    this.stream = new ResponseStream({
      classify: (line) => session.classify(this, line),
      forward: (chunk) => session.forward(chunk),
      response: (pieces, raw) => session.response(this, pieces, raw),
    });
  }

  get clientPending(): number {
    return this.pending.filter((p) => p.client).length;
  }
}

type Target = { kind: 'home'; wire: string } | { kind: 'shared'; owner: string; name: string; wire: string };

class ImapNo extends Error {
  constructor(readonly response: string) {
    super(response);
  }
}

/**
 * One authenticated client. Commands are read (heads parsed, APPEND
 * messages streamed) and routed: to the home node's Dovecot for the user's
 * own mailboxes, to a connection logged in as the owner (master user) on the
 * owner's node for shared ones, or answered here (ACL commands, shared LIST
 * entries). Rights are checked against the agent's watch-fed cache before
 * anything reaches an owner's node (RFC 4314 §4). Responses stream back as
 * they arrive; only the few that carry names of the shared namespace are
 * rewritten. Commands to one connection pipeline; a command for another
 * connection, or one that changes the selected mailbox, waits until the
 * earlier ones completed, so responses never interleave mid-response.
 */
export class Session {
  private readonly reader = new ClientStream();
  private readonly home: Conn;
  private readonly owners = new Map<string, Conn>();
  private selected: { conn: Conn; target: Target } | undefined;
  private streamTo: Conn | undefined;
  private idleConn: Conn | undefined;
  private wake: (() => void) | undefined;
  private quietWaiters: Array<() => void> = [];
  private closed = false;
  private paused = false;
  private internalTag = 0;
  private enabled: string[] = [];
  readonly done: Promise<void>;

  constructor(
    private readonly ctx: SessionContext,
    private readonly client: net.Socket,
    homeSocket: net.Socket,
    pending: Buffer,
  ) {
    this.home = this.attach(ctx.user, true, homeSocket, ctx.epoch);
    this.reader.feed(pending);
    client.on('data', (chunk: Buffer) => {
      this.reader.feed(chunk);
      if (this.reader.buffered > 1 << 20 && !this.paused) {
        this.paused = true;
        client.pause();
      }
      this.wake?.();
    });
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
    if (!this.client.destroyed) this.client.end(`* BYE [UNAVAILABLE] ${reason}\r\n`);
    this.end();
  }

  /** An owner's assignment changed: drop the connection to that owner's old node. */
  ownerMoved(owner: string, epoch: number | undefined): void {
    const c = this.owners.get(owner);
    if (c && c.epoch !== epoch) this.dropOwner(c, `${owner}'s mailboxes moved to another node; reconnect`);
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
    this.client.destroy();
    this.wake?.();
    for (const w of this.quietWaiters.splice(0)) w();
  }

  private attach(owner: string, home: boolean, socket: net.Socket, epoch: number): Conn {
    const c = new Conn(this, owner, home, socket, epoch);
    socket.on('data', (chunk: Buffer) => {
      if (this.closed) return;
      // One chunk from the server becomes many slices (a FETCH line, its literal, the closing
      // parenthesis, …): hand them to the kernel together, in one writev.
      this.client.cork();
      c.stream.push(chunk);
      this.client.uncork();
    });
    socket.on('close', () => {
      if (c.closed) return;
      c.closed = true;
      if (home) {
        failPending(c);
        if (!this.closed) this.client.end();
        this.end();
      } else {
        this.dropOwner(c, `connection to ${owner}'s mailboxes was lost`);
      }
    });
    socket.on('error', () => socket.destroy());
    socket.resume();
    return c;
  }

  private uncount(c: Conn): void {
    if (!c.counted) return;
    c.counted = false;
    this.ctx.agent.sessionClosed(this.ctx.tenant, c.owner);
  }

  private dropOwner(c: Conn, reason: string): void {
    c.closed = true;
    c.socket.destroy();
    this.uncount(c);
    if (this.owners.get(c.owner) === c) this.owners.delete(c.owner);
    for (const p of c.pending) if (p.client) this.write(`${p.tag} NO [UNAVAILABLE] ${reason}\r\n`);
    failPending(c);
    this.notifyQuiet();
    // The client had the owner's mailbox open: it cannot go on without re-selecting somewhere valid.
    if (this.selected?.conn === c) this.bye(reason);
  }

  // ---- responses from backends ----

  classify(c: Conn, line: string): ResponseAction {
    if (line.startsWith('+')) return c.clientPending > 0 ? 'forward' : 'drop';
    if (!line.startsWith('* ')) return 'buffer';
    // Only the gateway's own commands are outstanding: capture (response() passes mailbox updates on).
    if (c.pending.length > 0 && c.clientPending === 0) return 'buffer';
    if (c.clientPending === 0 && !c.selected) return 'drop';
    const kind = /^\* (\S+)/.exec(line)?.[1]?.toUpperCase() ?? '';
    if (c.home) return ['LIST', 'LSUB', 'NAMESPACE', 'CAPABILITY'].includes(kind) ? 'buffer' : 'forward';
    if (kind === 'BYE') return 'drop';
    if (c.renames && /^\* \d+ FETCH /i.test(line)) return { edit: fetchItemRenamer(c.renames) };
    return ['STATUS', 'LIST', 'LSUB'].includes(kind) ? 'buffer' : 'forward';
  }

  forward(chunk: Buffer): void {
    if (!this.client.destroyed) this.client.write(chunk);
  }

  response(c: Conn, pieces: Piece[], raw: Buffer): void {
    const first = (pieces[0] && 'text' in pieces[0] ? pieces[0].text : '') ?? '';
    if (!first.startsWith('* ')) {
      const [tag, status] = first.split(' ');
      const i = c.pending.findIndex((p) => p.tag === tag);
      if (i < 0) return;
      const [p] = c.pending.splice(i, 1);
      p!.done((status ?? '').toUpperCase(), raw, pieces);
      this.notifyQuiet();
      return;
    }
    const internal = c.pending.find((p) => !p.client);
    if (internal && c.clientPending === 0) {
      // Updates of the selected mailbox belong to the client, whoever's command they came with.
      if (c.selected && /^\* \d+ (EXISTS|EXPUNGE|RECENT)\b/i.test(first)) this.forward(raw);
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
      this.forward(raw);
      return;
    }
    const nameAt = kind === 'STATUS' ? 2 : 4;
    const name = args[nameAt];
    const decoded = name ? decodeMutf7(name.value) : undefined;
    if (!name || decoded === undefined) return this.forward(raw);
    const mapped = args.map((a, i) => (i === nameAt ? quote(this.ctx.namespace.nameOf(c.owner, decoded)) : a.raw));
    this.write(`${mapped.join(' ')}\r\n`);
  }

  // ---- the command loop ----

  private async loop(): Promise<void> {
    while (!this.closed) {
      const ev = this.reader.next();
      if (this.paused && this.reader.buffered < 1 << 18) {
        this.paused = false;
        this.client.resume();
      }
      if (!ev) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        continue;
      }
      try {
        await this.handle(ev);
      } catch (err) {
        if (err instanceof ImapNo) {
          await this.quiet();
          this.write(err.response);
          if (ev.kind === 'command' && ev.streaming) this.reader.discard();
        } else if (err instanceof BackendUnavailable) {
          await this.quiet();
          if (ev.kind === 'command') {
            this.write(`${ev.tag} NO [UNAVAILABLE] The mail server of that mailbox cannot be reached. Try again later.\r\n`);
            if (ev.streaming) this.reader.discard();
          }
        } else {
          throw err;
        }
      }
    }
  }

  private async handle(ev: ClientEvent): Promise<void> {
    switch (ev.kind) {
      case 'continue':
        return this.write('+ Ready for literal data\r\n');
      case 'bad':
        if (this.streamTo) return this.bye('malformed command');
        await this.quiet();
        return this.write(`${ev.tag} BAD ${ev.message}\r\n`);
      case 'line':
        if (this.idleConn && !this.idleConn.closed) this.idleConn.socket.write(`${ev.text}\r\n`, 'latin1');
        return;
      case 'data':
        if (this.streamTo && !this.streamTo.closed && !this.streamTo.socket.write(ev.chunk)) {
          await new Promise<void>((r) => this.streamTo!.socket.once('drain', r));
        }
        return;
      case 'end':
        this.streamTo = undefined;
        return;
      case 'command':
        return this.command(ev.tag, ev.name, ev.args, ev.streaming);
    }
  }

  private async command(tag: string, name: string, args: Arg[], streaming?: { length: number; sync: boolean }): Promise<void> {
    const raw = (rest: Arg[]): string => [tag, name, ...rest.map((a) => a.raw)].join(' ');
    if (ACL_COMMANDS.has(name)) return this.aclCommand(tag, name, args);
    switch (name) {
      case 'CAPABILITY':
        await this.quiet();
        return this.write(`* CAPABILITY ${this.ctx.capabilities}\r\n${tag} OK Capability completed\r\n`);
      case 'LOGOUT':
        await this.exclusive(this.home, raw(args));
        for (const c of this.owners.values()) c.socket.end(`mailshare.bye LOGOUT\r\n`);
        this.client.end();
        this.end();
        return;
      case 'ENABLE': {
        await this.exclusive(this.home, raw(args));
        this.enabled.push(...args.map((a) => a.value));
        for (const c of this.owners.values()) await this.internal(c, `ENABLE ${args.map((a) => a.raw).join(' ')}`);
        return;
      }
      case 'LIST':
      case 'LSUB':
        return this.list(tag, name, args);
      case 'SELECT':
      case 'EXAMINE':
        return this.select(tag, name, args);
      case 'STATUS':
      case 'SUBSCRIBE':
      case 'UNSUBSCRIBE':
      case 'CREATE':
      case 'DELETE':
      case 'RENAME':
      case 'APPEND':
        return this.mailboxCommand(tag, name, args, streaming);
    }
    const sel = this.selected;
    if (SELECTED_STATE.has(name) && sel && sel.target.kind === 'shared') return this.sharedSelected(tag, name, args, sel.conn, sel.target);
    if (name === 'IDLE') return this.idle(this.home, raw(args));
    if (name === 'CLOSE' || name === 'UNSELECT') {
      await this.exclusive(this.home, raw(args), { onStatus: (status) => {
        if (status === 'OK') this.selected = undefined;
      } });
      return;
    }
    if ((name === 'COPY' || name === 'MOVE' || (name === 'UID' && /^(COPY|MOVE)$/i.test(args[0]?.value ?? ''))) && sel) {
      const uid = name === 'UID';
      const at = uid ? 2 : 1;
      const to = this.resolve(args[at]?.value ?? '');
      if (to.kind === 'parent' || to.kind === 'invalid') throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
      if (to.kind === 'shared') {
        const tr = this.visible(tag, to);
        this.require(tag, tr, I, 'Copying into that mailbox');
        const move = (uid ? args[0]!.value : name).toUpperCase() === 'MOVE';
        return this.crossCopy(tag, move, uid, args[at - 1]?.raw ?? '', this.home, to, tr);
      }
    }
    return this.send(this.home, raw(args));
  }

  // ---- mailbox-named commands ----

  private resolve(wire: string): Target | { kind: 'parent' } | { kind: 'invalid' } {
    const r = this.ctx.namespace.resolve(wire);
    if (r.kind === 'shared' && r.owner === this.ctx.user) return { kind: 'invalid' };
    return r;
  }

  private rights(t: Target): Rights | undefined {
    if (t.kind === 'home') return undefined;
    return this.ctx.agent.access(this.ctx.tenant, this.ctx.user, t.owner, t.name);
  }

  /** A shared mailbox the user may see (RFC 4314 §6: without "l" it does not exist), with the rights held. */
  private visible(tag: string, t: Target & { kind: 'shared' }): Rights {
    const r = this.rights(t);
    if (r === undefined || !hasAny(r, L)) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
    return r;
  }

  private require(tag: string, have: Rights, need: Rights, what: string): void {
    if (!hasAll(have, need)) throw new ImapNo(`${tag} NO [NOPERM] ${what} needs the "${formatRights(need)}" right\r\n`);
  }

  private async list(tag: string, name: string, args: Arg[]): Promise<void> {
    const plain = args.length === 2 && !args[0]!.list;
    const extra = plain ? this.sharedEntries(name, args[0]!.value, args[1]!.value) : [];
    await this.send(this.home, [tag, name, ...args.map((a) => a.raw)].join(' '), (status, line) => {
      if (status === 'OK') for (const l of extra) this.write(l);
      this.forward(line);
    });
  }

  private sharedEntries(name: string, reference: string, pattern: string): string[] {
    const { mailboxes } = this.ctx.agent.sharedWith(this.ctx.tenant, this.ctx.user);
    const sep = quote(this.ctx.namespace.separator);
    return this.ctx.namespace.list(mailboxes, reference, pattern).map((e) => `* ${name} (${e.attributes.join(' ')}) ${sep} ${quote(e.name)}\r\n`);
  }

  private async select(tag: string, name: string, args: Arg[]): Promise<void> {
    const t = this.resolve(args[0]?.value ?? '');
    if (args.length === 0) throw new ImapNo(`${tag} BAD ${name} needs a mailbox name\r\n`);
    if (t.kind === 'parent' || t.kind === 'invalid') {
      await this.deselect();
      throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
    }
    let conn = this.home;
    let verb = name;
    if (t.kind === 'shared') {
      const r = this.visible(tag, t);
      this.require(tag, r, R, name);
      conn = await this.ownerConn(t.owner);
      // Nothing to write with: open read-only, so not even \Seen changes (RFC 4314 §4).
      if (!hasAny(r, WRITE_ANY)) verb = 'EXAMINE';
    }
    if (this.selected && this.selected.conn !== conn) await this.deselect();
    await this.exclusive(conn, [tag, verb, quote(t.wire), ...args.slice(1).map((a) => a.raw)].join(' '), { onStatus: (status) => {
      conn.selected = status === 'OK';
      this.selected = status === 'OK' ? { conn, target: t } : undefined;
    } });
  }

  /** Leaves the selected mailbox on its connection (another connection is about to select). */
  private async deselect(): Promise<void> {
    const sel = this.selected;
    if (!sel) return;
    this.selected = undefined;
    sel.conn.selected = false;
    if (!sel.conn.closed) await this.internal(sel.conn, 'UNSELECT');
  }

  private async mailboxCommand(tag: string, name: string, args: Arg[], streaming?: { length: number; sync: boolean }): Promise<void> {
    if (args.length === 0 || (name === 'RENAME' && args.length < 2)) throw new ImapNo(`${tag} BAD ${name} needs a mailbox name\r\n`);
    const t = this.resolve(args[0]!.value);
    const rest = (from: number): string[] => args.slice(from).map((a) => a.raw);
    if (t.kind === 'parent' || t.kind === 'invalid') {
      if (name === 'CREATE' || name === 'RENAME') throw new ImapNo(`${tag} NO [NOPERM] Mailboxes can only be created inside another user's shared mailbox\r\n`);
      throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
    }
    if (t.kind === 'home') {
      if (name === 'RENAME') {
        const to = this.resolve(args[1]!.value);
        if (to.kind !== 'home') throw new ImapNo(`${tag} NO [CANNOT] A mailbox cannot be renamed into the shared namespace\r\n`);
        return this.exclusive(this.home, [tag, name, ...rest(0)].join(' '), { after: (status) => (status === 'OK' ? this.registryRename(this.ctx.user, args[0]!.value, to.wire) : undefined) });
      }
      if (name === 'DELETE') {
        return this.exclusive(this.home, [tag, name, ...rest(0)].join(' '), { after: (status) => (status === 'OK' ? this.registryDelete(this.ctx.user, args[0]!.value) : undefined) });
      }
      return this.send(this.home, [tag, name, ...rest(0)].join(' '), undefined, streaming);
    }
    // Another user's mailbox: rights first (RFC 4314 §4), then the owner's node.
    if (name === 'CREATE') {
      const parent = this.parentOf(t);
      const pr = parent ? this.rights(parent) : undefined;
      if (!parent || pr === undefined || !hasAny(pr, L)) throw new ImapNo(`${tag} NO [NOPERM] Mailboxes can only be created inside another user's shared mailbox\r\n`);
      this.require(tag, pr, K, 'Creating a mailbox here');
      const conn = await this.ownerConn(t.owner);
      return this.exclusive(conn, [tag, name, quote(t.wire), ...rest(1)].join(' '), { after: (status) => (status === 'OK' ? this.registryCreate(t, parent) : undefined) });
    }
    const r = this.visible(tag, t);
    switch (name) {
      case 'SUBSCRIBE':
      case 'UNSUBSCRIBE':
        // Shared mailboxes the user can see are always listed as subscribed.
        await this.quiet();
        return this.write(`${tag} OK ${name} completed\r\n`);
      case 'STATUS': {
        this.require(tag, r, R, 'STATUS');
        const conn = await this.ownerConn(t.owner);
        return this.send(conn, [tag, name, quote(t.wire), ...rest(1)].join(' '));
      }
      case 'APPEND': {
        this.require(tag, r, I, 'APPEND');
        const conn = await this.ownerConn(t.owner);
        const more = rest(1);
        // Flags the user may not set are left off the new message (RFC 4314 §4).
        if (args[1]?.list) more[0] = `(${listItems(args[1].raw).filter((f) => hasAll(r, flagRight(f))).join(' ')})`;
        return this.send(conn, [tag, name, quote(t.wire), ...more].join(' '), undefined, streaming);
      }
      case 'DELETE': {
        this.require(tag, r, X, 'DELETE');
        const conn = await this.ownerConn(t.owner);
        if (this.selected?.conn === conn && this.selected.target.kind === 'shared' && this.selected.target.name === t.name) await this.deselect();
        return this.exclusive(conn, [tag, name, quote(t.wire)].join(' '), { after: (status) => (status === 'OK' ? this.registryDelete(t.owner, t.wire) : undefined) });
      }
      case 'RENAME': {
        const to = this.resolve(args[1]!.value);
        if (to.kind !== 'shared' || to.owner !== t.owner) throw new ImapNo(`${tag} NO [CANNOT] A shared mailbox can only be renamed within its owner's mailboxes\r\n`);
        this.require(tag, r, X, 'RENAME');
        const parent = this.parentOf(to);
        const pr = parent ? this.rights(parent) : undefined;
        if (pr === undefined) throw new ImapNo(`${tag} NO [NOPERM] RENAME needs the "k" right on the new parent\r\n`);
        this.require(tag, pr, K, 'RENAME into that mailbox');
        const conn = await this.ownerConn(t.owner);
        return this.exclusive(conn, [tag, name, quote(t.wire), quote(to.wire)].join(' '), { after: (status) => (status === 'OK' ? this.registryRename(t.owner, t.wire, to.wire) : undefined) });
      }
    }
  }

  private parentOf(t: Target & { kind: 'shared' }): (Target & { kind: 'shared' }) | undefined {
    const slash = t.name.lastIndexOf('/');
    if (slash < 0) return undefined;
    const name = t.name.slice(0, slash);
    return { kind: 'shared', owner: t.owner, name, wire: t.wire.slice(0, t.wire.lastIndexOf('/')) };
  }

  // ---- commands on a selected shared mailbox ----

  private async sharedSelected(tag: string, name: string, args: Arg[], conn: Conn, t: Target & { kind: 'shared' }): Promise<void> {
    // Fencing: nothing is relayed under an epoch the owner no longer holds (the event may still be on its way).
    if (this.ctx.agent.locate(this.ctx.tenant, t.owner)?.epoch !== conn.epoch) {
      this.dropOwner(conn, `${t.owner}'s mailboxes moved to another node; reconnect`);
      return;
    }
    const r = this.rights(t);
    // A revoke reaches an open mailbox at its next command.
    if (r === undefined || !hasAny(r, L)) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox no longer exists for you\r\n`);
    this.require(tag, r, R, name);
    let sub = name;
    let rest = args;
    if (name === 'UID') {
      sub = (args[0]?.value ?? '').toUpperCase();
      rest = args.slice(1);
    }
    const prefix = name === 'UID' ? [tag, 'UID', args[0]!.raw] : [tag, name];
    let out = rest.map((a) => a.raw);
    switch (sub) {
      case 'FETCH': {
        if (hasAll(r, S) || out.length < 2) break;
        // Without "s" a fetch must not set \Seen: peek instead (RFC 4314 §4).
        out = out.map((a, i) => (i === 0 ? a : a.replace(/\b(BODY|BINARY)\[/gi, '$1.PEEK[')));
        // RFC822 and RFC822.TEXT have no peek form: fetch BODY.PEEK[…] and name the answers as asked.
        const renames = new Map<string, string>();
        out[1] = out[1]!.replace(/(^|[( ])(RFC822(?:\.TEXT)?)(?=[) ]|$)/gi, (_m, lead: string, item: string) => {
          const text = item.toUpperCase() === 'RFC822.TEXT';
          renames.set(text ? 'BODY[TEXT]' : 'BODY[]', text ? 'RFC822.TEXT' : 'RFC822');
          return `${lead}${text ? 'BODY.PEEK[TEXT]' : 'BODY.PEEK[]'}`;
        });
        if (renames.size === 0) break;
        // Alone on the connection, so only this command's FETCH responses are renamed.
        return this.exclusive(conn, [...prefix, ...out].join(' '), {
          start: () => {
            conn.renames = renames;
          },
          onStatus: () => {
            conn.renames = undefined;
          },
        });
      }
      case 'STORE': {
        const at = rest.findIndex((a) => /^[+-]?FLAGS(\.SILENT)?$/i.test(a.value));
        if (at < 0) break;
        const op = rest[at]!.value.toUpperCase();
        const flags = rest.slice(at + 1).flatMap((a) => (a.list ? listItems(a.raw) : [a.raw]));
        if (op.startsWith('FLAGS')) {
          this.require(tag, r, rightsOf('stw'), 'Replacing flags');
          break;
        }
        let kept = flags;
        if (!hasAll(r, S)) kept = kept.filter((f) => f.toLowerCase() !== '\\seen');
        for (const f of kept) this.require(tag, r, flagRight(f), `Changing ${f}`);
        if (kept.length === 0) {
          await this.quiet();
          return this.write(`${tag} OK STORE completed\r\n`);
        }
        out = [...out.slice(0, at + 1), `(${kept.join(' ')})`];
        break;
      }
      case 'EXPUNGE':
        this.require(tag, r, E, 'EXPUNGE');
        break;
      case 'CLOSE':
        // Without "e", CLOSE must not expunge: UNSELECT closes the same way, keeping \Deleted messages.
        return this.exclusive(conn, [tag, hasAll(r, E) ? 'CLOSE' : 'UNSELECT'].join(' '), { onStatus: (status) => {
          if (status === 'OK') {
            conn.selected = false;
            this.selected = undefined;
          }
        } });
      case 'UNSELECT':
        return this.exclusive(conn, [...prefix, ...out].join(' '), { onStatus: (status) => {
          if (status === 'OK') {
            conn.selected = false;
            this.selected = undefined;
          }
        } });
      case 'COPY':
      case 'MOVE': {
        if (sub === 'MOVE') this.require(tag, r, rightsOf('te'), 'MOVE out of this mailbox');
        const to = this.resolve(rest[1]?.value ?? '');
        if (to.kind === 'parent' || to.kind === 'invalid') throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
        if (to.kind === 'home') return this.crossCopy(tag, sub === 'MOVE', name === 'UID', rest[0]?.raw ?? '', conn, to, undefined);
        const tr = this.visible(tag, to);
        this.require(tag, tr, I, sub);
        // Another owner's node, or flags the user may not set on the target (left off by the copy): fetch + append.
        if (to.owner !== t.owner || !hasAll(tr, rightsOf('stw'))) return this.crossCopy(tag, sub === 'MOVE', name === 'UID', rest[0]?.raw ?? '', conn, to, tr);
        out = [out[0]!, quote(to.wire), ...out.slice(2)];
        break;
      }
      case 'IDLE':
        return this.idle(conn, `${tag} IDLE`);
    }
    return this.send(conn, [...prefix, ...out].join(' '));
  }

  /**
   * COPY/MOVE between mailboxes on different connections (the user's own
   * and a shared one, or two owners'): each message is fetched from the
   * source and appended to the target with its flags and internal date, a
   * few at a time so memory stays bounded. MOVE expunges the sources only
   * after every append succeeded (RFC 6851 §3.3); the client sees the
   * EXPUNGE responses as from a real MOVE.
   */
  private async crossCopy(tag: string, move: boolean, uid: boolean, set: string, from: Conn, to: Target, targetRights: Rights | undefined): Promise<void> {
    const verb = move ? 'MOVE' : 'COPY';
    if (!/^[0-9:,*$]+$/.test(set)) throw new ImapNo(`${tag} BAD ${verb} needs a sequence set\r\n`);
    const dest = to.kind === 'home' ? this.home : await this.ownerConn(to.owner);
    await this.quiet();
    const search = await this.internal(from, `UID SEARCH ${uid ? 'UID ' : ''}${set}`);
    if (search.status !== 'OK') throw new ImapNo(`${tag} BAD Invalid sequence set\r\n`);
    const uids = search.untagged.flatMap((p) => {
      const text = p.map((x) => ('text' in x ? x.text : '')).join('');
      return /^\* SEARCH/i.test(text) ? text.split(' ').slice(2).map(Number).filter((n) => n > 0) : [];
    });
    const copied: Array<{ src: number; dst: number }> = [];
    let validity = '';
    const BATCH = 16;
    for (let i = 0; i < uids.length; i += BATCH) {
      const batch = uids.slice(i, i + BATCH);
      const fetched = await this.internal(from, `UID FETCH ${batch.join(',')} (UID FLAGS INTERNALDATE BODY.PEEK[])`);
      if (fetched.status !== 'OK') return this.copyFailed(tag, verb, to, copied, 'SERVERBUG', 'could not read the messages');
      for (const p of fetched.untagged) {
        const text = p.map((x) => ('text' in x ? x.text : '')).join('');
        const body = p.find((x): x is { literal: string } => 'literal' in x);
        const src = /\bUID (\d+)/i.exec(text);
        if (!/^\* \d+ FETCH/i.test(text) || !body || !src) continue;
        const date = /INTERNALDATE "([^"]+)"/i.exec(text)?.[1];
        let flags = (/FLAGS \(([^)]*)\)/i.exec(text)?.[1] ?? '').split(' ').filter((f) => f !== '' && f.toLowerCase() !== '\\recent');
        // Flags the user may not set on the target are left off (RFC 4314 §4).
        if (targetRights !== undefined) {
          flags = flags.filter((f) => hasAll(targetRights, flagRight(f)));
        }
        const res = await this.internal(dest, `APPEND ${quote(to.wire)} (${flags.join(' ')})${date ? ` "${date}"` : ''} {${body.literal.length}+}\r\n${body.literal}`);
        if (res.status !== 'OK') {
          // The target's own reason (e.g. OVERQUOTA) when it gave one.
          const code = /^\S+ NO \[([A-Z-]+)/i.exec(res.line)?.[1]?.toUpperCase() ?? 'CANNOT';
          return this.copyFailed(tag, verb, to, copied, code, 'the target refused a message');
        }
        const appendUid = /\[APPENDUID (\d+) (\d+)\]/i.exec(res.line);
        if (appendUid) {
          validity = appendUid[1]!;
          copied.push({ src: Number(src[1]), dst: Number(appendUid[2]) });
        } else {
          copied.push({ src: Number(src[1]), dst: 0 });
        }
      }
    }
    const code = validity && copied.every((c) => c.dst > 0) && copied.length > 0 ? `[COPYUID ${validity} ${copied.map((c) => c.src).join(',')} ${copied.map((c) => c.dst).join(',')}] ` : '';
    if (!move || copied.length === 0) return this.write(`${tag} OK ${code}${verb} completed\r\n`);
    this.write(`* OK ${code}Moved\r\n`);
    const list = copied.map((c) => c.src).join(',');
    await this.internal(from, `UID STORE ${list} +FLAGS.SILENT (\\Deleted)`);
    // Sent as the client's own so its EXPUNGE responses reach the client (sequence numbers must stay in step).
    await new Promise<void>((resolve) => {
      this.enqueue(from, `mailshare.${++this.internalTag}`, () => resolve());
      from.socket.write(`mailshare.${this.internalTag} UID EXPUNGE ${list}\r\n`, 'latin1');
    });
    this.write(`${tag} OK ${verb} completed\r\n`);
  }

  /**
   * A cross-node COPY/MOVE failed part-way: the messages already appended are
   * expunged again (by their APPENDUIDs, on a connection of its own, so the
   * client's selected mailboxes are untouched), leaving the target as it was
   * (RFC 3501 §6.4.7); the source was never changed.
   */
  private async copyFailed(tag: string, verb: string, to: Target, copied: ReadonlyArray<{ dst: number }>, code: string, why: string): Promise<void> {
    const dst = copied.map((c) => c.dst).filter((n) => n > 0);
    let undone = dst.length === copied.length;
    if (copied.length > 0 && undone) {
      const owner = to.kind === 'home' ? this.ctx.user : to.owner;
      const node = this.ctx.agent.locate(this.ctx.tenant, owner)?.node;
      const address = node ? this.ctx.agent.nodeAddress(node) : undefined;
      const master = this.ctx.master;
      try {
        if (!address || !master) throw new BackendUnavailable('no way to reach the target');
        const set = dst.join(',');
        const statuses = await backendScript(address, `${owner}*${master.user}`, master.password, [`SELECT ${quote(to.wire)}`, `UID STORE ${set} +FLAGS.SILENT (\\Deleted)`, `UID EXPUNGE ${set}`]);
        undone = statuses.every((st) => st === 'OK');
      } catch (err) {
        this.ctx.log.warn({ user: this.ctx.user, err: String(err) }, 'could not undo a partial copy');
        undone = false;
      }
    }
    const state = copied.length === 0 || undone ? 'nothing was copied' : `${copied.length} message(s) were copied and may remain in the target`;
    this.write(`${tag} NO [${code}] ${verb} failed: ${why}; ${state}, the source is unchanged\r\n`);
  }

  private async idle(conn: Conn, line: string): Promise<void> {
    await this.barrier(conn, true);
    const finished = new Promise<void>((resolve) => {
      this.enqueue(conn, line.split(' ')[0]!, (status, raw) => {
        this.idleConn = undefined;
        this.forward(raw);
        resolve();
      });
    });
    this.idleConn = conn;
    this.reader.expectRawLine();
    conn.socket.write(`${line}\r\n`, 'latin1');
    void finished;
  }

  // ---- ACL commands (RFC 4314 §3), answered from mailshare ----

  private async aclCommand(tag: string, name: string, args: Arg[]): Promise<void> {
    const counts: Record<string, number> = { GETACL: 1, SETACL: 3, DELETEACL: 2, LISTRIGHTS: 2, MYRIGHTS: 1 };
    if (args.length !== counts[name]) throw new ImapNo(`${tag} BAD ${name} takes ${counts[name]} argument(s)\r\n`);
    const wireName = args[0]!.value;
    const t = this.resolve(wireName);
    if (t.kind === 'parent' || t.kind === 'invalid') throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
    let owner = this.ctx.user;
    let mbName: string;
    if (t.kind === 'shared') {
      owner = t.owner;
      mbName = t.name;
      this.visible(tag, t);
    } else {
      const own = mailshareName(t.wire);
      if (own === undefined) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
      mbName = own;
    }
    const mailbox = `${owner}/${mbName}`;
    const registered = this.ctx.agent.access(this.ctx.tenant, this.ctx.user, owner, mbName) !== undefined;
    const base = { tenant: this.ctx.tenant, mailbox, actor: this.ctx.user };
    const out: string[] = [];
    const qName = quote(wireName);
    await this.quiet();
    if (!registered && owner === this.ctx.user && name !== 'SETACL') {
      // The user's own mailbox, never shared: the owner holds every right (RFC 4314 §2).
      if (!(await this.homeExists(t.kind === 'home' ? t.wire : ''))) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
      if (name === 'GETACL') out.push(`* ACL ${qName} ${quote(owner)} ${formatRights(rightsOf('lrswipkxtea'))}`);
      if (name === 'MYRIGHTS') out.push(`* MYRIGHTS ${qName} ${formatRightsForResponse(rightsOf('lrswipkxtea'))}`);
      if (name === 'DELETEACL') throw new ImapNo(`${tag} OK DELETEACL completed\r\n`);
      if (name === 'LISTRIGHTS') {
        const id = args[1]!.value;
        out.push(id === owner ? `* LISTRIGHTS ${qName} ${quote(id)} la r s w i p k x t e` : `* LISTRIGHTS ${qName} ${quote(id)} "" l r s w i p k x t e a`);
      }
    } else {
      try {
        switch (name) {
          case 'GETACL': {
            const res = await this.ctx.api.call<{ entries: Array<{ identifier: string; rights: string }> }>((c, cb) => c.acl.getAcl(base, this.ctx.metadata, opts(), cb));
            out.push(`* ACL ${qName}${res.entries.map((e) => ` ${quote(e.identifier)} ${quote(e.rights)}`).join('')}`);
            break;
          }
          case 'SETACL': {
            if (!registered) {
              if (!(await this.homeExists(t.kind === 'home' ? t.wire : ''))) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox does not exist\r\n`);
              await this.ctx.api.call((c, cb) => c.mailboxes.createMailbox({ tenant: this.ctx.tenant, owner, name: mbName, actor: this.ctx.user }, this.ctx.metadata, opts(), cb)).catch((err: unknown) => {
                if ((err as grpc.ServiceError).code !== grpc.status.ALREADY_EXISTS) throw err;
              });
            }
            const res = await this.ctx.api.call<{ revision: number }>((c, cb) =>
              c.acl.setAcl({ ...base, identifier: args[1]!.value, rights: args[2]!.value, expectedRevision: 0 }, this.ctx.metadata, opts(), cb),
            );
            await this.ctx.agent.waitForRevision(res.revision);
            break;
          }
          case 'DELETEACL': {
            const res = await this.ctx.api.call<{ revision: number }>((c, cb) => c.acl.deleteAcl({ ...base, identifier: args[1]!.value, expectedRevision: 0 }, this.ctx.metadata, opts(), cb));
            await this.ctx.agent.waitForRevision(res.revision);
            break;
          }
          case 'LISTRIGHTS': {
            const res = await this.ctx.api.call<{ identifier: string; required: string; optional: string[] }>((c, cb) =>
              c.acl.listRights({ ...base, identifier: args[1]!.value }, this.ctx.metadata, opts(), cb),
            );
            out.push(`* LISTRIGHTS ${qName} ${quote(res.identifier)} ${quote(res.required)}${res.optional.map((o) => ` ${o}`).join('')}`);
            break;
          }
          case 'MYRIGHTS': {
            const res = await this.ctx.api.call<{ rights: string }>((c, cb) => c.acl.myRights({ tenant: this.ctx.tenant, mailbox, user: this.ctx.user }, this.ctx.metadata, opts(), cb));
            out.push(`* MYRIGHTS ${qName} ${quote(res.rights)}`);
            break;
          }
        }
      } catch (err) {
        if (err instanceof ImapNo) throw err;
        throw new ImapNo(imapError(tag, err));
      }
    }
    for (const l of out) this.write(`${l}\r\n`);
    this.write(`${tag} OK ${name} completed\r\n`);
  }

  private async homeExists(wire: string): Promise<boolean> {
    if (wire === '') return false;
    const res = await this.internal(this.home, `LIST "" ${quote(wire)}`);
    return res.status === 'OK' && res.untagged.some((p) => {
      const a = splitArgs(p);
      return a.length >= 5 && a[4]!.value === wire && !/\\Noselect|\\NonExistent/i.test(a[2]!.raw);
    });
  }

  // ---- keeping mailshare's registry in step with what Dovecot did ----

  private async registryDelete(owner: string, wire: string): Promise<void> {
    const normalized = mailshareName(wire);
    if (normalized === undefined) return;
    if (this.ctx.agent.access(this.ctx.tenant, owner, owner, normalized) === undefined) return;
    await this.ctx.api.call((c, cb) => c.mailboxes.deleteMailbox({ tenant: this.ctx.tenant, mailbox: `${owner}/${normalized}`, expectedRevision: 0, actor: owner }, this.ctx.metadata, opts(), cb)).catch(
      (err: unknown) => this.ctx.log.warn({ tenant: this.ctx.tenant, user: owner, mailbox: normalized, err: String(err) }, 'mailbox deleted in IMAP but its registration remains'),
    );
  }

  private async registryRename(owner: string, fromWire: string, toWire: string): Promise<void> {
    const a = mailshareName(fromWire);
    const b = mailshareName(toWire);
    if (a === undefined || b === undefined) return;
    if (this.ctx.agent.access(this.ctx.tenant, owner, owner, a) === undefined) return;
    await this.ctx.api.call((c, cb) => c.mailboxes.renameMailbox({ tenant: this.ctx.tenant, mailbox: `${owner}/${a}`, newName: b, expectedRevision: 0, actor: owner }, this.ctx.metadata, opts(), cb))
      .then((res) => this.ctx.agent.waitForRevision((res as { revision?: number }).revision ?? 0).catch(() => undefined))
      .catch((err: unknown) => this.ctx.log.warn({ tenant: this.ctx.tenant, user: owner, mailbox: a, err: String(err) }, 'mailbox renamed in IMAP but its registration was not'));
  }

  /** A mailbox created inside a shared one is registered with its parent's ACL (RFC 4314 §4 leaves inheritance to the server). */
  private async registryCreate(t: Target & { kind: 'shared' }, parent: Target & { kind: 'shared' }): Promise<void> {
    const md = this.ctx.metadata;
    const tenant = this.ctx.tenant;
    try {
      await this.ctx.api.call((c, cb) => c.mailboxes.createMailbox({ tenant, owner: t.owner, name: t.name, actor: t.owner }, md, opts(), cb));
      const acl = await this.ctx.api.call<{ entries: Array<{ identifier: string; rights: string }> }>((c, cb) => c.acl.getAcl({ tenant, mailbox: `${t.owner}/${parent.name}`, actor: t.owner }, md, opts(), cb));
      let revision = 0;
      for (const e of acl.entries) {
        if (e.identifier === t.owner) continue;
        const res = await this.ctx.api.call<{ revision: number }>((c, cb) =>
          c.acl.setAcl({ tenant, mailbox: `${t.owner}/${t.name}`, identifier: e.identifier, rights: e.rights.replace(/[cd]/g, ''), expectedRevision: 0, actor: t.owner }, md, opts(), cb),
        );
        revision = res.revision;
      }
      await this.ctx.agent.waitForRevision(revision).catch(() => undefined);
    } catch (err) {
      this.ctx.log.warn({ tenant, user: t.owner, mailbox: t.name, err: String(err) }, 'mailbox created in IMAP but not registered');
    }
  }

  // ---- connections ----

  private async ownerConn(owner: string): Promise<Conn> {
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
    const login = await backendLogin(address, 'mailshare.login', `${owner}*${this.ctx.master.user}`, this.ctx.master.password);
    if (!login.ok) throw new BackendUnavailable(`the master login for ${owner} was refused`);
    const conn = this.attach(owner, false, login.socket, epoch);
    this.owners.set(owner, conn);
    conn.counted = true;
    agent.sessionOpened(tenant, owner, node);
    if (this.enabled.length > 0) await this.internal(conn, `ENABLE ${this.enabled.join(' ')}`);
    return conn;
  }

  // ---- sending ----

  private enqueue(conn: Conn, tag: string, done: Pending['done'], client = true): Pending {
    const p: Pending = { tag, client, untagged: [], done };
    conn.pending.push(p);
    return p;
  }

  /**
   * Waits until no other connection has client commands outstanding (and,
   * when `all`, this one neither): responses then never interleave.
   */
  private async barrier(conn: Conn, all: boolean): Promise<void> {
    const busy = (): boolean => [this.home, ...this.owners.values()].some((c) => (c !== conn || all) && c.pending.length > 0);
    while (busy() && !this.closed) await new Promise<void>((r) => this.quietWaiters.push(r));
  }

  private quiet(): Promise<void> {
    return this.barrier(this.home, true);
  }

  private notifyQuiet(): void {
    for (const w of this.quietWaiters.splice(0)) w();
  }

  /** Sends a client command; its tagged response is forwarded (or given to `done`). */
  private async send(conn: Conn, line: string, done?: Pending['done'], streaming?: { length: number; sync: boolean }): Promise<void> {
    await this.barrier(conn, false);
    if (conn.closed) throw new BackendUnavailable('connection closed');
    const tag = line.slice(0, line.indexOf(' '));
    this.enqueue(conn, tag, (status, raw, pieces) => {
      if (streaming) this.reader.cancelSyncLiteral(tag);
      if (done) done(status, raw, pieces);
      else this.forward(raw);
    });
    if (streaming) {
      this.streamTo = conn;
      conn.socket.write(`${line} {${streaming.length}${streaming.sync ? '' : '+'}}\r\n`, 'latin1');
    } else {
      conn.socket.write(`${line}\r\n`, 'latin1');
    }
  }

  /**
   * A command that changes state: earlier commands finish first, and the
   * next command waits for this one. `after` runs before the client sees
   * the tagged response (e.g. updating mailshare's registry).
   */
  private async exclusive(
    conn: Conn,
    line: string,
    hooks: {
      /** Runs once the connection is this command's alone, right before it is sent. */
      start?: () => void;
      onStatus?: (status: string) => void;
      after?: (status: string) => Promise<void> | undefined;
    } = {},
  ): Promise<void> {
    const { start, onStatus, after } = hooks;
    await this.barrier(conn, true);
    if (conn.closed) throw new BackendUnavailable('connection closed');
    start?.();
    const tag = line.slice(0, line.indexOf(' '));
    const result = await new Promise<{ status: string; raw: Buffer }>((resolve) => {
      this.enqueue(conn, tag, (status, raw) => {
        onStatus?.(status);
        if (after) resolve({ status, raw });
        else {
          this.forward(raw);
          resolve({ status, raw });
        }
      });
      conn.socket.write(`${line}\r\n`, 'latin1');
    });
    if (after) {
      await after(result.status);
      this.forward(result.raw);
    }
  }

  /** A command of the gateway's own; its responses are captured, never shown to the client. */
  private async internal(conn: Conn, command: string): Promise<{ status: string; untagged: Piece[][]; line: string }> {
    await this.barrier(conn, true);
    const tag = `mailshare.${++this.internalTag}`;
    return new Promise((resolve) => {
      const p = this.enqueue(conn, tag, (status, raw) => resolve({ status, untagged: p.untagged, line: raw.toString('latin1') }), false);
      conn.socket.write(`${tag} ${command}\r\n`, 'latin1');
    });
  }

  private write(s: string): void {
    if (!this.client.destroyed) this.client.write(s, 'latin1');
  }
}

/** A connection is gone: its outstanding commands complete as BYE (their waiters go on). */
function failPending(c: Conn): void {
  for (const p of c.pending.splice(0)) p.done('BYE', Buffer.alloc(0), []);
}

/** A name as the client sent it (modified UTF-7) as mailshare names it, or undefined when it cannot be one. */
function mailshareName(wire: string): string | undefined {
  const decoded = decodeMutf7(wire);
  if (decoded === undefined) return undefined;
  try {
    return parseMailboxName(decoded);
  } catch {
    return undefined;
  }
}

/** The right that changing a flag needs (RFC 4314 §4). */
function flagRight(flag: string): Rights {
  const f = flag.toLowerCase();
  return f === '\\seen' ? S : f === '\\deleted' ? T : W;
}

function opts(): grpc.CallOptions {
  return { deadline: Date.now() + 10_000 };
}

/** A coordinator error as the tagged IMAP response (RFC 5530 response codes). */
function imapError(tag: string, err: unknown): string {
  const e = err as grpc.ServiceError;
  const msg = (e.details ?? String(err)).replace(/[\r\n]/g, ' ');
  switch (e.code) {
    case grpc.status.NOT_FOUND:
      return `${tag} NO [NONEXISTENT] ${msg}\r\n`;
    case grpc.status.PERMISSION_DENIED:
      return `${tag} NO [NOPERM] ${msg}\r\n`;
    case grpc.status.INVALID_ARGUMENT:
      return `${tag} BAD ${msg}\r\n`;
    case grpc.status.FAILED_PRECONDITION:
    case grpc.status.ABORTED:
    case grpc.status.ALREADY_EXISTS:
    case grpc.status.RESOURCE_EXHAUSTED:
      return `${tag} NO [CANNOT] ${msg}\r\n`;
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return `${tag} NO [UNAVAILABLE] ${msg}\r\n`;
    default:
      return `${tag} NO [SERVERBUG] ${msg}\r\n`;
  }
}
