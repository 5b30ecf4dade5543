/**
 * Agents in their own process for acl-propagation at scale:
 * `tsx acl-worker.ts COORDINATOR NAME=TOKEN...`. Prints {"ev":"ready"} once
 * every agent is; then, for each line {"rights":"…"} on stdin, arms every
 * agent, prints {"ev":"armed"}, and when each has applied bob's new rights
 * on alice/P prints {"ev":"seen","at":[…]}: the moments (performance.timeOrigin
 * + performance.now(), comparable across processes) each agent saw it.
 */
import { createInterface } from 'node:readline';
import { type Agent, createAgent } from '../../src/agent/agent.js';

const [coordinator, ...pairs] = process.argv.slice(2);
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const agents: Agent[] = pairs.map((p) => {
  const [name, token] = p.split('=');
  return createAgent({ coordinators: [coordinator!], token: token!, node: { name: name!, imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 });
});
await Promise.all(agents.map((a) => a.ready));
say({ ev: 'ready' });
for await (const line of createInterface({ input: process.stdin })) {
  const { rights } = JSON.parse(line) as { rights: string };
  const at = agents.map(
    (a) =>
      new Promise<number>((resolve) => {
        const seen = (ev: { tenant: string; mailbox: string }): void => {
          if (ev.tenant !== 'bench' || ev.mailbox !== 'alice/P' || a.rights('bench', 'bob', 'alice/P').rights !== rights) return;
          a.off('mailboxChanged', seen);
          resolve(performance.timeOrigin + performance.now());
        };
        a.on('mailboxChanged', seen);
      }),
  );
  say({ ev: 'armed' });
  say({ ev: 'seen', at: await Promise.all(at) });
}
for (const a of agents) a.orphan();
process.exit(0);
