import { createAgent } from '../../src/agent/agent.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { startBenchCluster, runWorker } from './cluster.js';
import type { BenchResult } from './run.js';

/**
 * locate-rpc: Locate over gRPC from a client process (concurrency 1 and 64),
 * as unary calls and over one LocateStream, against a direct etcd3 get from
 * a process of the same shape, and over LocateMany (batched stream
 * messages). The goal is judged on LocateMany, the API meant for many
 * lookups in flight; the unary and LocateStream figures are printed beside it.
 */
export async function locateRpc(): Promise<BenchResult> {
  const c = await startBenchCluster();
  try {
    const agent = createAgent({ coordinators: [c.addr], token: c.nodeToken, node: { name: 'bench', imapAddress: '127.0.0.1:143' }, ttlSeconds: 30 });
    await agent.ready;
    for (let i = 0; i < 1000; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => agent.assign('bench', `u${i + j}`)));
    const client = createEtcdClient({ endpoints: c.etcd.endpoints });
    const key = (await client.getAll().prefix('/mailshare/v1/assign/bench/').limit(1).keys())[0]!;
    client.close();
    const prefix = key.slice(0, key.lastIndexOf('/') + 1);
    const figures: Record<string, number> = {};
    const results: Record<string, { ops: number; p50: number; p99: number }> = {};
    for (const conc of [1, 64]) {
      results[`rpc${conc}`] = await runWorker(['rpc', c.addr, c.nodeToken, String(conc), '3000']);
      results[`stream${conc}`] = await runWorker(['stream', c.addr, c.nodeToken, String(conc), '3000']);
      results[`many${conc}`] = await runWorker(['many', c.addr, c.nodeToken, String(conc), '3000']);
      results[`etcd${conc}`] = await runWorker(['etcd', c.etcd.endpoints.join(','), '', String(conc), '3000', prefix]);
      for (const kind of ['rpc', 'stream', 'many', 'etcd']) {
        const r = results[`${kind}${conc}`]!;
        figures[`${kind} c=${conc} ops/s`] = Math.round(r.ops);
        figures[`${kind} c=${conc} p50 ms`] = r.p50;
        figures[`${kind} c=${conc} p99 ms`] = r.p99;
      }
    }
    await agent.close();
    const ratio = results.many64!.ops / results.etcd64!.ops;
    figures['unary/etcd at c=64'] = +(results.rpc64!.ops / results.etcd64!.ops).toFixed(2);
    figures['LocateStream/etcd at c=64'] = +(results.stream64!.ops / results.etcd64!.ops).toFixed(2);
    return {
      name: 'locate-rpc',
      ratio,
      goal: 'LocateMany >= 1.5x etcd at c=64, p99 <= 5 ms',
      met: ratio >= 1.5 && results.many64!.p99 <= 5,
      figures,
    };
  } finally {
    await c.stop();
  }
}
