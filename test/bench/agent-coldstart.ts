/**
 * An agent's cold start in its own process (run with --expose-gc):
 * `tsx agent-coldstart.ts COORDINATOR TOKEN`. Prints {"ms":…,"heapBytes":…}:
 * time from creation to ready (snapshot loaded, watch running) and the heap
 * it holds afterwards, both measured after a full GC.
 */
import { createAgent } from '../../src/agent/agent.js';

const [coordinator, token] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc!;
gc();
const before = process.memoryUsage().heapUsed;
const t0 = performance.now();
const agent = createAgent({ coordinators: [coordinator!], token: token!, node: { name: 'cold', imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 });
await agent.ready;
const ms = performance.now() - t0;
gc();
await new Promise((r) => setTimeout(r, 100));
gc();
const heapBytes = process.memoryUsage().heapUsed - before;
const shares = agent.sharedWith('scale', 'star').mailboxes.length;
process.stdout.write(`${JSON.stringify({ ms, heapBytes, shares })}\n`);
agent.orphan();
process.exit(0);
