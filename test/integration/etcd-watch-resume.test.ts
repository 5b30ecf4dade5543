import type { Watcher } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient, resumeExactly } from '../../src/store/etcd-client.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { waitFor } from '../harness/process.js';

let etcd: EtcdCluster;
const N = 3000;
let first = 0;

beforeAll(async () => {
  etcd = await startEtcd();
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  try {
    // N revisions under /p/, one key each.
    first = Number((await c.put('/p/0').value('x').exec()).header.revision);
    for (let i = 1; i < N; i += 50) await Promise.all(Array.from({ length: Math.min(50, N - i) }, (_, j) => c.put(`/p/${i + j}`).value('x').exec()));
  } finally {
    c.close();
  }
});
afterAll(async () => {
  await etcd?.stop();
});

/**
 * Watches /p/ from the first revision; etcd hands a watch that catches up
 * at most 1,000 revisions per response, under a header at the current
 * revision. After the first response etcd is killed and restarted, so the
 * client re-creates the watch. Returns the revisions delivered.
 */
async function watchThroughRestart(exact: boolean): Promise<number[]> {
  const c = createEtcdClient({ endpoints: etcd.endpoints });
  const seen: number[] = [];
  let w: Watcher | undefined;
  try {
    let restarted: Promise<unknown> | undefined;
    w = await c.watch().prefix('/p/').startRevision(String(first)).create();
    if (exact) resumeExactly(w, first);
    w.on('data', (res) => {
      for (const ev of res.events) seen.push(Number(ev.kv.mod_revision));
      if (!restarted) {
        etcd.members[0]!.kill('SIGKILL');
        restarted = etcd.members[0]!.exited.then(() => etcd.restart(0));
      }
    });
    await waitFor(() => restarted !== undefined, 10_000, 'the first response');
    await restarted;
    // Until everything came, or the watch has been quiet a while after resuming.
    let last = -1;
    let quietSince = Date.now();
    await waitFor(
      () => {
        if (seen.length !== last) {
          last = seen.length;
          quietSince = Date.now();
        }
        return seen.length >= N || Date.now() - quietSince > 5000;
      },
      30_000,
      'the watch to settle',
    );
    return seen;
  } finally {
    await w?.cancel().catch(() => undefined);
    c.close();
  }
}

describe('a watch re-created after its stream failed while catching up', () => {
  it('resumes after the last change it delivered (etcd3 alone resumes after the last header and skips the rest)', async () => {
    const plain = await watchThroughRestart(false);
    expect(plain.length).toBeLessThan(N);
    const exact = await watchThroughRestart(true);
    expect(exact).toEqual(Array.from({ length: N }, (_, i) => first + i));
  }, 90_000);
});
