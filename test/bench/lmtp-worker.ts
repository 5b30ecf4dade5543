/**
 * The load of the lmtp benchmark, in its own process:
 * `tsx lmtp-worker.ts ADDRESS SENDERS MESSAGES SIZE RCPTS(comma-separated)`
 * runs SENDERS connections at once, each delivering its share of MESSAGES
 * messages of SIZE bytes, one transaction after another on one connection
 * (as Postfix's LMTP client does with connection caching), every message
 * to the next recipient in turn. Prints {"secs":…,"p50":…,"p99":…,"failed":…}:
 * wall time, per-delivery latency in ms (MAIL to the last reply), failures.
 */
import net from 'node:net';

const [address, sendersText, messagesText, sizeText, rcptsCsv] = process.argv.slice(2);
const senders = Number(sendersText);
const messages = Number(messagesText);
const size = Number(sizeText);
const rcpts = rcptsCsv!.split(',');
const [host, port] = address!.split(':');
// The message and its end of data, encoded once (a 1 MB string built and encoded per message cost
// the generator ~1 ms of CPU each, taken from the two cores the servers measured run on).
const message = Buffer.from(`From: bench@example.com\r\nSubject: bench\r\n\r\n${('x'.repeat(76) + '\r\n').repeat(Math.max(1, Math.floor(size / 78)))}.\r\n`, 'latin1');

async function sender(count: number, offset: number, latencies: number[]): Promise<number> {
  const s = net.connect(Number(port), host);
  s.setNoDelay(true);
  let buf = '';
  let wake: (() => void) | undefined;
  s.on('data', (c: Buffer) => {
    buf += c.toString('latin1');
    wake?.();
  });
  /** Waits for `n` complete replies and returns them (multi-line replies as one). */
  const replies = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (;;) {
      let m: RegExpExecArray | null;
      while (out.length < n && (m = /^(?:\d{3}-[^\n]*\n)*\d{3} [^\n]*\n/.exec(buf))) {
        out.push(m[0]);
        buf = buf.slice(m[0].length);
      }
      if (out.length >= n) return out;
      await new Promise<void>((r) => (wake = r));
    }
  };
  await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
  await replies(1);
  s.write('LHLO bench\r\n');
  await replies(1);
  let failed = 0;
  for (let i = 0; i < count; i++) {
    const to = rcpts[(offset + i) % rcpts.length]!;
    const started = process.hrtime.bigint();
    s.write(`MAIL FROM:<bench@example.com>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
    const env = await replies(3);
    if (!env[2]!.startsWith('354')) {
      failed++;
      s.write('RSET\r\n');
      await replies(1);
      continue;
    }
    s.write(message);
    const [r] = await replies(1);
    if (!r!.startsWith('250')) failed++;
    latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  s.end('QUIT\r\n');
  return failed;
}

async function main(): Promise<void> {
  const latencies: number[] = [];
  const started = Date.now();
  const per = Math.ceil(messages / senders);
  const failed = (await Promise.all(Array.from({ length: senders }, (_, i) => sender(per, i * per, latencies)))).reduce((a, b) => a + b, 0);
  const secs = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  process.stdout.write(JSON.stringify({ secs, deliveries: latencies.length, p50: q(0.5), p99: q(0.99), failed }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`lmtp-worker: ${String(err)}\n`);
  process.exit(1);
});
