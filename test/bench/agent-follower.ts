/**
 * An agent in its own process (run with --expose-gc) that keeps only the
 * users it follows (assignmentView "followed"), as a gateway does for the
 * users with sessions through it: `tsx agent-follower.ts COORDINATOR TOKEN
 * TENANT USERS FOLLOWS`. It follows u0…u(FOLLOWS-1) once ready and prints
 * one JSON line when every one of them is in its cache ({"ev":"ready", ms
 * (to ready), followMs (to every answer), baseBytes (heap after a full GC
 * before following), heapBytes (after), located (followed users it can
 * locate), others (of the rest, how many it holds: 0 expected),
 * locateNs}), then a line every 500 ms ({"ev":"tick", t, cpuUs, revision,
 * msgs, evs: its stream's messages and events so far}).
 */
import { createAgent } from '../../src/agent/agent.js';
import { EventServiceClient, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';
// Counts what the agent's Follow stream brings (messages, events), for the ticks.
let msgs = 0;
let evs = 0;
const orig = EventServiceClient.prototype.follow;
EventServiceClient.prototype.follow = function (this: EventServiceClient, ...args: unknown[]) {
  const st = (orig as (...a: unknown[]) => ReturnType<typeof orig>).apply(this, args);
  st.on('data', (r: WatchResponse) => {
    msgs++;
    evs += r.events.length;
  });
  return st;
} as typeof orig;

const [coordinator, token, tenant, usersArg, followsArg] = process.argv.slice(2);
const users = Number(usersArg);
const follows = Number(followsArg);
const gc = (globalThis as { gc?: () => void }).gc!;
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const settle = async (): Promise<number> => {
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
  return process.memoryUsage().heapUsed;
};

gc();
const before = process.memoryUsage().heapUsed;
const t0 = performance.now();
// No idle expiry: sessions of another node's users would each write a hold to etcd.
const agent = createAgent({ coordinators: [coordinator!], token: token!, node: { name: 'follower', imapAddress: '127.0.0.1:143' }, ttlSeconds: 30, assignmentView: 'followed', userExpireMs: 0 });
await agent.ready;
const ms = performance.now() - t0;
const baseBytes = (await settle()) - before;
const t1 = performance.now();
for (let i = 0; i < follows; i++) agent.sessionOpened(tenant!, `u${i}`, 'holder');
const all = (): boolean => {
  for (let i = 0; i < follows; i++) if (!agent.locate(tenant!, `u${i}`)) return false;
  return true;
};
while (!all()) await new Promise((r) => setTimeout(r, 20));
const followMs = performance.now() - t1;
const heapBytes = (await settle()) - before;
let located = 0;
for (let i = 0; i < follows; i++) if (agent.locate(tenant!, `u${i}`)) located++;
let others = 0;
for (let i = follows; i < users; i++) if (agent.locate(tenant!, `u${i}`)) others++;
const s = performance.now();
for (let i = 0; i < follows; i++) agent.locate(tenant!, `u${(i * 7919) % follows}`);
const locateNs = ((performance.now() - s) * 1e6) / Math.max(1, follows);
say({ ev: 'ready', ms, followMs, baseBytes, heapBytes, located, others, locateNs });
const tick = () => {
  const c = process.cpuUsage();
  say({ ev: 'tick', t: Date.now(), cpuUs: c.user + c.system, revision: agent.revision, msgs, evs });
};
tick();
setInterval(tick, 500);
process.on('SIGTERM', () => {
  agent.orphan();
  process.exit(0);
});
