import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Api, connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { type ServerProcess, spawnServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * Fault test 2 (durability): a stream of SetAcl calls through two
 * coordinators while one coordinator and one of three etcd members are
 * killed with SIGKILL. Every acknowledged write must be readable afterwards
 * (the last acknowledged value of each entry; an entry whose last write
 * failed may hold that value or the one before). Goal: 0 lost.
 */
let etcd: EtcdCluster;
const servers: ServerProcess[] = [];
const dir = tempDir('mailshare-durability-');
let token = '';

beforeAll(async () => {
  etcd = await startEtcd({ members: 3 });
  const args = (i: number) => ['--etcd', etcd.endpoints.join(','), '--listen', '127.0.0.1:0', '--data-dir', path.join(dir.path, `c${i}`), '--log-level', 'warn'];
  servers.push(await spawnServer(args(0)));
  token = (JSON.parse(readFileSync(path.join(dir.path, 'c0', 'credentials.json'), 'utf8')) as { token: string }).token;
  servers.push(await spawnServer(args(1)));
}, 120_000);
afterAll(async () => {
  for (const s of servers) s.child.kill('SIGKILL');
  await etcd?.stop();
  dir.remove();
});

const RIGHTS = ['lr', 'lrs', 'lrsw', 'lrswi', 'lrswip', 'l'];
const WORKERS = 8;
const IDS = 20;

describe('durability under SIGKILL of a coordinator and an etcd member', () => {
  it('loses no acknowledged SetAcl', async () => {
    const apis: Api[] = servers.map((s) => connectApi(s.addr, token));
    await apis[1]!.directory.createTenant({ id: 'acme', domains: [] });
    for (let w = 0; w < WORKERS; w++) await apis[1]!.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: `M${w}`, actor: '' });
    /** Per "mailbox identifier": the last acknowledged rights, and the attempts since that failed (any may have landed). */
    const acked = new Map<string, string>();
    const maybe = new Map<string, Set<string>>();
    const history = new Map<string, string[]>();
    const note = (key: string, what: string): void => {
      history.set(key, [...(history.get(key) ?? []), what]);
    };
    let ok = 0;
    let failed = 0;
    let stop = false;
    const worker = async (w: number): Promise<void> => {
      // Like a client library: stay with one coordinator, switch to the other after a failure.
      let at = w % 2;
      for (let n = 0; !stop; n++) {
        const id = `u${n % IDS}`;
        const rights = RIGHTS[(n + w) % RIGHTS.length]!;
        const key = `M${w} ${id}`;
        const api = apis[at]!;
        try {
          const res = await api.acl.setAcl({ tenant: 'acme', mailbox: `alice/M${w}`, identifier: id, rights, expectedRevision: 0, actor: '' });
          expect(res.rights.startsWith(rights)).toBe(true);
          acked.set(key, rights);
          note(key, `ok:${rights}@${at}`);
          maybe.delete(key);
          ok++;
        } catch (err) {
          note(key, `err:${rights}@${at}:${(err as { code?: number }).code ?? '?'}`);
          maybe.set(key, (maybe.get(key) ?? new Set()).add(rights));
          at = 1 - at;
          failed++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const running = Array.from({ length: WORKERS }, (_, w) => worker(w));
    await new Promise((r) => setTimeout(r, 2000));
    servers[0]!.child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 2000));
    etcd.members[0]!.stop(0).catch(() => undefined);
    process.kill(etcd.members[0]!.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 4000));
    stop = true;
    await Promise.all(running);

    let lost = 0;
    for (let w = 0; w < WORKERS; w++) {
      const m = await apis[1]!.mailbox.getMailbox({ tenant: 'acme', mailbox: `alice/M${w}`, actor: '' });
      const stored = new Map(m.acl.map((e) => [e.identifier, e.rights.replace(/[cd]/g, '')]));
      for (let i = 0; i < IDS; i++) {
        const key = `M${w} u${i}`;
        const want = acked.get(key);
        const got = stored.get(`u${i}`);
        if (want === undefined) continue;
        if (got !== want && !(got !== undefined && maybe.get(key)?.has(got))) {
          lost++;
          process.stdout.write(`lost: ${key} acknowledged ${want}, stored ${got ?? '-'} (history ${history.get(key)?.join(' ') ?? ''})\n`);
        }
      }
    }
    for (const a of apis) a.close();
    process.stdout.write(`durability: ${ok} acknowledged SetAcl, ${failed} failed during the faults, ${lost} lost\n`);
    expect(ok).toBeGreaterThan(200);
    expect(failed).toBeGreaterThan(0);
    expect(lost).toBe(0);
  });
});
