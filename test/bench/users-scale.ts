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
  /** The follower's: messages and events its stream brought so far. */
  msgs?: number;
  evs?: number;
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
 * Then the same for an agent that keeps only the users it follows (the
 * gateways' default), following 1 % of them (a gateway's share among 100).
 * Goal: 10 M assigned users and 100 gateways with ≤ 256 MB and ≤ 5 % of
 * one core per gateway at 2,000 changes/s, projected from the largest size
 * for the follower (its heap before following plus 200 k entries: its
 * node's users and its sessions'; CPU with twice the share of changes it
 * follows here); the ratio is the smaller of the two goals over their
 * projections. The agent that keeps everything is projected too (memory
 * per assignment × 10 M), as the baseline.
 */
export async function usersScale(): Promise<BenchResult> {
  const figures: Record<string, number | string> = {};
  let projectedMb = 0;
  let projectedCpu = 0;
  let projectedFollowedMb = 0;
  let projectedFollowedCpu = 0;
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
      const measure = async (ticks: Tick[]) => {
        const idleFrom = Date.now() + 600;
        await new Promise((r) => setTimeout(r, 5600));
        const idleCpu = cpuBetween(ticks, idleFrom, Date.now());
        const coord0 = cpuOf(c.serverPid);
        const churnFrom = Date.now();
        let changed = 0;
        let lastRev = 0;
        while (Date.now() - churnFrom < CHURN_S * 1000) {
          const batch = Math.round(RATE / 100);
          const batchKeys = Array.from({ length: batch }, () => Buffer.from(keys.assignment(TENANT, `u${(next++ * 7919) % n}`)));
          // Users spread over all of them (a stride through u0…u(n-1)), so 1 % of the changes
          // are of the users the follower follows. etcd takes a key once per transaction: the
          // deletes, then the new assignments.
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
        // What the agent was sent meanwhile (the follower counts its stream's messages and events).
        const inside = ticks.filter((t) => t.t >= churnFrom + 500 && t.t <= churnTo);
        const span = (inside[inside.length - 1]!.t - inside[0]!.t) / 1000;
        const sent = inside[0]!.msgs === undefined ? undefined : { msgs: (inside[inside.length - 1]!.msgs! - inside[0]!.msgs!) / span, events: (inside[inside.length - 1]!.evs! - inside[0]!.evs!) / span };
        const behind = (ticks[ticks.length - 1]?.revision ?? 0) < lastRev ? `${ticks[ticks.length - 1]?.revision} < ${lastRev}` : undefined;
        return { idleCpu, churnCpu, rate, coordCpu, perThousand: (churnCpu - idleCpu) / (rate / 1000), behind, sent };
      };
      let next = 0;
      const all = await measure(ticks);
      observer.kill('SIGKILL');
      figures[`${k} churn changes/s`] = Math.round(all.rate);
      figures[`${k} agent CPU idle %`] = +(all.idleCpu * 100).toFixed(2);
      figures[`${k} agent CPU during churn %`] = +(all.churnCpu * 100).toFixed(2);
      figures[`${k} agent CPU % per 1,000 changes/s`] = +(all.perThousand * 100).toFixed(2);
      figures[`${k} coordinator CPU during churn (1 agent) %`] = +(all.coordCpu * 100).toFixed(1);
      if (all.behind) figures[`${k} WRONG agent behind`] = all.behind;

      // The same cluster seen by an agent that keeps only its followed users (a gateway's, by
      // default): it follows 1 % of the users, the share of a gateway among 100.
      const follows = Math.round(n / GOAL_GATEWAYS);
      const prof = process.env.MAILSHARE_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.MAILSHARE_BENCH_PROF] : [];
      const follower = spawn(process.execPath, [...prof, '--expose-gc', '--import', 'tsx', path.join(REPO_ROOT, 'test/bench/agent-follower.ts'), c.addr, await c.tokenFor('follower'), TENANT, String(n), String(follows)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(follower);
      const fl = await lines(follower, 'ready');
      if (fl.first.located !== follows) figures[`${k} WRONG followed located`] = `${fl.first.located} of ${follows}`;
      if (fl.first.others !== 0) figures[`${k} WRONG unfollowed users held`] = fl.first.others!;
      const perFollowed = (fl.first.heapBytes! - fl.first.baseBytes!) / follows;
      figures[`${k} followed: cold start ms`] = Math.round(fl.first.ms!);
      figures[`${k} followed: ${follows} follows answered ms`] = Math.round(fl.first.followMs!);
      figures[`${k} followed: heap before following MB`] = +(fl.first.baseBytes! / 1e6).toFixed(1);
      figures[`${k} followed: heap bytes/followed user`] = Math.round(perFollowed);
      const fm = await measure(fl.later);
      figures[`${k} followed: agent CPU idle %`] = +(fm.idleCpu * 100).toFixed(2);
      figures[`${k} followed: agent CPU during churn %`] = +(fm.churnCpu * 100).toFixed(2);
      figures[`${k} followed: coordinator CPU during churn (1 agent) %`] = +(fm.coordCpu * 100).toFixed(1);
      if (fm.sent) figures[`${k} followed: stream messages/s (events/s) during churn`] = `${Math.round(fm.sent.msgs)} (${Math.round(fm.sent.events)})`;
      if (fm.behind) figures[`${k} WRONG follower behind`] = fm.behind;
      // SIGTERM: it exits by itself (and writes its profile when asked for one).
      follower.kill('SIGTERM');
      // At the goal a gateway holds its node's users (1 %) and follows its sessions' (1 %): twice the
      // share of changes it follows here (at 2,000 changes/s, where the run may have reached fewer),
      // and that many entries.
      projectedFollowedMb = (fl.first.baseBytes! + perFollowed * 2 * (GOAL_USERS / GOAL_GATEWAYS)) / 1e6;
      projectedFollowedCpu = fm.idleCpu + 2 * Math.max(0, fm.churnCpu - fm.idleCpu) * (RATE / fm.rate);
      figures[`${k} followed: projected gateway heap at 10 M users MB`] = Math.round(projectedFollowedMb);
      figures[`${k} followed: projected agent CPU at 2,000 changes/s %`] = +(projectedFollowedCpu * 100).toFixed(2);
      figures[`${k} followed: projected coordinator event deliveries/s (100 gateways)`] = Math.round(fm.rate * 2 * 0.02 * GOAL_GATEWAYS);

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
      projectedCpu = all.idleCpu + all.perThousand * 2;
      figures[`${k} all: projected gateway heap at 10 M users MB`] = Math.round(projectedMb);
      figures[`${k} all: projected agent CPU at 2,000 changes/s %`] = +(projectedCpu * 100).toFixed(2);
      figures[`${k} all: projected coordinator event deliveries/s (100 gateways)`] = Math.round(all.rate * 2 * GOAL_GATEWAYS);
    } finally {
      for (const p of procs) p.kill('SIGKILL');
      placement.close();
      etcd.close();
      await c.stop();
    }
  }
  // The gateways' default (followed) against the goal; the ratio to every assignment kept is a figure.
  const ratio = Math.min(GOAL_MB / projectedFollowedMb, GOAL_CPU / projectedFollowedCpu);
  figures['all: ratio to the goal'] = +Math.min(GOAL_MB / projectedMb, GOAL_CPU / projectedCpu).toFixed(2);
  figures['followed vs all: projected heap'] = +(projectedMb / projectedFollowedMb).toFixed(1);
  return {
    name: 'users-scale',
    ratio,
    goal: `${GOAL_USERS / 1e6} M assigned users, ${GOAL_GATEWAYS} gateways: <= ${GOAL_MB} MB and <= ${GOAL_CPU * 100} % of a core per gateway at 2,000 changes/s (projected, gateways keeping their followed users)`,
    met: projectedFollowedMb <= GOAL_MB && projectedFollowedCpu <= GOAL_CPU,
    figures,
  };
}
