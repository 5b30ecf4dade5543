import { L, hasAll, hasAny, rightsOf } from '../../domain/rights.js';
import { crossCopy } from './cross-copy.js';
import { checkCopy, checkFetch, checkNoArgs, checkSearch, checkSort, checkThread, isSequenceSet, parseStore } from './grammar.js';
import { type ImapValue, astring, atomUpper } from './parser.js';
import { E, I, R, flagRight, peekFetchItems } from './rights-table.js';
import { ImapNo, type SessionCore, type Target, bad, nonexistent } from './session-core.js';
import type { Conn } from './upstream.js';
import { atom, list, str } from './wire.js';

/**
 * Commands on a selected shared mailbox (on the owner's node, as the owner):
 * each checked against its grammar and the user's rights (RFC 4314 §4)
 * before it is written anew.
 */
export async function sharedSelected(s: SessionCore, tag: string, name: string, args: ImapValue[], conn: Conn, t: Target & { kind: 'shared' }): Promise<void> {
  // Fencing: nothing is relayed under an epoch the owner no longer holds (the event may still be on its way).
  if (s.ctx.agent.locate(s.ctx.tenant, t.owner)?.epoch !== conn.epoch) {
    s.dropOwner(conn, `${t.owner}'s mailboxes moved to another node; reconnect`);
    return;
  }
  const r = s.rights(t);
  // A revoke reaches an open mailbox at its next command.
  if (r === undefined || !hasAny(r, L)) throw new ImapNo(`${tag} NO [NONEXISTENT] Mailbox no longer exists for you\r\n`);
  s.require(tag, r, R, name);
  const uid = name === 'UID';
  const sub = uid ? atomUpper(args[0])! : name;
  const rest = uid ? args.slice(1) : args;
  const check = (wrong: string | undefined): void => {
    if (wrong) throw bad(tag, wrong);
  };
  let out: ImapValue[] = rest;
  switch (sub) {
    case 'FETCH': {
      check(checkFetch(rest));
      const peek = peekFetchItems(rest, r);
      if (!peek) break;
      out = peek.args;
      if (peek.renames.size === 0) break;
      // Alone on the connection, so only this command's FETCH responses are renamed.
      return s.exclusive(conn, tag, name, uid ? [atom(sub), ...out] : out, {
        start: () => {
          conn.renames = peek.renames;
        },
        onStatus: () => {
          conn.renames = undefined;
        },
      });
    }
    case 'SEARCH':
      check(checkSearch(rest));
      break;
    case 'SORT':
      check(checkSort(rest));
      break;
    case 'THREAD':
      check(checkThread(rest));
      break;
    case 'STORE': {
      const store = parseStore(rest);
      if (typeof store === 'string') throw bad(tag, store);
      const op = store.item.toUpperCase();
      if (op.startsWith('FLAGS')) {
        s.require(tag, r, rightsOf('stw'), 'Replacing flags');
        break;
      }
      // RFC 4314 §4: "the server SHOULD NOT fail the STORE if the user has rights to modify at
      // least one flag specified": the flags the user may not change are left out.
      const kept = store.flags.filter((f) => hasAll(r, flagRight(f)));
      if (kept.length === 0) {
        await s.quiet();
        return s.write(`${tag} OK Store completed.\r\n`);
      }
      out = [store.set, ...(store.modifiers ? [store.modifiers] : []), atom(store.item), list(kept.map(atom))];
      break;
    }
    case 'EXPUNGE':
      check(uid ? (rest.length === 1 && isSequenceSet(rest[0]) ? undefined : 'UID EXPUNGE needs a sequence set') : checkNoArgs(sub, rest));
      s.require(tag, r, E, 'EXPUNGE');
      break;
    case 'CHECK':
    case 'NOOP':
      check(checkNoArgs(sub, rest));
      break;
    case 'CLOSE':
    case 'UNSELECT':
      check(checkNoArgs(sub, rest));
      // Without "e", CLOSE must not expunge: UNSELECT closes the same way, keeping \Deleted messages.
      return s.exclusive(conn, tag, sub === 'CLOSE' && !hasAll(r, E) ? 'UNSELECT' : sub, [], { onStatus: (status) => {
        if (status === 'OK') {
          s.unselected(conn);
        }
      } });
    case 'COPY':
    case 'MOVE': {
      const wrong = checkCopy(rest);
      if (wrong) throw bad(tag, `${sub} ${wrong}`);
      if (sub === 'MOVE') s.require(tag, r, rightsOf('te'), 'MOVE out of this mailbox');
      const to = s.resolve(astring(rest[1])!);
      if (to.kind === 'parent' || to.kind === 'invalid') throw nonexistent(tag);
      if (to.kind === 'home') return crossCopy(s, tag, sub === 'MOVE', uid, rest[0]!, conn, to, undefined);
      const tr = s.visible(tag, to);
      s.require(tag, tr, I, sub);
      // Another owner's node, or flags the user may not set on the target (left off by the copy): fetch + append.
      if (to.owner !== t.owner || !hasAll(tr, rightsOf('stw'))) return crossCopy(s, tag, sub === 'MOVE', uid, rest[0]!, conn, to, tr);
      out = [rest[0]!, str(to.wire)];
      break;
    }
    case 'IDLE':
      check(checkNoArgs(sub, rest));
      return s.idle(conn, tag);
    default:
      throw bad(tag, 'Unknown command.');
  }
  return s.send(conn, tag, uid ? 'UID' : sub, uid ? [atom(sub), ...out] : out);
}
