/**
 * The load of the route benchmark, in its own process (so it does not share a CPU budget with
 * the agent of the bench process): `tsx route-worker.ts HOST:PORT TOKEN RATE CONNECTIONS SECONDS
 * USERS`. Open loop: request i leaves at t0 + i/RATE whether or not the earlier ones were
 * answered, over CONNECTIONS keep-alive connections. Prints {"lat":[…],"fromSend":[…],"failed":…,
 * "secs":…}: each latency in ms from its scheduled time, and from when it was sent.
 */
import http from 'node:http';

const [address, token, rateText, connText, secondsText, usersText] = process.argv.slice(2);
const rate = Number(rateText);
const connections = Number(connText);
const seconds = Number(secondsText);
const users = Number(usersText);
const [host, port] = address!.split(':');
const pool = new http.Agent({ keepAlive: true, maxSockets: connections });

function post(user: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ user: `${user}@acme.test`, protocol: 'imap', assign: true });
    const req = http.request({ host, port: Number(port), path: '/v1/route', method: 'POST', agent: pool, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main(): Promise<void> {
  // Warm the connections up.
  await Promise.all(Array.from({ length: connections }, (_, i) => post(`u${i}`)));
  const lat: number[] = [];
  const fromSend: number[] = [];
  let failed = 0;
  const inflight: Array<Promise<void>> = [];
  const total = rate * seconds;
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const sent = performance.now();
    inflight.push(
      post(`u${i % users}`).then(
        (status) => {
          if (status !== 200) failed++;
          const now = performance.now();
          lat.push(now - due);
          fromSend.push(now - sent);
        },
        () => void failed++,
      ),
    );
  }
  await Promise.all(inflight);
  const secs = (performance.now() - t0) / 1000;
  pool.destroy();
  process.stdout.write(JSON.stringify({ lat, fromSend, failed, secs }));
}

main().catch((err: unknown) => {
  process.stderr.write(`route-worker: ${String(err)}\n`);
  process.exit(1);
});
