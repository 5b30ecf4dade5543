import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { connectApi } from '../harness/api.js';
import { unaryCall } from '../harness/grpc.js';
import { REPO_ROOT } from '../harness/server.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

/** Sizes; MAILSHARE_BENCH_USERS="100000" for a quicker run. */
const SIZES = (process.env.MAILSHARE_BENCH_USERS ?? '100000,1000000').split(',').map(Number);
const TENANT = 'users';
/** Assignment changes a second during the churn window, and its length. */
const RATE = 2000;
const CHURN_S = 10;
/** The goal's cluster: assigned users, gateways, memory and CPU per gateway. */
const GOAL_USERS = 10_000_000;
const GOAL_GATEWAYS = 100;
const GOAL_MB = 256;
const GOAL_CPU = 0.05;

interface Tick {
  t: number;
  cpuUs: number;
  revision: number;
}

/** A process printing JSON lines; resolves with it once `first` is seen, and collects later lines. */
function lines(child: ChildProcess, first: string): Promise<{ first: Record<string, number>; later: Tick[] }> {
  const later: Tick[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    let got: Record<string, number> | undefined;
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, i)) as Record<string, number> & { ev: string };
        buf = buf.slice(i + 1);
        if (!got && line.ev === first) resolve({ first: (got = line), later });
        else if (line.ev === 'tick') later.push(line as unknown as Tick);
      }
    });
    child.on('exit', (code) => !got && reject(new Error(`process exited ${code} before "${first}"`)));
  });
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU seconds a process has used (user + system). */
function cpuOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * q) - 1)]!;

/** CPU fraction of one core over the ticks within [from, to]. */
function cpuBetween(ticks: Tick[], from: number, to: number): number {
  const inside = ticks.filter((t) => t.t >= from && t.t <= to);
  const a = inside[0]!;
  const b = inside[inside.length - 1]!;
  return (b.cpuUs - a.cpuUs) / 1000 / (b.t - a.t);
}

/**
 * users-scale: 100 k and 1 M assigned users (every one held by a node
 * "holder"), and an agent that holds none of them ("observer", as each
 * gateway's agent is for the users of other nodes). Per size: memory per
 * assignment in that agent (heap) and in the coordinator (RSS), etcd's
 * database per assignment, Locate from the agent's memory and as a unary
 * RPC, and the CPU the agent and the coordinator spend while 2,000 users
 * a second change assignment (each a delete of the key and its creation
 * again, in two transactions, as a move or an expiry and a new login) against the
 * same agent idle. Also the etcd writes of one first login and one move.
 * Goal: 10 M assigned users and 100 gateways with ≤ 256 MB and ≤ 5 % of
 * one core per gateway at 2,000 changes/s, projected from the largest size
 * (memory per assignment × 10 M; CPU per change × 2,000/s); the ratio is
 * the smaller of the two goals over their projections.
 */
export async function usersScale(): Promise<BenchResult> {
  const figures: Record<string, number | string> = {};
  let projectedMb = 0;
  let projectedCpu = 0;
  for (const n of SIZES) {
    const k = n >= 1_000_000 ? `${n / 1_000_000}M` : `${n / 1000}k`;
    const c = await startBenchCluster();
    const procs: ChildProcess[] = [];
    const etcd = createEtcdClient({ endpoints: c.etcd.endpoints });
    const placement = new PlacementServiceClient(c.addr, grpc.credentials.createInsecure());
    try {
      const admin = connectApi(c.addr, c.adminToken);
      await admin.directory.createTenant({ id: TENANT, domains: [] });
      admin.close();
      const holder = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/harness/agent-process.ts'), c.addr, await c.tokenFor('holder'), 'holder', '30'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(holder);
      // Its lease; what it prints later (a line per user it is given) is read and dropped.
      const lease = await new Promise<string>((resolve) => {
        let out: string | undefined = '';
        holder.stdout!.on('data', (d: Buffer) => {
          if (out === undefined) return;
          out += d.toString();
          const m = /"ev":"ready","lease":"(\d+)"/.exec(out);
          if (m) {
            out = undefined;
            resolve(m[1]!);
          }
        });
      });
      const rss0 = rssOf(c.serverPid);
      const db0 = Number((await etcd.maintenance.status()).dbSize);

      // n assignments to "holder", on its lease, in the store's format (as its Locates would write them).
      const keys = createKeys('/mailshare/');
      const value = (node: string) => JSON.stringify({ node, assignedAt: new Date().toISOString() });
      const t0 = performance.now();
      for (let i = 0; i < n; i += 120 * 16) {
        await Promise.all(
          Array.from({ length: 16 }, (_, j) => {
            const from = i + j * 120;
            const to = Math.min(n, from + 120);
            if (from >= to) return Promise.resolve();
            return etcd.kv.txn({ compare: [], failure: [], success: Array.from({ length: to - from }, (_, x) => ({ request_put: { key: Buffer.from(keys.assignment(TENANT, `u${from + x}`)), value: Buffer.from(value('holder')), lease } })) });
          }),
        );
      }
      figures[`${k} load s`] = +((performance.now() - t0) / 1000).toFixed(1);
      const locate = (user: string) => unaryCall(placement.locate.bind(placement), { tenant: TENANT, user, mailbox: '', assign: false }, c.nodeToken);
      const deadline = Date.now() + 120_000;
      while ((await locate(`u${n - 1}`).catch(() => undefined))?.node !== 'holder') {
        if (Date.now() > deadline) throw new Error('the coordinator never had the last assignment');
        await new Promise((r) => setTimeout(r, 200));
      }
      await new Promise((r) => setTimeout(r, 2000));
      figures[`${k} coordinator RSS bytes/assignment`] = Math.round((rssOf(c.serverPid) - rss0) / n);
      figures[`${k} etcd db bytes/assignment`] = Math.round((Number((await etcd.maintenance.status()).dbSize) - db0) / n);

      // Locate as a unary RPC, one at a time.
      const lat: number[] = [];
      for (let i = 0; i < 1000; i++) {
        const s = performance.now();
        await locate(`u${(i * 7919) % n}`);
        lat.push(performance.now() - s);
      }
      figures[`${k} Locate RPC p50 ms`] = +pct(lat, 0.5).toFixed(2);
      figures[`${k} Locate RPC p99 ms`] = +pct(lat, 0.99).toFixed(2);

      // The observer's cold start, memory and locate().
      const observer = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(REPO_ROOT, 'test/bench/agent-observer.ts'), c.addr, await c.tokenFor('observer'), TENANT, String(n)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(observer);
      const { first, later: ticks } = await lines(observer, 'ready');
      if (first.located !== n) figures[`${k} WRONG located`] = `${first.located} of ${n}`;
      figures[`${k} agent cold start ms`] = Math.round(first.ms!);
      const agentBytes = first.heapBytes! / n;
      figures[`${k} agent heap bytes/assignment`] = Math.round(agentBytes);
      figures[`${k} agent locate() ns`] = Math.round(first.locateNs!);

      // CPU idle, then under churn of users it does not hold.
      const idleFrom = Date.now() + 600;
      await new Promise((r) => setTimeout(r, 5600));
      const idleCpu = cpuBetween(ticks, idleFrom, Date.now());
      const coord0 = cpuOf(c.serverPid);
      const churnFrom = Date.now();
      let changed = 0;
      let next = 0;
      let lastRev = 0;
      while (Date.now() - churnFrom < CHURN_S * 1000) {
        const batch = Math.round(RATE / 100);
        const batchKeys = Array.from({ length: batch }, () => Buffer.from(keys.assignment(TENANT, `u${next++ % n}`)));
        // etcd takes a key once per transaction: the deletes, then the new assignments.
        await etcd.kv.txn({ compare: [], failure: [], success: batchKeys.map((key) => ({ request_delete_range: { key } })) });
        const res = await etcd.kv.txn({ compare: [], failure: [], success: batchKeys.map((key) => ({ request_put: { key, value: Buffer.from(value('holder')), lease } })) });
        lastRev = Number(res.header.revision);
        changed += batch;
        const due = churnFrom + (changed / RATE) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const churnTo = Date.now();
      const coordCpu = (cpuOf(c.serverPid) - coord0) / ((churnTo - churnFrom) / 1000);
      const rate = changed / ((churnTo - churnFrom) / 1000);
      const caughtUp = Date.now() + 10_000;
      while ((ticks[ticks.length - 1]?.revision ?? 0) < lastRev && Date.now() < caughtUp) await new Promise((r) => setTimeout(r, 50));
      const churnCpu = cpuBetween(ticks, churnFrom + 500, churnTo);
      const perThousand = (churnCpu - idleCpu) / (rate / 1000);
      figures[`${k} churn changes/s`] = Math.round(rate);
      figures[`${k} agent CPU idle %`] = +(idleCpu * 100).toFixed(2);
      figures[`${k} agent CPU during churn %`] = +(churnCpu * 100).toFixed(2);
      figures[`${k} agent CPU % per 1,000 changes/s`] = +(perThousand * 100).toFixed(2);
      figures[`${k} coordinator CPU during churn (1 agent) %`] = +(coordCpu * 100).toFixed(1);
      if ((ticks[ticks.length - 1]?.revision ?? 0) < lastRev) figures[`${k} WRONG agent behind`] = `${ticks[ticks.length - 1]?.revision} < ${lastRev}`;

      // The etcd writes of a first login and of a move (to the observer, whose agent takes the user).
      const w = await etcd.watch().prefix('/mailshare/').create();
      const seen: number[] = [];
      w.on('data', (res) => {
        for (const ev of res.events) seen.push(Number(ev.kv.mod_revision));
      });
      const count = async (what: () => Promise<unknown>): Promise<{ keys: number; txns: number }> => {
        seen.length = 0;
        await what();
        await new Promise((r) => setTimeout(r, 500));
        return { keys: seen.length, txns: new Set(seen).size };
      };
      const login = await count(() => unaryCall(placement.locate.bind(placement), { tenant: TENANT, user: 'newcomer', mailbox: '', assign: true }, c.nodeToken));
      const target = (await locate('newcomer')).node === 'holder' ? 'observer' : 'holder';
      const move = await count(() => unaryCall(placement.move.bind(placement), { tenant: TENANT, user: 'newcomer', toNode: target, timeoutMs: 5000 }, c.adminToken));
      await w.cancel();
      figures[`${k} etcd writes per first login (keys/txns)`] = `${login.keys}/${login.txns}`;
      figures[`${k} etcd writes per move (keys/txns)`] = `${move.keys}/${move.txns}`;

      // Projection to the goal's cluster, from this size (its fixed heap spread over its assignments).
      projectedMb = (agentBytes * GOAL_USERS) / 1e6;
      projectedCpu = idleCpu + perThousand * 2;
      figures[`${k} projected gateway heap at 10 M users MB`] = Math.round(projectedMb);
      figures[`${k} projected agent CPU at 2,000 changes/s %`] = +(projectedCpu * 100).toFixed(2);
      figures[`${k} projected coordinator event deliveries/s (100 gateways)`] = Math.round(rate * 2 * GOAL_GATEWAYS);
    } finally {
      for (const p of procs) p.kill('SIGKILL');
      placement.close();
      etcd.close();
      await c.stop();
    }
  }
  const ratio = Math.min(GOAL_MB / projectedMb, GOAL_CPU / projectedCpu);
  return {
    name: 'users-scale',
    ratio,
    goal: `${GOAL_USERS / 1e6} M assigned users, ${GOAL_GATEWAYS} gateways: <= ${GOAL_MB} MB and <= ${GOAL_CPU * 100} % of a core per gateway at 2,000 changes/s (projected)`,
    met: projectedMb <= GOAL_MB && projectedCpu <= GOAL_CPU,
    figures,
  };
}
