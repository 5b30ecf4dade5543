import { hasAll } from '../../domain/rights.js';
import { R } from './rights-table.js';
import { splitArgs } from '../imap-syntax.js';
import { type ListCommand, parseList } from './list-command.js';
import { type ImapValue, astring } from './parser.js';
import type { SessionCore, Target } from './session-core.js';
import type { Conn } from './upstream.js';
import { quote, str } from './wire.js';

/**
 * LIST (RFC 3501, LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819) and LSUB:
 * the home Dovecot lists the user's own mailboxes; the shared namespace's
 * entries follow its OK, with RETURN (STATUS …) answered by each owner's
 * node (for mailboxes the user may read, RFC 4314 §4).
 */
export async function listCommand(s: SessionCore, tag: string, name: string, args: ImapValue[]): Promise<void> {
  const reference = astring(args[0]);
  const pattern = astring(args[1]);
  const cmd: ListCommand | string =
    name === 'LIST' ? parseList(args) : args.length === 2 && reference !== undefined && pattern !== undefined ? { select: new Set(), reference, patterns: [pattern], returns: new Set() } : 'LSUB needs a reference and a mailbox pattern';
  // Not understood here: the home Dovecot answers it (BAD), nothing is added.
  if (typeof cmd === 'string') return s.send(s.home, tag, name, args);
  const entries = sharedEntries(s, name, cmd);
  if (!cmd.status || !entries.some((e) => e.status)) {
    await s.send(s.home, tag, name, args, (status, line) => {
      if (status === 'OK') for (const e of entries) s.write(e.line);
      s.forward(line);
    });
    return;
  }
  const items = cmd.status;
  await s.exclusive(s.home, tag, name, args, {
    after: async (status) => {
      if (status !== 'OK') return;
      for (const e of entries) {
        s.write(e.line);
        if (e.status) await sharedStatus(s, e.status, items);
      }
    },
  });
}

/** The shared namespace's LIST entries for a command, each with the mailbox whose STATUS follows it. */
function sharedEntries(s: SessionCore, name: string, cmd: ListCommand): Array<{ line: string; status?: Target & { kind: 'shared' } }> {
  if (cmd.select.has('SPECIAL-USE')) return [];
  const { mailboxes } = s.ctx.agent.sharedWith(s.ctx.tenant, s.ctx.user);
  const ns = s.ctx.namespace;
  const sep = quote(ns.separator);
  const matched = ns.list(mailboxes, cmd.reference, cmd.patterns);
  // Shared mailboxes the user can see count as subscribed (README: subscriptions).
  const subscribedOnly = cmd.select.has('SUBSCRIBED');
  const recursive = cmd.select.has('RECURSIVEMATCH');
  const markSubscribed = name === 'LIST' && (subscribedOnly || cmd.returns.has('SUBSCRIBED'));
  const names = new Set(matched.map((e) => e.name));
  const all = ns.entries(mailboxes);
  const out: Array<{ line: string; status?: Target & { kind: 'shared' } }> = [];
  for (const e of matched) {
    const real = e.mailbox !== undefined;
    // RFC 5258 §3.5: with RECURSIVEMATCH, a match is returned for a subscribed descendant the patterns did not match.
    const childInfo = subscribedOnly && recursive && all.some((d) => d.mailbox !== undefined && d.name.startsWith(`${e.name}${ns.separator}`) && !names.has(d.name));
    if (subscribedOnly && !real && !childInfo) continue;
    const attributes = [...e.attributes, ...(real && markSubscribed ? ['\\Subscribed'] : [])];
    const line = `* ${name} (${attributes.join(' ')}) ${sep} ${quote(e.name)}${childInfo ? ' ("CHILDINFO" ("SUBSCRIBED"))' : ''}\r\n`;
    const t = real && cmd.status ? s.resolve(e.name) : undefined;
    const r = t?.kind === 'shared' ? s.rights(t) : undefined;
    out.push(t?.kind === 'shared' && r !== undefined && hasAll(r, R) ? { line, status: t } : { line });
  }
  return out;
}

/** STATUS of a shared mailbox from its owner's node, named as the user sees it; nothing when unreachable. */
async function sharedStatus(s: SessionCore, t: Target & { kind: 'shared' }, items: ImapValue): Promise<void> {
  let conn: Conn;
  try {
    conn = await s.ownerConn(t.owner);
  } catch {
    return;
  }
  const r = await s.internal(conn, 'STATUS', [str(t.wire), items]);
  if (r.status !== 'OK') return;
  for (const pieces of r.untagged) {
    const args = splitArgs(pieces);
    if ((args[1]?.value ?? '').toUpperCase() !== 'STATUS' || args.length < 4) continue;
    s.write(`* STATUS ${quote(s.ctx.namespace.nameOf(t.owner, t.name))} ${args.slice(3).map((a) => a.raw).join(' ')}\r\n`);
  }
}
