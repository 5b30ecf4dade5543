import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { DovecotInstance } from './dovecot.js';

/** A user's time at one Dovecot, from its log: a login to its disconnect, or one LMTP delivery. */
export interface LoggedSession {
  readonly instance: string;
  readonly user: string;
  readonly service: string;
  readonly session: string;
  /** ms since the epoch (the log's microseconds, rounded down). */
  readonly start: number;
  /** Infinity while still connected. */
  readonly end: number;
}

/** A log line's time (log_timestamp "%Y-%m-%d %H:%M:%S.%{usecs} ", as the test harness writes it). */
function stamp(line: string): number | undefined {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d{6}) /.exec(line);
  return m ? new Date(`${m[1]}T${m[2]}.${m[3]!.slice(0, 3)}`).getTime() : undefined;
}

/**
 * Every login (IMAP, POP3, ManageSieve, submission) and LMTP delivery in a
 * test Dovecot's log, with when it began and ended. Lines are local time as
 * Dovecot writes them, read back in the same zone.
 */
export function loggedSessions(instance: string, d: DovecotInstance): LoggedSession[] {
  const text = readFileSync(path.join(d.dir, 'dovecot.log'), 'utf8');
  const open = new Map<string, { user: string; service: string; start: number; end: number }>();
  const out: LoggedSession[] = [];
  for (const line of text.split('\n')) {
    const at = stamp(line);
    if (at === undefined) continue;
    // 2.3 says "Login:", 2.4 "Logged in:".
    const login = /^\S+ \S+ (\w+)-login: Info: (?:Login|Logged in): user=<([^>]*)>.*session=<([^>]+)>/.exec(line);
    if (login) {
      open.set(login[3]!, { user: login[2]!, service: login[1]!, start: at, end: Infinity });
      continue;
    }
    // The harness's LMTP log prefix adds " rip=ADDRESS" after the session.
    const delivered = /^\S+ \S+ lmtp\(([^)]*)\)<\d+><([^>]+)>[^:]*: Info: .*saved mail to/.exec(line);
    if (delivered) {
      out.push({ instance, user: delivered[1]!, service: 'lmtp', session: delivered[2]!, start: at, end: at });
      continue;
    }
    const ended = /^\S+ \S+ (\w+)\(([^)]*)\)<\d+><([^>]+)>[^:]*: Info: Disconnected/.exec(line);
    const s = ended ? open.get(ended[3]!) : undefined;
    if (s) s.end = at;
  }
  for (const [session, s] of open) out.push({ instance, session, ...s });
  return out.sort((a, b) => a.start - b.start);
}

/** Pairs of one user's sessions on two different instances that were open at the same time. */
export function overlaps(sessions: readonly LoggedSession[]): Array<[LoggedSession, LoggedSession]> {
  const found: Array<[LoggedSession, LoggedSession]> = [];
  for (const a of sessions) {
    for (const b of sessions) {
      if (a.instance >= b.instance || a.user !== b.user) continue;
      if (a.start <= b.end && b.start <= a.end) found.push([a, b]);
    }
  }
  return found;
}
