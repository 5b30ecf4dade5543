/**
 * A backend node as its own process, for kill -9 tests: runs an agent and
 * prints one JSON line per event on stdout ({"ev":"ready"}, {"ev":"userAssigned",...}).
 * argv: coordinators(comma-separated) token nodeName ttlSeconds
 */
import { createAgent } from '../../src/agent/agent.js';

const [coordinators, token, name, ttl] = process.argv.slice(2);
const agent = createAgent({
  coordinators: coordinators!.split(','),
  token: token!,
  node: { name: name!, imapAddress: '127.0.0.1:10143' },
  ttlSeconds: Number(ttl ?? 2),
});
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
agent.on('userAssigned', (u) => say({ ev: 'userAssigned', ...u }));
agent.on('userLost', (u) => say({ ev: 'userLost', ...u }));
agent.on('leaseLost', (l) => say({ ev: 'leaseLost', ...l }));
agent.ready.then(() => say({ ev: 'ready', lease: agent.leaseId }), (err: unknown) => say({ ev: 'error', err: String(err) }));
