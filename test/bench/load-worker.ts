/**
 * A load generator in its own process (so it does not share a CPU budget
 * with what it measures): `tsx load-worker.ts MODE TARGET TOKEN CONCURRENCY MS`.
 * MODE rpc: PlacementService.Locate of existing users; MODE stream: the same
 * lookups over one LocateStream; MODE many: over one LocateMany (batched
 * messages); MODE etcd: a direct
 * etcd3 get of the same assignment keys. Prints {"ops":…,"p50":…,"p99":…}.
 */
import * as grpc from '@grpc/grpc-js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { openLocateMany, openLocateStream } from '../harness/locate-stream.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';

const [mode, target, token, conc, ms, prefix] = process.argv.slice(2);
const concurrency = Number(conc);
const duration = Number(ms);
const USERS = 1000;

async function main(): Promise<void> {
  let call: (i: number) => Promise<unknown>;
  let close: () => void;
  if (mode === 'rpc') {
    const client = new PlacementServiceClient(target!, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    call = (i) =>
      new Promise((resolve, reject) =>
        client.locate({ tenant: 'bench', user: `u${i % USERS}`, mailbox: '', assign: false }, md, {}, (e, r) => (e ? reject(e) : resolve(r))),
      );
    close = () => client.close();
  } else if (mode === 'stream' || mode === 'many') {
    const client = new PlacementServiceClient(target!, grpc.credentials.createInsecure());
    const lookups = mode === 'many' ? openLocateMany(client, token!) : openLocateStream(client, token!);
    call = async (i) => {
      const r = await lookups.locate('bench', `u${i % USERS}`, false);
      if (r?.code !== 0) throw new Error(r?.message ?? 'stream broke');
      return r;
    };
    close = () => {
      lookups.close();
      client.close();
    };
  } else {
    const client = createEtcdClient({ endpoints: target!.split(',') });
    call = (i) => client.get(`${prefix}u${i % USERS}`).string();
    close = () => client.close();
  }
  // Warm up connections.
  for (let i = 0; i < 200; i++) await call(i);
  const lat: number[] = [];
  let n = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() - t0 < duration) {
        const s = performance.now();
        await call(n++);
        lat.push(performance.now() - s);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  close();
  process.stdout.write(JSON.stringify({ ops: lat.length / secs, p50: lat[Math.floor(lat.length / 2)], p99: lat[Math.floor(lat.length * 0.99)] }) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`load-worker: ${String(err)}\n`);
    process.exit(1);
  },
);
