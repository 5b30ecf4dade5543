import { MailboxView, uidRanges } from './mailbox-view.js';
import type { Conn } from './upstream.js';

const NUMBERED = /^\* (\d+) (EXISTS|EXPUNGE|FETCH)\b/i;
const ESEARCH = /^\* ESEARCH \(TAG "([^"]*)"\) UID(?: ALL ([0-9:,]+))?/i;
const VANISHED = /^\* VANISHED ([0-9:,]+)$/i;
const HIGHESTMODSEQ = /\[HIGHESTMODSEQ (\d+)\]/i;
const UIDVALIDITY = /^\* OK \[UIDVALIDITY (\d+)\]/i;

/**
 * Follows, from the first line of each server response on a connection,
 * what the client knows of the mailbox selected there: the gateway's own
 * UID SEARCH answer starts the view, then EXISTS, EXPUNGE, VANISHED and the
 * UIDs of FETCH responses keep it (RFC 3501 §7.3.1, §7.4.1, §7.4.2; RFC
 * 7162 §3.2.10), and the MODSEQs shown (CONDSTORE).
 */
export function observe(c: Conn, line: string): void {
  if (line.charCodeAt(0) !== 0x2a /* * */) {
    // A tagged completion may carry [HIGHESTMODSEQ n] (RFC 7162 §3.1.2.1).
    if (c.condstore) bumpModseq(c, HIGHESTMODSEQ.exec(line)?.[1]);
    return;
  }
  const m = NUMBERED.exec(line);
  if (m) {
    const n = Number(m[1]);
    const v = c.view;
    const kind = m[2]!.toUpperCase();
    if (kind === 'FETCH') {
      // Read only what is needed: a UID the view lacks, a MODSEQ (both cheap to rule out).
      const wantUid = v !== undefined && n > v.known;
      const hasModseq = line.indexOf('MODSEQ (') >= 0;
      if (!wantUid && !hasModseq) return;
      const items = topLevelItems(line, m[0].length);
      if (items.modseq !== undefined) {
        c.condstore = true;
        bumpModseq(c, items.modseq);
      }
      if (wantUid && items.uid !== undefined) v.learn(n, items.uid);
    } else if (v) {
      if (kind === 'EXISTS') v.exists(n);
      else v.expunge(n);
    }
    return;
  }
  if (c.viewTag !== undefined) {
    const e = ESEARCH.exec(line);
    if (e && e[1] === c.viewTag) {
      c.viewTag = undefined;
      // A set no server sends (a UID 0): no view, so no migration of this mailbox.
      try {
        c.view = MailboxView.fromUidSet(e[2] ?? '');
      } catch {
        c.view = undefined;
      }
      return;
    }
  }
  const van = VANISHED.exec(line);
  if (van) {
    const v = c.view;
    if (!v) return;
    try {
      v.vanish(expand(van[1]!));
    } catch {
      v.broken ??= `unreadable VANISHED ${van[1]}`;
    }
    return;
  }
  const hms = HIGHESTMODSEQ.exec(line);
  if (hms) {
    c.condstore = true;
    bumpModseq(c, hms[1]);
  }
  const uv = UIDVALIDITY.exec(line);
  if (uv) c.uidValidity = uv[1];
}

function bumpModseq(c: Conn, text: string | undefined): void {
  if (text === undefined) return;
  const n = BigInt(text);
  if (c.modseq === undefined || n > c.modseq) c.modseq = n;
}

/** UID and MODSEQ of a FETCH response's item list (top level only: never inside strings or lists of other items). */
function topLevelItems(line: string, from: number): { uid?: number; modseq?: string } {
  const open = line.indexOf('(', from);
  if (open < 0) return {};
  const out: { uid?: number; modseq?: string } = {};
  let i = open + 1;
  while (i < line.length) {
    while (line[i] === ' ') i++;
    const start = i;
    while (i < line.length && /[A-Za-z0-9.[\]<>-]/.test(line[i]!)) i++;
    const name = line.slice(start, i).toUpperCase();
    if (name === '') return out;
    if (line[i] !== ' ') return out;
    i++;
    if (name === 'UID') {
      const d = /^\d+/.exec(line.slice(i, i + 11));
      if (d) out.uid = Number(d[0]);
    } else if (name === 'MODSEQ') {
      const d = /^\((\d+)\)/.exec(line.slice(i, i + 24));
      if (d) out.modseq = d[1];
    }
    // Skip the value: an atom/number, a quoted string, or a parenthesized list (with strings in it).
    i = skipValue(line, i);
    if (i < 0) return out;
    if (line[i] === ')') return out;
  }
  return out;
}

/** The index after one value at `i` (-1 when it runs into a literal or the end). */
function skipValue(line: string, i: number): number {
  if (line[i] === '"') return skipQuoted(line, i);
  if (line[i] === '{') return -1;
  if (line[i] === '(') {
    let depth = 0;
    while (i < line.length) {
      const ch = line[i]!;
      if (ch === '"') {
        i = skipQuoted(line, i);
        if (i < 0) return -1;
        continue;
      }
      if (ch === '{') return -1;
      if (ch === '(') depth++;
      else if (ch === ')' && --depth === 0) return i + 1;
      i++;
    }
    return -1;
  }
  while (i < line.length && line[i] !== ' ' && line[i] !== ')') i++;
  return i;
}

function skipQuoted(line: string, i: number): number {
  for (let j = i + 1; j < line.length; j++) {
    if (line[j] === '\\') j++;
    else if (line[j] === '"') return j + 1;
  }
  return -1;
}

/** The UIDs of a sequence set of numbers ("1:3,7"). */
function* expand(set: string): IterableIterator<number> {
  for (const [lo, hi] of uidRanges(set)) for (let u = lo; u <= hi; u++) yield u;
}
