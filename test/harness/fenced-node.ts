/**
 * A backend node as its own process for the ownership-safety fault test: an
 * agent plus a tiny line protocol standing in for mail writes. A client sends
 * "USER EPOCH\n"; the node accepts ("ok") only while the agent says it holds
 * the user at exactly that epoch (isCurrent: fencing), and prints each
 * acceptance as {"ev":"accept","u":USER,"e":EPOCH,"t":MS} with a wall-clock
 * time comparable across processes. Otherwise it answers "no".
 * argv: coordinators(comma-separated) token nodeName ttlSeconds tenant
 */
import net from 'node:net';
import { type Agent, createAgent } from '../../src/agent/agent.js';

const [coordinators, token, name, ttl, tenant] = process.argv.slice(2);
const say = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
/** Set once the server's port is known (the agent registers it as the node's address). */
const held: { agent?: Agent } = {};
const server = net.createServer((socket) => {
  let buf = '';
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    let out = '';
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const [user, epoch] = buf.slice(0, nl).split(' ');
      buf = buf.slice(nl + 1);
      const e = Number(epoch);
      if (held.agent?.isCurrent(tenant!, user!, e)) {
        say({ ev: 'accept', u: user, e, t: performance.timeOrigin + performance.now() });
        out += 'ok\n';
      } else {
        out += 'no\n';
      }
    }
    if (out) socket.write(out);
  });
});
server.listen(0, '127.0.0.1');
await new Promise<void>((r) => server.once('listening', () => r()));
const port = (server.address() as net.AddressInfo).port;
const agent = createAgent({
  coordinators: coordinators!.split(','),
  token: token!,
  node: { name: name!, imapAddress: `127.0.0.1:${port}` },
  ttlSeconds: Number(ttl ?? 2),
  userExpireMs: 0,
});
held.agent = agent;
agent.on('leaseLost', (l) => say({ ev: 'leaseLost', ...l }));
agent.ready.then(() => say({ ev: 'ready', port }), (err: unknown) => say({ ev: 'error', err: String(err) }));
