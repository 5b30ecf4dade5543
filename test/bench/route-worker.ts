/**
 * The load of the route benchmark, in its own process (so it does not share a CPU budget with
 * the agent of the bench process): `tsx route-worker.ts HOST:PORT TOKEN RATE CONNECTIONS SECONDS
 * USERS`. Open loop: request i leaves at t0 + i/RATE whether or not the earlier ones were
 * answered, over CONNECTIONS keep-alive connections, one request at a time on each (no
 * pipelining, as Dovecot's HTTP client); a request due while every connection is busy waits for
 * the first one free, and that wait counts in its latency. Prints {"lat":[…],"fromSend":[…],
 * "failed":…,"secs":…}: each latency in ms from its scheduled time, and from when it was sent.
 *
 * HTTP/1.1 is written and read on plain sockets, requests built once per user: Node's HTTP
 * client costs ~0.1 ms of CPU a request, which on two cores shared with the server under test
 * showed up in the server's tail latency (a p99 of 7–9 ms for a server that answers at once).
 */
import net from 'node:net';

const [address, token, rateText, connText, secondsText, usersText] = process.argv.slice(2);
const rate = Number(rateText);
const connections = Number(connText);
const seconds = Number(secondsText);
const users = Number(usersText);
const [host, port] = address!.split(':');

const requests = Array.from({ length: users }, (_, i) => {
  const body = JSON.stringify({ user: `u${i}@acme.test`, protocol: 'imap', assign: true });
  return Buffer.from(
    `POST /v1/route HTTP/1.1\r\nhost: ${address}\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
});

interface Pending {
  due: number;
  sent: number;
  done: (status: number) => void;
}

/** One keep-alive connection: at most one request in flight; answers parsed by Content-Length. */
class Connection {
  private socket!: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  current: Pending | undefined;
  readonly ready: Promise<void>;

  constructor(private readonly idle: (c: Connection) => void) {
    this.ready = this.connect();
  }

  /** A connection the server closed (its keep-alive timeout) is opened again by its next send. */
  private connect(): Promise<void> {
    const socket = net.connect(Number(port), host);
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.fail());
    socket.on('close', () => this.fail());
    return new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
  }

  send(p: Pending, request: Buffer): void {
    this.current = p;
    p.sent = performance.now();
    if (this.socket.destroyed) void this.connect().catch(() => this.fail());
    this.socket.write(request);
  }

  debug(): string {
    return this.buf.toString('latin1');
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (this.buf.length < end + 4 + length) return;
      this.buf = this.buf.subarray(end + 4 + length);
      const status = Number(head.slice(9, 12));
      const p = this.current;
      this.current = undefined;
      p?.done(status);
      this.idle(this);
    }
  }

  private fail(): void {
    const p = this.current;
    if (!p) return;
    this.current = undefined;
    p.done(0);
    this.idle(this);
  }
}

async function main(): Promise<void> {
  const free: Connection[] = [];
  const waiting: Array<{ p: Pending; request: Buffer }> = [];
  const onIdle = (c: Connection): void => {
    const next = waiting.shift();
    if (next) c.send(next.p, next.request);
    else free.push(c);
  };
  const pool = Array.from({ length: connections }, () => new Connection(onIdle));
  await Promise.all(pool.map((c) => c.ready));
  // Warm the connections up: one request on each.
  await Promise.all(pool.map((c, i) => new Promise<void>((resolve) => c.send({ due: 0, sent: 0, done: () => resolve() }, requests[i % users]!))));
  const lat: number[] = [];
  const fromSend: number[] = [];
  let failed = 0;
  let answered = 0;
  const total = rate * seconds;
  let allAnswered!: () => void;
  const finished = new Promise<void>((r) => (allAnswered = r));
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const p: Pending = {
      due,
      sent: 0,
      done: (status) => {
        if (status !== 200) failed++;
        const now = performance.now();
        // A request sent up to 1 ms before its time (the timer's granularity) counts from its send.
        lat.push(now - Math.min(p.due, p.sent));
        fromSend.push(now - p.sent);
        if (++answered === total) allAnswered();
      },
    };
    const request = requests[i % users]!;
    const c = free.shift();
    if (c) c.send(p, request);
    else waiting.push({ p, request });
  }
  process.once('beforeExit', () => {
    if (answered < total) process.stderr.write(`route-worker: ${total - answered} requests unanswered (${waiting.length} waiting, ${free.length} connections free, failed ${failed})\n`);
    for (const c of pool) if (c.current) process.stderr.write(`stuck: sent at ${(c.current.sent - t0).toFixed(1)} buf ${JSON.stringify(c.debug())}\n`);
  });
  await finished;
  const secs = (performance.now() - t0) / 1000;
  for (const c of pool) c.close();
  process.stdout.write(JSON.stringify({ lat, fromSend, failed, secs }));
}

main().catch((err: unknown) => {
  process.stderr.write(`route-worker: ${String(err)}\n`);
  process.exit(1);
});
