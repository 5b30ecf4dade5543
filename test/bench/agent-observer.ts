/**
 * An agent in its own process (run with --expose-gc) that holds no users
 * and watches everything, as every gateway's agent does:
 * `tsx agent-observer.ts COORDINATOR TOKEN TENANT USERS`. Prints one JSON
 * line when ready ({"ev":"ready", ms, heapBytes, located, locateNs}: time
 * to ready, heap held after a full GC, how many of u0…u(USERS-1) it can
 * locate and the time of one locate() from memory), then a line every
 * 500 ms ({"ev":"tick", t (Date.now()), cpuUs, revision}) with its cumulative CPU time.
 */
import { createAgent } from '../../src/agent/agent.js';

const [coordinator, token, tenant, usersArg] = process.argv.slice(2);
const users = Number(usersArg);
const gc = (globalThis as { gc?: () => void }).gc!;
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

gc();
const before = process.memoryUsage().heapUsed;
const t0 = performance.now();
const agent = createAgent({ coordinators: [coordinator!], token: token!, node: { name: 'observer', imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 });
await agent.ready;
const ms = performance.now() - t0;
gc();
await new Promise((r) => setTimeout(r, 200));
gc();
const heapBytes = process.memoryUsage().heapUsed - before;
let located = 0;
for (let i = 0; i < users; i++) if (agent.locate(tenant!, `u${i}`)) located++;
const n = Math.min(users, 1_000_000);
const s = performance.now();
for (let i = 0; i < n; i++) agent.locate(tenant!, `u${(i * 7919) % users}`);
const locateNs = ((performance.now() - s) * 1e6) / n;
say({ ev: 'ready', ms, heapBytes, located, locateNs });
const tick = () => {
  const c = process.cpuUsage();
  say({ ev: 'tick', t: Date.now(), cpuUs: c.user + c.system, revision: agent.revision });
};
tick();
setInterval(tick, 500);
process.on('SIGTERM', () => {
  agent.orphan();
  process.exit(0);
});
