import { type Rights, hasAll } from '../../domain/rights.js';
import { BackendUnavailable, backendScript } from '../backend.js';
import { type ImapValue } from './parser.js';
import { flagRight } from './rights-table.js';
import { isSequenceSet } from './grammar.js';
import { type SessionCore, type Target, bad } from './session-core.js';
import type { Conn } from './upstream.js';
import { atom, command, list, str, wireAll } from './wire.js';

/** Mail a cross-node copy holds at a time (at least one message). */
const COPY_BATCH_BYTES = 4 << 20;

/**
 * COPY/MOVE between mailboxes on different connections (the user's own
 * and a shared one, or two owners'): each message is fetched from the
 * source and appended to the target with its flags and internal date, a
 * few at a time so memory stays bounded. MOVE expunges the sources only
 * after every append succeeded (RFC 6851 §3.3); the client sees the
 * EXPUNGE responses as from a real MOVE.
 */
export async function crossCopy(s: SessionCore, tag: string, move: boolean, uid: boolean, set: ImapValue, from: Conn, to: Target, targetRights: Rights | undefined): Promise<void> {
  const verb = move ? 'MOVE' : 'COPY';
  if (!isSequenceSet(set)) throw bad(tag, `${verb} needs a sequence set`);
  const dest = to.kind === 'home' ? s.home : await s.ownerConn(to.owner);
  await s.quiet();
  const search = await s.internal(from, 'UID', [atom('SEARCH'), ...(uid ? [atom('UID')] : []), set]);
  if (search.status !== 'OK') throw bad(tag, 'Invalid sequence set');
  const uids = search.untagged.flatMap((p) => {
    const text = p.map((x) => ('text' in x ? x.text : '')).join('');
    return /^\* SEARCH/i.test(text) ? text.split(' ').slice(2).map(Number).filter((n) => n > 0) : [];
  });
  const copied: Array<{ src: number; dst: number }> = [];
  let validity = '';
  for (const batch of await copyBatches(s, from, uids)) {
    const fetched = await s.internal(from, 'UID', [atom('FETCH'), atom(batch.join(',')), list([atom('UID'), atom('FLAGS'), atom('INTERNALDATE'), atom('BODY.PEEK[]')])]);
    if (fetched.status !== 'OK') return copyFailed(s, tag, verb, to, copied, 'SERVERBUG', 'could not read the messages');
    for (const p of fetched.untagged) {
      const text = p.map((x) => ('text' in x ? x.text : '')).join('');
      const body = p.find((x): x is { literal: string } => 'literal' in x);
      const src = /\bUID (\d+)/i.exec(text);
      if (!/^\* \d+ FETCH/i.test(text) || !body || !src) continue;
      const date = /INTERNALDATE "([^"]+)"/i.exec(text)?.[1];
      let flags = (/FLAGS \(([^)]*)\)/i.exec(text)?.[1] ?? '').split(' ').filter((f) => f !== '' && f.toLowerCase() !== '\\recent');
      // Flags the user may not set on the target are left off (RFC 4314 §4).
      if (targetRights !== undefined) flags = flags.filter((f) => hasAll(targetRights, flagRight(f)));
      const res = await s.internal(dest, 'APPEND', [str(to.wire), list(flags.map(atom)), ...(date ? [str(date)] : []), { type: 'literal', value: body.literal, binary: false }]);
      if (res.status !== 'OK') {
        // The target's own reason (e.g. OVERQUOTA) when it gave one.
        const code = /^\S+ NO \[([A-Z-]+)/i.exec(res.line)?.[1]?.toUpperCase() ?? 'CANNOT';
        return copyFailed(s, tag, verb, to, copied, code, 'the target refused a message');
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
  if (!move || copied.length === 0) return s.write(`${tag} OK ${code}${verb} completed\r\n`);
  s.write(`* OK ${code}Moved\r\n`);
  const moved = atom(copied.map((c) => c.src).join(','));
  await s.internal(from, 'UID', [atom('STORE'), moved, atom('+FLAGS.SILENT'), list([atom('\\Deleted')])]);
  // Its EXPUNGE responses go to the client (sequence numbers must stay in step): a client command
  // of the gateway's, whose tagged response is not forwarded.
  await new Promise<void>((resolve) => {
    const t = s.nextTag();
    s.enqueue(from, t, tag, () => resolve());
    from.socket.write(command(t, 'UID', [atom('EXPUNGE'), moved]), 'latin1');
  });
  s.write(`${tag} OK ${verb} completed\r\n`);
}

/**
 * The UIDs in batches whose messages together are at most
 * COPY_BATCH_BYTES (one message at least), so a copy holds a bounded
 * amount of mail in memory whatever the folder holds.
 */
export async function copyBatches(s: SessionCore, from: Conn, uids: number[]): Promise<number[][]> {
  const sizes = new Map<number, number>();
  for (let i = 0; i < uids.length; i += 500) {
    const res = await s.internal(from, 'UID', [atom('FETCH'), atom(uids.slice(i, i + 500).join(',')), list([atom('UID'), atom('RFC822.SIZE')])]);
    for (const p of res.untagged) {
      const text = p.map((x) => ('text' in x ? x.text : '')).join('');
      const uid = /\bUID (\d+)/i.exec(text)?.[1];
      const size = /\bRFC822\.SIZE (\d+)/i.exec(text)?.[1];
      if (uid && size) sizes.set(Number(uid), Number(size));
    }
  }
  const batches: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (const uid of uids) {
    const size = sizes.get(uid) ?? 0;
    if (current.length > 0 && (bytes + size > COPY_BATCH_BYTES || current.length >= 64)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(uid);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * A cross-node COPY/MOVE failed part-way: the messages already appended are
 * expunged again (by their APPENDUIDs, on a connection of its own, so the
 * client's selected mailboxes are untouched), leaving the target as it was
 * (RFC 3501 §6.4.7); the source was never changed.
 */
export async function copyFailed(s: SessionCore, tag: string, verb: string, to: Target, copied: ReadonlyArray<{ dst: number }>, code: string, why: string): Promise<void> {
  const dst = copied.map((c) => c.dst).filter((n) => n > 0);
  let undone = dst.length === copied.length;
  if (copied.length > 0 && undone) {
    const owner = to.kind === 'home' ? s.ctx.user : to.owner;
    const node = s.ctx.agent.locate(s.ctx.tenant, owner)?.node;
    const address = node ? s.ctx.agent.nodeAddress(node) : undefined;
    const master = s.ctx.master;
    try {
      if (!address || !master) throw new BackendUnavailable('no way to reach the target');
      const set = atom(dst.join(','));
      const statuses = await backendScript(address, `${s.ctx.dovecotName(owner)}*${master.user}`, master.password, [
        wireAll([atom('SELECT'), str(to.wire)]),
        wireAll([atom('UID'), atom('STORE'), set, atom('+FLAGS.SILENT'), list([atom('\\Deleted')])]),
        wireAll([atom('UID'), atom('EXPUNGE'), set]),
      ], { via: s.ctx.backends });
      undone = statuses.every((st) => st === 'OK');
    } catch (err) {
      s.ctx.log.warn({ user: s.ctx.user, err: String(err) }, 'could not undo a partial copy');
      undone = false;
    }
  }
  const state = copied.length === 0 || undone ? 'nothing was copied' : `${copied.length} message(s) were copied and may remain in the target`;
  s.write(`${tag} NO [${code}] ${verb} failed: ${why}; ${state}, the source is unchanged\r\n`);
}
