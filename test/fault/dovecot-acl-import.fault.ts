import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { aclFileOf, writeDovecotAclTree } from '../harness/dovecot-acl-tree.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * `mailshare import dovecot-acl` at size: 10,000 shared folders of 100
 * users with every identifier kind Dovecot's ACL files have, imported by
 * the real binary, imported again (nothing changes), exported back into
 * the tree (every file with an RFC 4314 equivalent given back byte for
 * byte), and every imported ACL checked against the file it came from.
 */
const FOLDERS = 10_000;
let etcd: EtcdCluster;
let server: InProcessServer;
const dir = tempDir('mailshare-import-10k-');

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
});
afterAll(async () => {
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

describe('import dovecot-acl of 10,000 folders', () => {
  it('imports every folder with its ACL, a second run changes nothing, and the export gives the files back', async () => {
    const api = connectApi(server.address, server.adminToken);
    const root = path.join(dir.path, 'mail');
    try {
      await api.directory.createTenant({ id: 'big', domains: [] });
      const files = writeDovecotAclTree(root, FOLDERS);
      const env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken };
      const run = async (...args: string[]) => {
        const r = await runCli([...args, '-o', 'json'], { env, timeoutMs: 10 * 60_000 });
        expect(r.stderr, args.join(' ')).toBe('');
        expect(r.code).toBe(0);
        return JSON.parse(r.stdout) as Record<string, unknown>;
      };
      const first = await run('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '--parallel', '32');
      expect(first).toMatchObject({ mailboxes: FOLDERS, created: FOLDERS, failed: 0 });
      // Every identifier kind without an equivalent was reported.
      const notes = (first.notes as Array<{ what: string }>).map((n) => n.what);
      expect(notes.some((n) => n.startsWith('group-override=admins has no RFC 4314 equivalent'))).toBe(true);
      expect(notes.some((n) => n.startsWith('named rights :x-flag'))).toBe(true);

      // Spot checks against the files: every 97th folder's ACL is the file's entries.
      const refs = [...files.keys()];
      for (let i = 0; i < refs.length; i += 97) {
        const ref = refs[i]!;
        const owner = ref.split('/')[0]!;
        const acl = (await api.acl.getAcl({ tenant: 'big', mailbox: ref, actor: '' })).entries.map((e) => `${e.identifier}=${e.rights.replace(/[cd]/g, '')}`).sort();
        const expected = files
          .get(ref)!
          .text.trim()
          .split('\n')
          .map((l) => {
            const [id, letters] = l.split(' ');
            const neg = id!.startsWith('-') ? '-' : '';
            const bare = neg ? id!.slice(1) : id!;
            const who = bare === 'owner' ? owner : bare.startsWith('user=') ? bare.slice(5) : bare.startsWith('group=') || bare.startsWith('group-override=') ? `group:${bare.split('=')[1]}` : bare;
            return `${neg}${who}=${[...letters!].sort((a, b) => 'lrswipkxtea'.indexOf(a) - 'lrswipkxtea'.indexOf(b)).join('')}`;
          })
          .sort();
        expect(acl, ref).toEqual(expected);
      }

      const second = await run('import', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '--parallel', '32');
      expect(second).toMatchObject({ created: 0, entriesSet: 0, entriesRemoved: 0, unchanged: FOLDERS, failed: 0 });

      for (const ref of refs) rmSync(aclFileOf(root, ref));
      const exported = await run('export', 'dovecot-acl', '--mail-root', root, '--tenant', 'big');
      expect((exported.written as string[]).length).toBe(FOLDERS);
      const wrong = [...files].filter(([ref, f]) => f.exact && readFileSync(aclFileOf(root, ref), 'utf8') !== f.text).map(([ref]) => ref);
      expect(wrong).toEqual([]);
      expect([...files.values()].filter((f) => f.exact).length).toBeGreaterThan(FOLDERS * 0.7);
    } finally {
      api.close();
    }
  });
});
