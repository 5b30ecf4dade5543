import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DovecotInstance } from '../harness/dovecot.js';
import { loggedSessions, overlaps } from '../harness/dovecot-log.js';
import { tempDir } from '../harness/tmp.js';

/** The overlap checker of the Dovecot-proxy test, on logs written here in both versions' words. */
const dirs: Array<ReturnType<typeof tempDir>> = [];
afterAll(() => dirs.forEach((d) => d.remove()));

function instance(lines: string[]): DovecotInstance {
  const t = tempDir('mailshare-log-');
  dirs.push(t);
  mkdirSync(t.path, { recursive: true });
  writeFileSync(path.join(t.path, 'dovecot.log'), `${lines.join('\n')}\n`);
  return { dir: t.path } as DovecotInstance;
}

const b1 = instance([
  '2026-12-01 10:00:00.100000 imap-login: Info: Login: user=<alice@acme.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=10, secured, session=<s1>',
  '2026-12-01 10:00:02.000000 imap(alice@acme.test)<10><s1>: Info: Disconnected: Logged out in=1 out=2',
  '2026-12-01 10:00:03.000000 lmtp(bob@acme.test)<11><s2> rip=127.0.0.1: Info: msgid=<x>: saved mail to INBOX',
  '2026-12-01 10:00:04.000000 pop3-login: Info: Logged in: user=<carol@acme.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=12, secured, session=<s3>',
]);

describe('loggedSessions and overlaps (test harness)', () => {
  it('reads logins to their disconnects, deliveries as moments, and open sessions as open', () => {
    const s = loggedSessions('b1', b1);
    expect(s.map((x) => [x.user, x.service, x.end - x.start])).toEqual([
      ['alice@acme.test', 'imap', 1900],
      ['bob@acme.test', 'lmtp', 0],
      ['carol@acme.test', 'pop3', Infinity],
    ]);
  });

  it("finds one user's sessions open on two instances at once, and nothing else", () => {
    const b2 = instance([
      // alice on b2 after b1 let her go: fine; carol on b2 while still open on b1: an overlap.
      '2026-12-01 10:00:02.500000 imap-login: Info: Login: user=<alice@acme.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=20, secured, session=<t1>',
      '2026-12-01 10:00:05.000000 imap-login: Info: Logged in: user=<carol@acme.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=21, secured, session=<t2>',
    ]);
    const found = overlaps([...loggedSessions('b1', b1), ...loggedSessions('b2', b2)]);
    expect(found.map(([a, b]) => [a.instance, b.instance, a.user])).toEqual([['b1', 'b2', 'carol@acme.test']]);
  });
});
