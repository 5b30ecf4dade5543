import { type Agent, createAgent } from '../../src/agent/agent.js';
import { connectApi } from '../harness/api.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

/**
 * acl-propagation: time from issuing SetAcl until the change is visible in
 * the caches of N agents (N = 1, 10, 50), p50/p99 over all agents and rounds.
 */
export async function aclPropagation(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const figures: Record<string, number> = {};
  let p99at50 = Infinity;
  try {
    const admin = connectApi(c.addr, c.adminToken);
    await admin.directory.createTenant({ id: 'bench', domains: [] });
    await admin.mailbox.createMailbox({ tenant: 'bench', owner: 'alice', name: 'P', actor: '' });
    for (const n of [1, 10, 50]) {
      const agents: Agent[] = [];
      for (let i = 0; i < n; i++) agents.push(createAgent({ coordinators: [c.addr], token: await c.tokenFor(`bench-${n}-${i}`), node: { name: `bench-${n}-${i}`, imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 }));
      await Promise.all(agents.map((a) => a.ready));
      const lat: number[] = [];
      for (let round = 0; round < 40; round++) {
        const rights = round % 2 ? 'lr' : 'lrs';
        const t0 = performance.now();
        // Each agent reports the change when its cache applies it (no polling that would steal the CPU the agents need).
        const pending = agents.map(
          (a) =>
            new Promise<void>((resolve) => {
              const seen = (ev: { tenant: string; mailbox: string }): void => {
                if (ev.tenant !== 'bench' || ev.mailbox !== 'alice/P' || a.rights('bench', 'bob', 'alice/P').rights !== rights) return;
                lat.push(performance.now() - t0);
                a.off('mailboxChanged', seen);
                resolve();
              };
              a.on('mailboxChanged', seen);
            }),
        );
        await admin.acl.setAcl({ tenant: 'bench', mailbox: 'alice/P', identifier: 'bob', rights, expectedRevision: 0, actor: '' });
        await Promise.all(pending);
      }
      lat.sort((a, b) => a - b);
      const p50 = lat[Math.floor(lat.length / 2)]!;
      const p99 = lat[Math.floor(lat.length * 0.99)]!;
      figures[`N=${n} p50 ms`] = p50;
      figures[`N=${n} p99 ms`] = p99;
      if (n === 50) p99at50 = p99;
      await Promise.all(agents.map((a) => a.close()));
    }
    admin.close();
    return { name: 'acl-propagation', ratio: 50 / p99at50, goal: 'p99 <= 50 ms at N=50 (ratio = 50 ms / p99)', met: p99at50 <= 50, figures };
  } finally {
    await c.stop();
  }
}
