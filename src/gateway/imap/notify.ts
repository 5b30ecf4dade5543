import { L, hasAll } from '../../domain/rights.js';
import { R } from './rights-table.js';
import { type Piece, splitArgs } from '../imap-syntax.js';
import { eventsForOthers, parseNotify } from './notify-command.js';
import type { ImapValue } from './parser.js';
import { type SessionCore, type Target, bad } from './session-core.js';
import type { Conn } from './upstream.js';
import { atom, list, str } from './wire.js';

/**
 * NOTIFY (RFC 5465), split by where the mailboxes live: the home Dovecot
 * gets the filters on the user's own mailboxes (and SELECTED, INBOXES,
 * PERSONAL, SUBSCRIBED), each owner's node a MAILBOXES filter listing the
 * shared mailboxes the user may read (l and r: what STATUS needs) that the
 * command names, SUBSCRIBED included (shared mailboxes count as subscribed).
 * Their reports reach the client named as the user sees them.
 */
export async function notifyCommand(s: SessionCore, tag: string, args: ImapValue[]): Promise<void> {
  const cmd = parseNotify(args);
  if (typeof cmd === 'string') throw bad(tag, cmd);
  await s.quiet();
  const ns = s.ctx.namespace;
  const homeGroups: ImapValue[] = [];
  const perOwner = new Map<string, Array<{ names: Set<string>; events: ImapValue }>>();
  const readable = (t: Target & { kind: 'shared' }): boolean => {
    const r = s.rights(t);
    return r !== undefined && hasAll(r, L) && hasAll(r, R);
  };
  const visibleShared = (): Array<Target & { kind: 'shared' }> =>
    s.ctx.namespace.entries(s.ctx.agent.sharedWith(s.ctx.tenant, s.ctx.user).mailboxes).flatMap((e) => {
      if (e.mailbox === undefined) return [];
      const t = s.resolve(e.name);
      return t.kind === 'shared' && readable(t) ? [t] : [];
    });
  if (!cmd.none) {
    for (const g of cmd.groups) {
      const shared: Array<Target & { kind: 'shared' }> = [];
      if (g.mailboxes) {
        const home = g.mailboxes.filter((m) => ns.resolve((m as { value: string }).value).kind === 'home');
        if (home.length > 0) homeGroups.push(list([atom(g.filter), list(home), g.events]));
        for (const m of g.mailboxes) {
          const name = (m as { value: string }).value;
          if (ns.resolve(name).kind === 'home') continue;
          // SUBTREE of a shared name: the mailboxes at or below it the user may read (never the
          // owner's subtree as such: the children need not be shared).
          const within = visibleShared().filter((t) => {
            const seen = ns.nameOf(t.owner, t.name);
            return seen === name || (g.filter === 'SUBTREE' && (seen.startsWith(`${name}${ns.separator}`) || `${name}${ns.separator}` === ns.prefix));
          });
          shared.push(...within);
        }
      } else {
        homeGroups.push(list([atom(g.filter), g.events]));
        if (g.filter === 'SUBSCRIBED') shared.push(...visibleShared());
      }
      for (const t of shared) {
        const groups = perOwner.get(t.owner) ?? [];
        perOwner.set(t.owner, groups);
        let entry = groups.find((x) => x.events === g.events);
        if (!entry) groups.push((entry = { names: new Set(), events: g.events }));
        entry.names.add(t.wire);
      }
    }
  }
  const setArgs = (groups: ImapValue[]): ImapValue[] => (groups.length === 0 ? [atom('NONE')] : [atom('SET'), ...(!cmd.none && cmd.status ? [atom('STATUS')] : []), ...groups]);
  // The owners' parts first: a part a Dovecot refuses (e.g. an unsupported event) fails the
  // command, and what was set for it is taken back.
  const done: Conn[] = [];
  const fail = async (line: string): Promise<void> => {
    for (const conn of done) {
      conn.notify = false;
      await s.internal(conn, 'NOTIFY', [atom('NONE')]);
    }
    s.write(`${tag}${line.slice(line.indexOf(' '))}`);
  };
  const reports: Array<{ conn: Conn; untagged: Piece[][] }> = [];
  for (const [owner, groups] of perOwner) {
    let conn: Conn;
    try {
      conn = await s.ownerConn(owner);
    } catch {
      continue;
    }
    const r = await s.internal(conn, 'NOTIFY', setArgs(groups.map((g) => list([atom('MAILBOXES'), list([...g.names].map(str)), eventsForOthers(g.events)]))));
    if (r.status !== 'OK') return fail(r.line);
    done.push(conn);
    reports.push({ conn, untagged: r.untagged });
  }
  const home = await s.internal(s.home, 'NOTIFY', setArgs(homeGroups));
  if (home.status !== 'OK') return fail(home.line);
  for (const conn of done) conn.notify = true;
  s.home.notify = homeGroups.length > 0;
  for (const pieces of home.untagged) s.response(s.home, pieces, Buffer.from(`${splitArgs(pieces).map((a) => a.raw).join(' ')}\r\n`, 'latin1'));
  for (const { conn, untagged } of reports) for (const pieces of untagged) s.response(conn, pieces, Buffer.alloc(0));
  for (const conn of s.owners.values()) {
    if (conn.notify && !perOwner.has(conn.owner)) {
      conn.notify = false;
      await s.internal(conn, 'NOTIFY', [atom('NONE')]);
    }
  }
  s.write(`${tag} OK NOTIFY completed\r\n`);
}
