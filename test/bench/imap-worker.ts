/**
 * The IMAP workload of the imap-proxy benchmark, in its own process:
 * `tsx imap-worker.ts ADDRESS USERS(comma-separated) [ROUNDS]` runs, for
 * every user at once and ROUNDS times in a row (default 1): connect, LOGIN (password USER-pw), SELECT INBOX, FETCH 1:1000
 * (BODY.PEEK[]), APPEND 100 messages of 10 kB, LOGOUT. Prints
 * {"secs":…,"loginP50":…,"bytes":…}: wall time of the whole run, median
 * login latency (connect to tagged OK), bytes received.
 */
import net from 'node:net';

const [address, usersCsv, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText ?? 1);
const [host, port] = address!.split(':');
const MESSAGE = `From: bench@example.com\r\nSubject: bench\r\n\r\n${'x'.repeat(10_000 - 48)}\r\n`;

async function session(user: string): Promise<{ login: number; bytes: number }> {
  const s = net.connect(Number(port), host);
  s.setNoDelay(true);
  let buf = '';
  let bytes = 0;
  let want: RegExp | undefined;
  let wake: (() => void) | undefined;
  s.on('data', (c: Buffer) => {
    bytes += c.length;
    // Only the tail matters for finding the tagged response.
    buf = (buf + c.toString('latin1')).slice(-4096);
    if (want && want.test(buf)) wake?.();
  });
  const until = (re: RegExp): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (re.test(buf)) return resolve();
      want = re;
      wake = () => resolve();
      s.once('error', reject);
    }).then(() => {
      want = undefined;
      buf = '';
    });
  const t0 = performance.now();
  await until(/\* OK[^\r]*\r\n/);
  s.write(`a LOGIN ${user} ${user}-pw\r\n`);
  await until(/\r?\n?a OK[^\r]*\r\n/);
  const login = performance.now() - t0;
  s.write('b SELECT INBOX\r\n');
  await until(/b OK[^\r]*\r\n/);
  s.write('c FETCH 1:1000 (BODY.PEEK[])\r\n');
  await until(/c OK[^\r]*\r\n/);
  let appends = '';
  for (let i = 0; i < 100; i++) appends += `d${i} APPEND INBOX {${MESSAGE.length}+}\r\n${MESSAGE}\r\n`;
  s.write(appends);
  await until(/d99 (OK|NO|BAD)[^\r]*\r\n/);
  s.write('e LOGOUT\r\n');
  await until(/e OK[^\r]*\r\n/);
  s.destroy();
  return { login, bytes };
}

const users = usersCsv!.split(',');
const t0 = performance.now();
const results = (
  await Promise.all(
    users.map(async (u) => {
      const out = [];
      for (let i = 0; i < rounds; i++) out.push(await session(u));
      return out;
    }),
  )
).flat();
const secs = (performance.now() - t0) / 1000;
const logins = results.map((r) => r.login).sort((a, b) => a - b);
process.stdout.write(`${JSON.stringify({ secs, loginP50: logins[Math.floor(logins.length / 2)], bytes: results.reduce((a, r) => a + r.bytes, 0) })}\n`);
process.exit(0);
