import { afterAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { isAlive } from '../harness/process.js';
import { existsSync } from 'node:fs';

const started: EtcdCluster[] = [];
afterAll(async () => {
  await Promise.all(started.map((c) => c.stop()));
});

describe('etcd test harness', () => {
  it('starts a single member on free loopback ports and removes everything on stop', async () => {
    const c = await startEtcd();
    const client = createEtcdClient({ endpoints: c.endpoints });
    await client.put('k').value('v').exec();
    expect(await client.get('k').string()).toBe('v');
    client.close();
    expect(c.endpoints[0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const pid = c.members[0]!.pid;
    await c.stop();
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(c.dir)).toBe(false);
  });

  it('starts a 3-member cluster that keeps serving with one member down', async () => {
    const c = await startEtcd({ members: 3 });
    started.push(c);
    expect(new Set(c.endpoints).size).toBe(3);
    const client = createEtcdClient({ endpoints: c.endpoints });
    try {
      const members = await client.cluster.memberList({});
      expect(members.members).toHaveLength(3);
      await client.put('a').value('1').exec();
      c.members[0]!.kill('SIGKILL');
      await c.members[0]!.exited;
      await client.put('b').value('2').exec();
      expect(await client.get('b').string()).toBe('2');
      await c.restart(0);
      const only0 = createEtcdClient({ endpoints: [c.endpoints[0]!] });
      try {
        // The restarted member catches up with what was written while it was down.
        let v: string | null = null;
        for (let i = 0; i < 50 && v !== '2'; i++) {
          v = await only0.get('b').string().catch(() => null);
          if (v !== '2') await new Promise((r) => setTimeout(r, 100));
        }
        expect(v).toBe('2');
      } finally {
        only0.close();
      }
    } finally {
      client.close();
    }
  });
});
