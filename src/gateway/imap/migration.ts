import type net from 'node:net';
import { backendLogin } from '../backend.js';
import type { SessionContext } from '../session.js';
import type { Piece } from '../imap-syntax.js';
import { type MailboxView, reconcile, uidSet } from './mailbox-view.js';
import type { ImapValue } from './parser.js';
import type { Target } from './session-core.js';
import { type Conn, failPending } from './upstream.js';
import { atom, list } from './wire.js';

/** An IDLE the client has open (RFC 2177): on `conn` now, carried to the new one by a migration. */
export interface IdleState {
  conn: Conn;
  readonly clientTag: string;
  /** The client sent its line after IDLE ("DONE" or not). */
  sentDone: boolean;
  badDone: boolean;
  /** The connection is being replaced: its end is not the client's IDLE's end. */
  moving: boolean;
  /** The next "+" on `conn` is the re-sent IDLE's: the client had its own. */
  quietPlus: boolean;
}

/** What a migration uses of the session. */
export interface MigrationHost {
  readonly ctx: SessionContext;
  home: Conn;
  readonly owners: Map<string, Conn>;
  selected: { conn: Conn; target: Target } | undefined;
  streamTo: { conn: Conn } | undefined;
  idling: IdleState | undefined;
  readonly idleRefresh: Promise<void> | undefined;
  readonly enabled: string[];
  readonly updateTags: WeakMap<Conn, Map<string, string>>;
  readonly closed: boolean;
  readonly busy: boolean;
  attach(owner: string, home: boolean, socket: net.Socket, epoch: number): Conn;
  uncount(c: Conn): void;
  internal(conn: Conn, name: string, args: readonly ImapValue[]): Promise<{ status: string; untagged: Piece[][]; line: string }>;
  resumeIdle(state: IdleState, conn: Conn): void;
  trackView(conn: Conn): void;
  write(s: string): void;
}

/** A graceful move (the old node let go) completes within this, or the session ends as before. */
const GRACEFUL_MS = 5000;
/**
 * After retiring the old connection, how long a graceful move waits for the new assignment: the old
 * node's release, which waits for its own gateway's sessions (LET_GO_MS in gateway.ts) and for the
 * acknowledgments of the gateways relaying the user (MOVE_ACKS_MS in the agent), then the mover's
 * assignment.
 */
const ASSIGNMENT_MS = 15_000;
/** A login at the new node (each of two tries), once its turn came. */
const LOGIN_MS = 10_000;
/** After a release, the mover assigns the user; a session asks for an assignment itself after this. */
const ASSIGN_AFTER_MS = 1000;
/** A mailbox this large gets no full FLAGS resend (without CONDSTORE the changes cannot be told). */
const FLAGS_RESEND_MAX = 10_000;
/** Commands a client may have in flight on a lost connection and still be told NO (their effects are reconciled). */
const RETRYABLE = new Set(['FETCH', 'SEARCH', 'STORE', 'COPY', 'NOOP', 'CHECK', 'STATUS', 'LIST', 'LSUB', 'SORT', 'THREAD', 'UID', 'EXPUNGE', 'MOVE', 'APPEND', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'GETQUOTAROOT', 'GETQUOTA', 'GETMETADATA', 'SETMETADATA', 'NAMESPACE', 'ID']);

/**
 * Moves one upstream connection of a session (the home connection, or an
 * owner's with a shared mailbox selected) to the node its user is assigned
 * to now, keeping the client connected:
 *
 * 1. Fencing first: nothing more is sent to the old node. Commands in
 *    flight there finish (a graceful move) or are answered NO [UNAVAILABLE]
 *    (the connection died); an IDLE stays open for the client.
 * 2. The new assignment (made by the mover, or asked for when none comes),
 *    then a master-user login there as the connection's user.
 * 3. The state: ENABLEd extensions, CONDSTORE, and the selected mailbox,
 *    SELECTed or EXAMINEd as before; same UIDVALIDITY or no migration.
 * 4. The client's view (sequence numbers ↔ UIDs, MailboxView) against the
 *    new node's: EXPUNGE (or VANISHED with QRESYNC) for messages gone,
 *    EXISTS for new ones, FETCH FLAGS for flags changed (since the MODSEQ
 *    the client last saw, or all of them without CONDSTORE).
 * 5. An IDLE is sent again on the new connection.
 *
 * Returns true when the session goes on, or why it cannot (the caller ends
 * it with BYE as a session without migration would end).
 */
export async function migrateConn(s: MigrationHost, old: Conn, dead: boolean): Promise<true | string> {
  const { ctx } = s;
  const started = Date.now();
  const deadline = started + (dead ? ctx.migration!.leaseTtlMs + GRACEFUL_MS : GRACEFUL_MS);
  // An IDLE's UIDs being learnt: that finishes first (bounded by the server's answer).
  if (s.idleRefresh && !dead) await Promise.race([s.idleRefresh, sleep(GRACEFUL_MS)]);
  // An IDLE can only end meanwhile, not begin (new commands wait): its DONE is kept for the new node.
  const idle = s.idling?.conn === old ? s.idling : undefined;
  if (idle) idle.moving = true;
  const ours = (p: { clientTag: string | undefined }): boolean => idle === undefined || p.clientTag !== idle.clientTag;
  if (!dead) {
    // Between commands: what the client sent before the move (and the gateway's own commands,
    // such as the UID SEARCH after a SELECT) finishes on the old node.
    while (!old.closed && (s.busy || old.pending.some(ours) || s.streamTo?.conn === old)) {
      if (Date.now() > deadline || s.closed) return 'the session did not come to rest between commands';
      await sleep(10);
    }
  }
  if (dead || old.closed) {
    // The connection is gone (before the move, or while coming to rest): what was in flight is lost.
    if (old.pending.some((p) => ours(p) && p.clientTag !== undefined && !RETRYABLE.has(p.name ?? ''))) return 'a command was in flight when the connection was lost';
    for (const p of old.pending) if (ours(p) && p.clientTag !== undefined) s.write(`${p.clientTag} NO [UNAVAILABLE] The mail server was lost during the command; try again.\r\n`);
  }
  // 1. What the client holds must be known before anything is given up.
  const wasSelected = s.selected?.conn === old ? s.selected : undefined;
  const blocker = unmovable(s, old, wasSelected !== undefined);
  if (blocker) return blocker;
  if (s.closed) return 'session closed';
  // Nothing more reaches the old node: not even IDLE's DONE.
  retire(s, old);
  const view = old.view;

  // 2. Where the user is now. The wait has its own bound, from here: a migration that began at the
  // move request (the old node lets go only once its sessions retired their connections, and the
  // relaying gateways said so) waits for that release too.
  const who = old.owner;
  // No mover assigns a user whose node died: then the session asks as soon as the old one is gone.
  const target = await nextAssignment(ctx, who, old.epoch, Math.max(deadline, Date.now() + ASSIGNMENT_MS), dead ? 0 : ASSIGN_AFTER_MS, () => s.closed);
  if (typeof target === 'string') return target;
  if (s.closed) return 'session closed';
  const master = ctx.master!;
  let login;
  try {
    // Its turn among the gateway's migrations, then one retry: a drain sends many at once.
    const attempt = () =>
      backendLogin(target.address, 'mailshare.migrate', `${ctx.dovecotName(who)}*${master.user}`, master.password, { via: ctx.backends, client: ctx.client, timeoutMs: LOGIN_MS });
    login = await ctx.migration!.logins.run(() => attempt().catch(() => attempt()));
  } catch (err) {
    return `no login at the new node: ${String(err)}`;
  }
  if (!login.ok) {
    login.socket.destroy();
    return `the new node refused the login: ${login.tagged.toString('latin1').trim()}`;
  }
  if (s.closed) {
    login.socket.destroy();
    return 'session closed';
  }
  const conn = s.attach(who, old.home, login.socket, target.epoch);
  if (old.home) s.home = conn;
  else {
    conn.poolKey = old.poolKey ? { ...old.poolKey, address: target.address, epoch: target.epoch } : undefined;
    conn.counted = true;
    ctx.agent.sessionOpened(ctx.tenant, who, target.node);
    s.owners.set(who, conn);
  }

  // 3. The extensions and the mailbox.
  const fail = (why: string): string => {
    conn.closed = true;
    conn.socket.destroy();
    failPending(conn);
    return why;
  };
  if (s.enabled.length > 0) {
    const r = await s.internal(conn, 'ENABLE', s.enabled.map(atom));
    if (r.status !== 'OK') return fail(`ENABLE at the new node: ${r.line.trim()}`);
  }
  const qresync = s.enabled.some((e) => e.toUpperCase() === 'QRESYNC');
  if (old.condstore && !s.enabled.some((e) => /^(CONDSTORE|QRESYNC)$/i.test(e))) {
    const r = await s.internal(conn, 'ENABLE', [atom('CONDSTORE')]);
    if (r.status !== 'OK') return fail('CONDSTORE at the new node');
  }
  if (wasSelected && old.selectedAs && view) {
    const how = old.selectedAs;
    // The client's own SELECT parameters (QRESYNC's known UIDs) are not replayed: the view says more.
    const mailbox = how.args[0]!;
    const r = await s.internal(conn, how.verb, old.condstore ? [mailbox, list([atom('CONDSTORE')])] : [mailbox]);
    if (r.status !== 'OK') return fail(`${how.verb} at the new node: ${r.line.trim()}`);
    if (conn.uidValidity === undefined || conn.uidValidity !== old.uidValidity) return fail(`UIDVALIDITY changed (${old.uidValidity} → ${conn.uidValidity})`);
    conn.selectedAs = how;
    const fresh = await freshView(s, conn);
    if (typeof fresh === 'string') return fail(fresh);
    const plan = reconcile(view, fresh);
    if (typeof plan === 'string') return fail(plan);
    // 4. Tell the client what changed while it was between nodes.
    if (plan.gone.length > 0) {
      if (qresync) s.write(`* VANISHED ${uidSet(plan.gone)}\r\n`);
      else for (const seq of plan.expungeSeqs) s.write(`* ${seq} EXPUNGE\r\n`);
    }
    if (plan.added > 0) s.write(`* ${plan.exists} EXISTS\r\n`);
    // The client's view is the new node's from here: what changes after this (mail arriving
    // during the flags' FETCH, say) reaches the client as it comes, as for any selected mailbox.
    conn.selected = true;
    s.selected = { conn, target: wasSelected.target };
    const flags = await flagUpdates(s, conn, old.modseq, fresh.length);
    if (typeof flags === 'string') return fail(flags);
    for (const line of flags) s.write(`${line}\r\n`);
  }

  // 5. The client's IDLE goes on here.
  if (idle && s.idling === idle) s.resumeIdle(idle, conn);
  if (old.home) ctx.migration!.migrated(target.node);
  ctx.log.info({ user: ctx.user, owner: who, to: target.node, epoch: target.epoch, ms: Date.now() - started, selected: wasSelected !== undefined, idle: idle !== undefined }, 'session migrated');
  return true;
}

/** Why the connection's state cannot be carried to another node, if it cannot. */
function unmovable(s: MigrationHost, old: Conn, selected: boolean): string | undefined {
  if (old.notify) return 'a NOTIFY is set (its state is not carried over)';
  if ((s.updateTags.get(old)?.size ?? 0) > 0) return 'searches with RETURN (UPDATE) are active';
  if (old.savedSearch) return 'a saved search result ($, RFC 5182) is in use';
  if (selected) {
    if (!old.view) return 'the selected mailbox\'s UIDs are not known';
    if (old.view.broken) return `the client's view is unknown (${old.view.broken})`;
    if (old.view.unknown > 0) return `${old.view.unknown} message(s) the client was told of have UIDs the gateway never saw`;
    if (old.uidValidity === undefined) return 'no UIDVALIDITY';
  }
  return undefined;
}

/** The old connection ends without another byte to its node; its remaining commands complete as lost. */
function retire(s: MigrationHost, old: Conn): void {
  old.closed = true;
  old.socket.removeAllListeners('data');
  old.socket.destroy();
  failPending(old);
  if (!old.home) {
    s.uncount(old);
    if (s.owners.get(old.owner) === old) s.owners.delete(old.owner);
  }
}

/** The assignment that replaced `epoch`: the mover's, or one asked for when none comes. */
async function nextAssignment(ctx: SessionContext, user: string, epoch: number, deadline: number, assignAfterMs: number, closed: () => boolean): Promise<{ node: string; epoch: number; address: string } | string> {
  const { agent, tenant } = ctx;
  let goneSince: number | undefined;
  while (!closed()) {
    const a = agent.locate(tenant, user);
    if (a && a.epoch !== epoch) {
      const address = agent.nodeAddress(a.node);
      if (address) return { node: a.node, epoch: a.epoch, address };
    }
    if (!a) goneSince ??= Date.now();
    if (goneSince !== undefined && Date.now() - goneSince >= assignAfterMs) {
      const r = await agent.assign(tenant, user).catch(() => undefined);
      if (r && r.epoch !== epoch && r.imapAddress) return { node: r.node, epoch: r.epoch, address: r.imapAddress };
      goneSince = Date.now();
    }
    if (Date.now() > deadline) return 'no new assignment in time';
    await sleep(20);
  }
  return 'session closed';
}

/** The mailbox's UIDs at the new node (the gateway's own UID SEARCH), complete. */
async function freshView(s: MigrationHost, conn: Conn): Promise<MailboxView | string> {
  s.trackView(conn);
  // trackView's search is on its way; a no-op behind it completes after it.
  const r = await s.internal(conn, 'NOOP', []);
  if (r.status !== 'OK' || !conn.view) return 'no UIDs from the new node';
  // New messages after the search: their UIDs, by sequence number.
  for (let i = 0; i < 3 && conn.view.unknown > 0; i++) {
    await s.internal(conn, 'FETCH', [atom(`${conn.view.known + 1}:*`), list([atom('UID')])]);
  }
  if (conn.view.unknown > 0 || conn.view.broken) return 'the mailbox kept changing at the new node';
  return conn.view;
}

/**
 * FETCH FLAGS responses for the client: those changed since the MODSEQ it
 * was shown (CONDSTORE), else every message's (a mailbox up to 10,000).
 */
async function flagUpdates(s: MigrationHost, conn: Conn, modseq: bigint | undefined, exists: number): Promise<string[] | string> {
  if (exists === 0) return [];
  let r;
  if (modseq !== undefined) r = await s.internal(conn, 'UID', [atom('FETCH'), atom('1:*'), list([atom('FLAGS')]), list([atom('CHANGEDSINCE'), atom(String(modseq))])]);
  else if (exists <= FLAGS_RESEND_MAX) r = await s.internal(conn, 'FETCH', [atom('1:*'), list([atom('FLAGS')])]);
  else return [];
  if (r.status !== 'OK') return `flags at the new node: ${r.line.trim()}`;
  const out: string[] = [];
  for (const pieces of r.untagged) {
    const first = pieces[0];
    if (pieces.length !== 1 || !first || !('text' in first) || !/^\* \d+ FETCH /i.test(first.text)) continue;
    out.push(first.text);
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
