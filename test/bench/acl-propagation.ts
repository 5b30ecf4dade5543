import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { type Agent, createAgent } from '../../src/agent/agent.js';
import { connectApi } from '../harness/api.js';
import { REPO_ROOT } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { startBenchCluster, startCoordinator } from './cluster.js';
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
  const dir = tempDir('mailshare-bench-plain-');
  // The in-run baseline: a coordinator on the same etcd with one etcd watch per stream.
  const plain = await startCoordinator(c.etcd, dir.path, ['--events-shared-watch', 'off']);
  try {
    const admin = connectApi(c.addr, c.adminToken);
    await admin.directory.createTenant({ id: 'bench', domains: [] });
    await admin.mailbox.createMailbox({ tenant: 'bench', owner: 'alice', name: 'P', actor: '' });
    const measure = async (addr: string, n: number, label: string): Promise<{ p50: number; p99: number; ackP50: number; ackP99: number; afterP99: number }> => {
      const agents: Agent[] = [];
      for (let i = 0; i < n; i++) agents.push(createAgent({ coordinators: [addr], token: await c.tokenFor(`${label}-${n}-${i}`), node: { name: `${label}-${n}-${i}`, imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 }));
      await Promise.all(agents.map((a) => a.ready));
      const lat: number[] = [];
      const acks: number[] = [];
      // How long after the acknowledgment each agent had it (0 when it had it before).
      const after: number[] = [];
      for (let round = 0; round < 40; round++) {
        const from = lat.length;
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
        const ack = performance.now() - t0;
        acks.push(ack);
        await Promise.all(pending);
        for (const l of lat.slice(from)) after.push(Math.max(0, l - ack));
      }
      await Promise.all(agents.map((a) => a.close()));
      const q = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * p)]!;
      return { p50: q(lat, 0.5), p99: q(lat, 0.99), ackP50: q(acks, 0.5), ackP99: q(acks, 0.99), afterP99: q(after, 0.99) };
    };
    // etcd's own disk: the mean WAL fsync (every acknowledged write waits for one).
    const fsync = async (): Promise<{ sum: number; count: number }> => {
      const text = await (await fetch(`${c.etcd.endpoints[0]}/metrics`)).text();
      const num = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
      return { sum: num('etcd_disk_wal_fsync_duration_seconds_sum'), count: num('etcd_disk_wal_fsync_duration_seconds_count') };
    };
    const fsyncBefore = await fsync();
    for (const n of [1, 10, 50]) {
      const r = await measure(c.addr, n, 'bench');
      figures[`N=${n} p50 ms`] = r.p50;
      figures[`N=${n} p99 ms`] = r.p99;
      // The write's own share: SetAcl acknowledged (etcd committed it to disk), and what came after.
      figures[`N=${n} SetAcl acknowledged p50 ms`] = r.ackP50;
      figures[`N=${n} SetAcl acknowledged p99 ms`] = r.ackP99;
      figures[`N=${n} after the acknowledgment p99 ms`] = r.afterP99;
      if (n === 50) p99at50 = r.p99;
    }
    const fsyncAfter = await fsync();
    figures['etcd WAL fsync mean ms'] = (1000 * (fsyncAfter.sum - fsyncBefore.sum)) / (fsyncAfter.count - fsyncBefore.count);
    const base = await measure(plain.addr, 50, 'plain');
    figures['baseline (a watch per stream) N=50 p50 ms'] = base.p50;
    figures['baseline (a watch per stream) N=50 p99 ms'] = base.p99;
    figures['baseline (a watch per stream) N=50 after the acknowledgment p99 ms'] = base.afterP99;
    figures['p99 baseline / shared watch at N=50'] = base.p99 / p99at50;

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
    await plain.stop();
    dir.remove();
    await c.stop();
  }
}
