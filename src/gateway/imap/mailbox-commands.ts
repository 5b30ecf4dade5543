import { type Rights, hasAll, hasAny, L } from '../../domain/rights.js';
import { BackendUnavailable, fetchPart } from '../backend.js';
import { encodeMutf7 } from '../mutf7.js';
import { type CatenateMessage, checkSelectParams, checkStatusItems, parseAppendMessage, parseCatenateAppend } from './grammar.js';
import { parseMessageUrl } from './imap-url.js';
import { type ImapValue, type Streaming, astring } from './parser.js';
import { registryCreate, registryDelete, registryRename } from './registry.js';
import { I, K, R, WRITE_ANY, X, flagRight } from './rights-table.js';
import { ImapNo, type SessionCore, type Target, bad, nonexistent } from './session-core.js';
import { atom, list, str } from './wire.js';

/**
 * The commands that name a mailbox (SELECT/EXAMINE, STATUS, APPEND, CREATE,
 * DELETE, RENAME, SUBSCRIBE): the user's own go to the home Dovecot, another
 * user's to the owner's node after the grammar and rights checks (RFC 4314
 * §4), keeping mailshare's registry in step.
 */
export async function selectCommand(s: SessionCore, tag: string, name: string, args: ImapValue[]): Promise<void> {
  const mailbox = astring(args[0]);
  if (mailbox === undefined) throw bad(tag, `${name} needs a mailbox name`);
  const t = s.resolve(mailbox);
  if (t.kind === 'parent' || t.kind === 'invalid') {
    await switchAway(s);
    throw nonexistent(tag);
  }
  let conn = s.home;
  let verb = name;
  let values = args;
  if (t.kind === 'shared') {
    const wrong = checkSelectParams(args.slice(1));
    if (wrong) throw bad(tag, wrong);
    const r = s.visible(tag, t);
    s.require(tag, r, R, name);
    conn = await s.ownerConn(t.owner);
    // Nothing to write with: open read-only, so not even \Seen changes (RFC 4314 §4).
    if (!hasAny(r, WRITE_ANY)) verb = 'EXAMINE';
    values = [str(t.wire), ...args.slice(1)];
  }
  if (s.selected && s.selected.conn !== conn) await switchAway(s);
  await s.exclusive(conn, tag, verb, values, {
    // A SELECT ends what was selected on the connection, whether it succeeds or not (RFC 3501 §6.3.1).
    start: () => conn.unselect(),
    onStatus: (status) => {
      s.selected = status === 'OK' ? { conn, target: t } : undefined;
      if (status !== 'OK') return;
      conn.selected = true;
      conn.selectedAs = { verb, args: values };
      s.trackView(conn);
    },
  });
}

/**
 * SELECT/EXAMINE leave the mailbox selected on another connection: as a
 * server does when a SELECT replaces the selected mailbox, the client is
 * told * OK [CLOSED] (RFC 7162 §3.2.11; Dovecot sends it whether or not
 * QRESYNC is enabled), which the connection's own UNSELECT does not say.
 */
async function switchAway(s: SessionCore): Promise<void> {
  if (!s.selected) return;
  await deselect(s);
  s.write('* OK [CLOSED] Previous mailbox closed.\r\n');
}

/** Leaves the selected mailbox on its connection (another connection is about to select). */
async function deselect(s: SessionCore): Promise<void> {
  const sel = s.selected;
  if (!sel) return;
  s.selected = undefined;
  sel.conn.unselect();
  if (!sel.conn.closed) await s.internal(sel.conn, 'UNSELECT', []);
}

export async function mailboxCommand(s: SessionCore, tag: string, name: string, args: ImapValue[], streaming?: Streaming): Promise<void> {
  const mailbox = astring(args[0]);
  const newName = name === 'RENAME' ? astring(args[1]) : '';
  if (mailbox === undefined || newName === undefined) throw bad(tag, `${name} needs a mailbox name`);
  const catenate = name === 'APPEND' && !streaming ? parseCatenateAppend(args.slice(1)) : undefined;
  if (typeof catenate === 'string') throw bad(tag, catenate);
  const t = s.resolve(mailbox);
  if (t.kind === 'parent' || t.kind === 'invalid') {
    if (name === 'CREATE' || name === 'RENAME') throw new ImapNo(`${tag} NO [NOPERM] Mailboxes can only be created inside another user's shared mailbox\r\n`);
    throw nonexistent(tag);
  }
  if (t.kind === 'home') {
    if (name === 'RENAME') {
      const to = s.resolve(newName);
      if (to.kind !== 'home') throw new ImapNo(`${tag} NO [CANNOT] A mailbox cannot be renamed into the shared namespace\r\n`);
      return s.exclusive(s.home, tag, name, args, { after: (status) => (status === 'OK' ? registryRename(s, s.ctx.user, mailbox, to.wire) : undefined) });
    }
    if (name === 'DELETE') {
      return s.exclusive(s.home, tag, name, args, { after: (status) => (status === 'OK' ? registryDelete(s, s.ctx.user, mailbox) : undefined) });
    }
    if (streaming) s.streamTo = { conn: s.home, rights: undefined };
    if (catenate?.some((m) => m.urls)) {
      // URLs naming the user's own messages are the home Dovecot's to resolve; those naming a
      // shared mailbox are read from its owner's node and sent as TEXT.
      const messages = await resolveUrls(s, tag, catenate, false);
      return s.send(s.home, tag, name, [args[0]!, ...messages.flatMap((m) => [...(m.flags ? [list(m.flags.map(atom))] : []), ...(m.date ? [m.date] : []), atom('CATENATE'), list(m.parts)])]);
    }
    return s.send(s.home, tag, name, args, undefined, streaming);
  }
  // Another user's mailbox: grammar and rights first (RFC 4314 §4), then the owner's node.
  const box = str(t.wire);
  if (name === 'CREATE') {
    if (args.length !== 1) throw bad(tag, 'CREATE takes a mailbox name only here');
    const parent = parentOf(t);
    const pr = parent ? s.rights(parent) : undefined;
    if (!parent || pr === undefined || !hasAny(pr, L)) throw new ImapNo(`${tag} NO [NOPERM] Mailboxes can only be created inside another user's shared mailbox\r\n`);
    s.require(tag, pr, K, 'Creating a mailbox here');
    const conn = await s.ownerConn(t.owner);
    return s.exclusive(conn, tag, name, [box], { after: (status) => (status === 'OK' ? registryCreate(s, t, parent) : undefined) });
  }
  const r = s.visible(tag, t);
  switch (name) {
    case 'SUBSCRIBE':
    case 'UNSUBSCRIBE':
      if (args.length !== 1) throw bad(tag, `${name} takes a mailbox name`);
      // Shared mailboxes the user can see are always listed as subscribed.
      await s.quiet();
      return s.write(`${tag} OK ${name} completed\r\n`);
    case 'STATUS': {
      const wrong = args.length === 2 ? checkStatusItems(args[1]) : 'STATUS takes a mailbox name and a list of items';
      if (wrong) throw bad(tag, wrong);
      s.require(tag, r, R, 'STATUS');
      const conn = await s.ownerConn(t.owner);
      return s.send(conn, tag, name, [box, args[1]!]);
    }
    case 'APPEND': {
      if (catenate) {
        s.require(tag, r, I, 'APPEND');
        // A URL names a message as the user sees their mailboxes; the owner's node would read it as
        // the owner's (RFC 4469 §5: the URL is resolved with the user's access): every URL part is
        // read by the gateway, with the user's rights, and sent as TEXT.
        const messages = await resolveUrls(s, tag, catenate, true);
        const conn = await s.ownerConn(t.owner);
        return s.send(conn, tag, name, [box, ...messages.flatMap((m) => [...appendArgs(m, r), atom('CATENATE'), list(m.parts)])]);
      }
      const message = parseAppendMessage(args.slice(1));
      if (typeof message === 'string') throw bad(tag, message);
      s.require(tag, r, I, 'APPEND');
      const conn = await s.ownerConn(t.owner);
      s.streamTo = { conn, rights: r };
      return s.send(conn, tag, name, [box, ...appendArgs(message, r)], undefined, streaming);
    }
    case 'DELETE': {
      if (args.length !== 1) throw bad(tag, 'DELETE takes a mailbox name');
      s.require(tag, r, X, 'DELETE');
      const conn = await s.ownerConn(t.owner);
      if (s.selected?.conn === conn && s.selected.target.kind === 'shared' && s.selected.target.name === t.name) await deselect(s);
      return s.exclusive(conn, tag, name, [box], { after: (status) => (status === 'OK' ? registryDelete(s, t.owner, t.wire) : undefined) });
    }
    case 'RENAME': {
      if (args.length !== 2) throw bad(tag, 'RENAME takes two mailbox names');
      const to = s.resolve(newName);
      if (to.kind !== 'shared' || to.owner !== t.owner) throw new ImapNo(`${tag} NO [CANNOT] A shared mailbox can only be renamed within its owner's mailboxes\r\n`);
      s.require(tag, r, X, 'RENAME');
      const parent = parentOf(to);
      const pr = parent ? s.rights(parent) : undefined;
      if (pr === undefined) throw new ImapNo(`${tag} NO [NOPERM] RENAME needs the "k" right on the new parent\r\n`);
      s.require(tag, pr, K, 'RENAME into that mailbox');
      const conn = await s.ownerConn(t.owner);
      return s.exclusive(conn, tag, name, [box, str(to.wire)], { after: (status) => (status === 'OK' ? registryRename(s, t.owner, t.wire, to.wire) : undefined) });
    }
  }
}

function parentOf(t: Target & { kind: 'shared' }): (Target & { kind: 'shared' }) | undefined {
  const slash = t.name.lastIndexOf('/');
  if (slash < 0) return undefined;
  const name = t.name.slice(0, slash);
  return { kind: 'shared', owner: t.owner, name, wire: t.wire.slice(0, t.wire.lastIndexOf('/')) };
}

/** An APPEND message's flags and date for an owner's mailbox: flags the user may not set are left off (RFC 4314 §4). */
export function appendArgs(message: { flags: readonly string[] | undefined; date: ImapValue | undefined }, rights: Rights): ImapValue[] {
  const out: ImapValue[] = [];
  if (message.flags) out.push(list(message.flags.filter((f) => hasAll(rights, flagRight(f))).map(atom)));
  if (message.date) out.push(message.date);
  return out;
}

/** At most this much is read from other nodes for one CATENATE (as a cross-node copy holds at most 4 MiB). */
const MAX_URL_BYTES = 4 << 20;

/**
 * CATENATE URL parts the home Dovecot cannot resolve (`all`: every one)
 * become TEXT parts: the gateway reads the part from the node that holds
 * the mailbox, as its owner, after checking the user may read it (r). A URL
 * it cannot read is NO [BADURL], as a server says (RFC 4469 §5).
 */
async function resolveUrls(s: SessionCore, tag: string, messages: readonly CatenateMessage[], all: boolean): Promise<CatenateMessage[]> {
  const badUrl = (url: string, why: string): ImapNo => new ImapNo(`${tag} NO [BADURL ${url.replace(/[^\x21-\x5c\x5e-\x7e]/g, '')}] ${why}\r\n`);
  let bytes = 0;
  const out: CatenateMessage[] = [];
  for (const m of messages) {
    const parts: ImapValue[] = [];
    for (let i = 0; i < m.parts.length; i += 2) {
      const kind = m.parts[i]!;
      const value = m.parts[i + 1]!;
      if ((kind as { value: string }).value.toUpperCase() !== 'URL') {
        parts.push(kind, value);
        continue;
      }
      const url = (value as { value: string }).value;
      const u = parseMessageUrl(url);
      const src = u ? s.resolve(encodeMutf7(u.mailbox)) : undefined;
      if (!all && (src === undefined || src.kind === 'home')) {
        // The home Dovecot's own (or not one the gateway reads): sent as the client wrote it.
        parts.push(kind, value);
        continue;
      }
      if (!u || !src || src.kind === 'parent' || src.kind === 'invalid') throw badUrl(url, 'No such message.');
      let owner = s.ctx.user;
      let wire = src.wire;
      if (src.kind === 'shared') {
        const r = s.rights(src);
        if (r === undefined || !hasAny(r, L) || !hasAll(r, R)) throw badUrl(url, 'No such message.');
        owner = src.owner;
        wire = src.wire;
      }
      // A gateway keeps the assignments of the users it serves: another owner's is asked for.
      const where = s.ctx.agent.locate(s.ctx.tenant, owner) ?? (await s.ctx.agent.assign(s.ctx.tenant, owner).catch(() => undefined));
      const address = where ? s.ctx.agent.nodeAddress(where.node) : undefined;
      if (!address || !s.ctx.master) throw new BackendUnavailable(`${owner}'s node is not known`);
      const data = await fetchPart(address, `${s.ctx.dovecotName(owner)}*${s.ctx.master.user}`, s.ctx.master.password, { ...u, mailbox: wire }, { via: s.ctx.backends, maxBytes: MAX_URL_BYTES - bytes }).catch((err: unknown) => {
        if (err instanceof BackendUnavailable && err.message === 'part too large') throw new ImapNo(`${tag} NO [LIMIT] CATENATE parts from other nodes are limited to 4 MiB\r\n`);
        throw err;
      });
      if (data === undefined) throw badUrl(url, 'No such message.');
      bytes += data.length;
      parts.push(atom('TEXT'), { type: 'literal', value: data.toString('latin1'), binary: data.includes(0) });
    }
    out.push({ ...m, parts, urls: false });
  }
  return out;
}
