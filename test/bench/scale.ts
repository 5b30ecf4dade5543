import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomId } from '../../src/store/cas.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { createKeys } from '../../src/store/keys.js';
import { encodeMailbox } from '../../src/store/mailbox-store.js';
import { parseRights } from '../../src/domain/rights.js';
import { connectApi } from '../harness/api.js';
import { REPO_ROOT } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { type BenchCluster, startBenchCluster, startCoordinator } from './cluster.js';
import type { BenchResult } from './run.js';
import { workerOutput } from './worker-output.js';

/** Sizes to measure; MAILSHARE_BENCH_SCALE="10000,100000" for a quicker run. */
const SIZES = (process.env.MAILSHARE_BENCH_SCALE ?? '10000,100000,1000000').split(',').map(Number);
const STAR_SHARES = 1000;

/**
 * Writes n shared mailboxes straight into etcd in the store's own format:
 * 10 per owner, each shared with one of 1,000 users, and 1,000 of them also
 * with "star" (the user whose list is timed). Same keys and values as the
 * API writes, without n round trips through it.
 */
async function load(c: BenchCluster, n: number): Promise<void> {
  const keys = createKeys('/mailshare/');
  const etcd = createEtcdClient({ endpoints: c.etcd.endpoints });
  const admin = connectApi(c.addr, c.adminToken);
  await admin.directory.createTenant({ id: 'scale', domains: [] });
  admin.close();
  const starEvery = Math.floor(n / STAR_SHARES);
  const puts: Array<[string, string]> = [];
  const flush = async (): Promise<void> => {
    const batch = puts.splice(0);
    const chunks: Array<Array<[string, string]>> = [];
    for (let i = 0; i < batch.length; i += 120) chunks.push(batch.slice(i, i + 120));
    for (let i = 0; i < chunks.length; i += 16) {
      await Promise.all(chunks.slice(i, i + 16).map((ch) => etcd.if(keys.tenantMeta('scale'), 'Create', '>', 0).then(...ch.map(([k, v]) => etcd.put(k).value(v))).commit()));
    }
  };
  for (let i = 0; i < n; i++) {
    const owner = `o${Math.floor(i / 10)}`;
    const name = `Box${i % 10}`;
    const grantee = `g${i % 1000}`;
    const acl = new Map([[owner, parseRights('lrswipkxtea')], [grantee, parseRights('lrs')]]);
    if (i % starEvery === 0) acl.set('star', parseRights('lr'));
    const id = randomId();
    if (i % starEvery === 0) acl.set('legacy', parseRights('lr'));
    const stored = encodeMailbox({ tenant: 'scale', owner, name, id, acl, createdAt: new Date(), revision: 0 });
    puts.push([keys.mailbox('scale', owner, name), stored]);
    puts.push([keys.shared('scale', grantee, owner, name), stored]);
    if (acl.has('star')) {
      puts.push([keys.shared('scale', 'star', owner, name), stored]);
      // The same shares for "legacy", its entries as written before they held the record: the old read path.
      puts.push([keys.shared('scale', 'legacy', owner, name), id]);
    }
    if (puts.length >= 20_000) await flush();
  }
  await flush();
  etcd.close();
}

async function coldStart(c: BenchCluster, addr = c.addr): Promise<{ ms: number; heapBytes: number; shares: number }> {
  const token = await c.tokenFor('cold');
  const child = spawn(process.execPath, [...(process.env.MAILSHARE_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.MAILSHARE_BENCH_PROF] : []), '--expose-gc', '--import', 'tsx', path.join(REPO_ROOT, 'test/bench/agent-coldstart.ts'), addr, token], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return workerOutput(child, 'cold start');
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * scale: 10 k, 100 k and 1 M shared mailboxes. Per size: etcd and
 * coordinator memory, an agent's cold start (snapshot + watch) and the heap
 * it holds per cached mailbox, and ListSharedWith for a user with 1,000
 * shares (p50 and p99 of 100, through the API). Goals: ≤ 300 B per cached
 * mailbox, cold start of 1 M ≤ 5 s, list p50 ≤ 5 ms and p99 ≤ 10 ms. The ratio is 300 B over
 * the largest size's bytes per mailbox.
 */
export async function scale(): Promise<BenchResult> {
  const figures: Record<string, number | string> = {};
  let last = { bytes: 0, coldMs: 0, listMs: 0, listP99: 0, n: 0 };
  for (const n of SIZES) {
    const c = await startBenchCluster();
    try {
      const rss0 = rssOf(c.serverPid);
      const t0 = performance.now();
      await load(c, n);
      const loadS = (performance.now() - t0) / 1000;
      const cold = await coldStart(c);
      // The baseline: the same cold start from a coordinator without the copy (every snapshot read from etcd).
      const dir = tempDir('mailshare-bench-plain-');
      const plain = await startCoordinator(c.etcd, dir.path, ['--events-snapshot-copy', 'off']);
      let fromEtcd;
      try {
        fromEtcd = await coldStart(c, plain.addr);
      } finally {
        await plain.stop();
        dir.remove();
      }
      const api = connectApi(c.addr, c.nodeToken);
      // One full listing of a user's 1,000 shares: its time and how many came back.
      const listOnce = async (user: string): Promise<{ ms: number; listed: number }> => {
        const s = performance.now();
        let token = '';
        let listed = 0;
        do {
          const r = await api.mailbox.listSharedWith({ tenant: 'scale', user, pageSize: 1000, pageToken: token });
          listed += r.mailboxes.length;
          token = r.nextPageToken;
        } while (token);
        return { ms: performance.now() - s, listed };
      };
      // A change under the user's index (one entry written again as it is) makes the next answer a full read.
      const etcd = createEtcdClient({ endpoints: c.etcd.endpoints });
      const keys = createKeys('/mailshare/');
      const touch = async (user: string): Promise<void> => {
        const kv = (await etcd.getAll().prefix(keys.sharedPrefix('scale', user)).limit(1).exec()).kvs[0]!;
        await etcd.put(kv.key).value(kv.value).exec();
      };
      const kept: number[] = [];
      const fresh: number[] = [];
      const legacy: number[] = [];
      let listed = 0;
      let legacyListed = 0;
      // Each path on its own, 100 times after a first call: asked again unchanged (the kept answer),
      // after a change (entries holding the record), after a change with the old id-only entries.
      for (let i = 0; i < 101; i++) {
        const a = await listOnce('star');
        listed = a.listed;
        if (i > 0) kept.push(a.ms);
      }
      // The floor: the same call for a user with no shares (the RPC and the check without the 1,000 entries).
      const empty: number[] = [];
      for (let i = 0; i < 101; i++) {
        const e = await listOnce('nobody');
        if (i > 0) empty.push(e.ms);
      }
      for (let i = 0; i < 101; i++) {
        await touch('star');
        const f = await listOnce('star');
        if (i > 0) fresh.push(f.ms);
      }
      for (let i = 0; i < 101; i++) {
        await touch('legacy');
        const b = await listOnce('legacy');
        legacyListed = b.listed;
        if (i > 0) legacy.push(b.ms);
      }
      etcd.close();
      api.close();
      const pct = (xs: number[], q: number) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.ceil(xs.length * q) - 1)]!;
      const listMs = pct(kept, 0.5);
      const listP99 = pct(kept, 0.99);
      const k = n >= 1_000_000 ? `${n / 1_000_000}M` : `${n / 1000}k`;
      figures[`${k} load into etcd s`] = +loadS.toFixed(1);
      figures[`${k} coordinator RSS growth MB`] = +((rssOf(c.serverPid) - rss0) / 1e6).toFixed(1);
      figures[`${k} coordinator RSS growth B/mailbox`] = Math.round((rssOf(c.serverPid) - rss0) / n);
      figures[`${k} agent cold start ms`] = Math.round(cold.ms);
      figures[`${k} agent cold start from etcd (no copy) ms`] = Math.round(fromEtcd.ms);
      figures[`${k} cold start: copy vs etcd`] = `${(fromEtcd.ms / cold.ms).toFixed(1)}x faster`;
      figures[`${k} agent bytes/mailbox`] = Math.round(cold.heapBytes / n);
      figures[`${k} ListSharedWith(1,000) p50 ms`] = +listMs.toFixed(2);
      figures[`${k} ListSharedWith(1,000) p99 ms`] = +listP99.toFixed(2);
      figures[`${k} ListSharedWith(none) p50 ms`] = +pct(empty, 0.5).toFixed(2);
      figures[`${k} ListSharedWith(none) p99 ms`] = +pct(empty, 0.99).toFixed(2);
      figures[`${k} ListSharedWith(1,000) after a change p50 ms`] = +pct(fresh, 0.5).toFixed(2);
      figures[`${k} ListSharedWith(1,000) after a change p99 ms`] = +pct(fresh, 0.99).toFixed(2);
      figures[`${k} ListSharedWith(1,000) id-only entries after a change p50 ms`] = +pct(legacy, 0.5).toFixed(2);
      figures[`${k} ListSharedWith(1,000) id-only entries after a change p99 ms`] = +pct(legacy, 0.99).toFixed(2);
      if (listed !== STAR_SHARES || legacyListed !== STAR_SHARES || cold.shares !== STAR_SHARES || fromEtcd.shares !== STAR_SHARES) figures[`${k} WRONG share count`] = `${listed} / ${legacyListed} / ${cold.shares} / ${fromEtcd.shares}`;
      last = { bytes: cold.heapBytes / n, coldMs: cold.ms, listMs, listP99, n };
    } finally {
      await c.stop();
    }
  }
  const coldGoal = last.n >= 1_000_000 ? last.coldMs <= 5_000 : false;
  return {
    name: 'scale',
    ratio: 300 / last.bytes,
    goal: '<= 300 B per cached mailbox, cold start of 1 M <= 5 s, ListSharedWith(1,000) p50 <= 5 ms and p99 <= 10 ms',
    met: last.bytes <= 300 && coldGoal && last.listMs <= 5 && last.listP99 <= 10,
    figures,
  };
}
