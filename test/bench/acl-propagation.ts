import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { connectApi } from '../harness/api.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

/** Agents in one worker process each, for the N = 200 point. */
const PER_WORKER = 50;
const WORKERS = 4;

/**
 * acl-propagation: time from issuing SetAcl until the change is visible in
 * the caches of N agents (N = 1, 10, 50 in this process; 200 in 4 processes
 * of 50, as gateways are each in their own), p50/p99 over all agents and
 * rounds. Goal: p99 ≤ 20 ms at N = 50.
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

    // N = 200: four processes of 50 agents; each round starts once every worker has armed its agents.
    const workers = [];
    for (let w = 0; w < WORKERS; w++) {
      const pairs: string[] = [];
      for (let i = 0; i < PER_WORKER; i++) pairs.push(`bench-200-${w}-${i}=${await c.tokenFor(`bench-200-${w}-${i}`)}`);
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/acl-worker.ts'), c.addr, ...pairs], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
      const queue: Array<{ ev: string; at?: number[] }> = [];
      let wake: (() => void) | undefined;
      createInterface({ input: child.stdout! }).on('line', (l) => {
        queue.push(JSON.parse(l) as { ev: string; at?: number[] });
        wake?.();
      });
      const next = async (ev: string): Promise<{ ev: string; at?: number[] }> => {
        for (;;) {
          const i = queue.findIndex((m) => m.ev === ev);
          if (i >= 0) return queue.splice(i, 1)[0]!;
          await new Promise<void>((r) => (wake = r));
        }
      };
      workers.push({ child, next });
    }
    try {
      await Promise.all(workers.map((w) => w.next('ready')));
      const lat: number[] = [];
      for (let round = 0; round < 40; round++) {
        const rights = round % 2 ? 'lr' : 'lrs';
        for (const w of workers) w.child.stdin!.write(`${JSON.stringify({ rights })}\n`);
        await Promise.all(workers.map((w) => w.next('armed')));
        const t0 = performance.timeOrigin + performance.now();
        await admin.acl.setAcl({ tenant: 'bench', mailbox: 'alice/P', identifier: 'bob', rights, expectedRevision: 0, actor: '' });
        for (const seen of await Promise.all(workers.map((w) => w.next('seen')))) lat.push(...seen.at!.map((t) => t - t0));
      }
      lat.sort((a, b) => a - b);
      figures['N=200 (4 processes) p50 ms'] = lat[Math.floor(lat.length / 2)]!;
      figures['N=200 (4 processes) p99 ms'] = lat[Math.floor(lat.length * 0.99)]!;
    } finally {
      for (const w of workers) w.child.kill('SIGKILL');
    }
    admin.close();
    return { name: 'acl-propagation', ratio: 20 / p99at50, goal: 'p99 <= 20 ms at N=50 (ratio = 20 ms / p99); N=200 in 4 processes measured', met: p99at50 <= 20, figures };
  } finally {
    await c.stop();
  }
}
