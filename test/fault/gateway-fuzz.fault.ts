import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/gateway.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap, message } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

/**
 * The gateway never crashes and keeps serving, whatever bytes a client
 * sends, before or after login: random bytes, and valid commands (shared
 * mailboxes, literals, IDLE, COPY, ACL commands) mutated and cut at random
 * points. After every session a fresh login must still work.
 */
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
let cluster: GatewayCluster;
let gateway: Gateway;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['fz'], users: USERS, tenant: true, gateway: () => ({ loginPenalty: { maxMs: 0, maxUserMs: 0 } }) });
  gateway = cluster.gateways[0]!;
  const alice = await RawImap.login(gateway.address(), 'alice', USERS.alice);
  await alice.cmd('CREATE P');
  const m = message('fuzz');
  alice.write(`a APPEND P {${m.length}+}\r\n${m}\r\n`);
  await alice.until(/^a OK/m);
  await alice.cmd('SETACL P bob lrswi');
  alice.close();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const COMMANDS = [
  'CAPABILITY', 'NOOP', 'NAMESPACE', 'LIST "" "*"', 'LIST "" %', 'LSUB "" "*"', 'LIST "Shared/" "*"', 'SELECT INBOX', 'EXAMINE "Shared/alice/P"',
  'SELECT Shared/alice/P', 'STATUS Shared/alice/P (MESSAGES UIDNEXT)', 'FETCH 1:* (FLAGS BODY[])', 'UID FETCH 1:* (BODY.PEEK[HEADER])', 'STORE 1 +FLAGS (\\Seen \\Deleted)',
  'STORE 1 FLAGS.SILENT ()', 'UID STORE 1 -FLAGS ($x)', 'COPY 1 INBOX', 'MOVE 1 Shared/alice/P', 'UID MOVE 1:* INBOX', 'COPY 1 "Shared/alice/Nope"', 'EXPUNGE', 'CLOSE', 'UNSELECT',
  'GETACL Shared/alice/P', 'MYRIGHTS INBOX', 'SETACL INBOX alice lr', 'LISTRIGHTS Shared/alice/P bob', 'DELETEACL Shared/alice/P bob', 'CREATE Shared/alice/P/x', 'DELETE Shared/alice/P/x',
  'RENAME Shared/alice/P Shared/alice/Q', 'SUBSCRIBE Shared/alice/P', 'ENABLE CONDSTORE', 'SEARCH ALL', 'ID NIL', 'IDLE', 'DONE', 'LOGIN bob bob-pw', 'AUTHENTICATE PLAIN',
  'APPEND Shared/alice/P {5}', 'APPEND INBOX (\\Seen) {5+}', 'SELECT {3}', 'LOGOUT', 'X-UNKNOWN a b c', '(((((', ')', '"unterminated', '{99999999999}', '{4294967295+}',
];

const line = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom('a', 'b1', '*', '+', ''), fc.constantFrom(...COMMANDS)).map(([t, c]) => `${t} ${c}\r\n`) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 80 }).map((s) => `${s}\r\n`) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')) },
  { weight: 1, arbitrary: fc.constantFrom('hello\r\n', 'DONE\r\n', '\r\n', '\n', '\r', '\0\0\0\r\n', 'x'.repeat(70_000), `z APPEND INBOX {${'y'.length}+}\r\ny\r\n`) },
);

async function session(loggedIn: boolean, chunks: string[]): Promise<void> {
  const [host, port] = gateway.address().split(':');
  const s = net.connect(Number(port), host);
  s.on('error', () => undefined);
  s.on('data', () => undefined);
  await new Promise<void>((r) => s.once('connect', () => r()));
  if (loggedIn) s.write('L LOGIN bob bob-pw\r\n');
  for (const c of chunks) {
    s.write(Buffer.from(c, 'latin1'));
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 30));
  s.destroy();
}

describe('gateway fuzzing', () => {
  it('survives random and mutated IMAP input before and after login, and keeps serving', async () => {
    let sessions = 0;
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(line, { minLength: 1, maxLength: 25 }), async (loggedIn, lines) => {
        sessions++;
        await session(loggedIn, lines);
        if (sessions % 25 === 0) {
          const probe = await RawImap.login(gateway.address(), 'bob', USERS.bob);
          expect(await probe.cmd('SELECT Shared/alice/P')).toMatch(/^t\d+ (OK|NO)/m);
          expect(await probe.cmd('NOOP')).toMatch(/^t\d+ OK/m);
          probe.close();
        }
      }),
      { numRuns: 600 },
    );
    const last = await RawImap.login(gateway.address(), 'bob', USERS.bob);
    expect(await last.cmd('LIST "" "Shared/*"')).toMatch(/Shared\/alice\/P/);
    last.close();
    // Every session ended with its client: none holds Dovecot connections on.
    await waitFor(() => gateway.activeSessions === 0, 10_000, `sessions to end (${gateway.activeSessions} open)`);
  });
});
