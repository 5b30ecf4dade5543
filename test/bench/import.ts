import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type DovecotEntry, folderDirectory, formatDovecotAclFile } from '../../src/cli/dovecot-acl.js';
import { parseRights } from '../../src/domain/rights.js';
import { connectApi } from '../harness/api.js';
import { runCli } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';
import { startBenchCluster } from './cluster.js';
import type { BenchResult } from './run.js';

const FOLDERS = Number(process.env.MAILSHARE_BENCH_FOLDERS ?? 10_000);

/**
 * import: `mailshare import dovecot-acl` of a generated Maildir++ tree of
 * 10,000 shared folders (100 users) using every identifier kind Dovecot
 * has (owner, user=, group=, group-override=, authenticated, anyone,
 * negative entries, named rights), coordinator in its own process. Then a
 * second run (must change nothing) and an export back into the tree
 * (must reproduce every file that has an RFC 4314 equivalent). Figures:
 * mailboxes per second of each step.
 */
export async function importBench(): Promise<BenchResult> {
  const c = await startBenchCluster();
  const dir = tempDir('mailshare-bench-import-');
  const root = path.join(dir.path, 'mail');
  try {
    const api = connectApi(c.addr, c.adminToken);
    await api.directory.createTenant({ id: 'big', domains: [] });
    api.close();
    const files = new Map<string, { text: string; exact: boolean }>();
    let seed = 11;
    const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let i = 0; files.size < FOLDERS; i++) {
      const owner = `user${i % 100}`;
      const name = `Shared/${['Team', 'Projekte', 'Ärger', 'Work'][i % 4]}/${Math.floor(i / 100)}`;
      const e: DovecotEntry[] = [{ kind: 'owner', negative: false, rights: parseRights('lrswipkxtea'), named: [] }];
      e.push({ kind: 'user', name: `user${(i + 1 + rnd(98)) % 100}`, negative: false, rights: parseRights('lrs'), named: [] });
      if (rnd(2)) e.push({ kind: 'group', name: `team${rnd(20)}`, negative: false, rights: parseRights('lr'), named: [] });
      if (rnd(4) === 0) e.push({ kind: 'group', name: 'temps', negative: true, rights: parseRights('w'), named: [] });
      if (rnd(5) === 0) e.push({ kind: 'authenticated', negative: false, rights: parseRights('l'), named: [] });
      if (rnd(10) === 0) e.push({ kind: 'anyone', negative: false, rights: parseRights('lr'), named: [] });
      // Kinds with no RFC 4314 equivalent: the export cannot give these files back as they were.
      const overrides = rnd(20) === 0;
      if (overrides) e.push({ kind: 'group-override', name: 'admins', negative: false, rights: parseRights('lrswipkxtea'), named: [] });
      const named = rnd(50) === 0;
      if (named) e.push({ kind: 'user', name: `user${(i + 50) % 100}`, negative: false, rights: parseRights('lr'), named: ['x-flag'] });
      const text = formatDovecotAclFile(e);
      const d = path.join(root, owner, folderDirectory(name, 'maildir'));
      for (const sub of ['cur', 'new', 'tmp']) mkdirSync(path.join(d, sub), { recursive: true });
      writeFileSync(path.join(d, 'dovecot-acl'), text);
      files.set(`${owner}/${name}`, { text, exact: !overrides && !named });
    }
    const run = async (args: string[]): Promise<{ secs: number; out: Record<string, unknown> }> => {
      const t0 = Date.now();
      const r = await runCli(args, { env: { MAILSHARE_ADDR: c.addr, MAILSHARE_TOKEN: c.adminToken }, timeoutMs: 30 * 60_000 });
      if (r.code !== 0) throw new Error(`mailshare ${args.join(' ')}: ${r.stderr}`);
      return { secs: (Date.now() - t0) / 1000, out: args.includes('json') ? (JSON.parse(r.stdout) as Record<string, unknown>) : {} };
    };
    process.stderr.write(`import: ${FOLDERS} folders written; importing\n`);
    const first = await run(['import', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '-o', 'json']);
    process.stderr.write(`import: first run ${first.secs} s; again\n`);
    const second = await run(['import', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '-o', 'json']);
    for (const ref of files.keys()) {
      const [owner, ...rest] = ref.split('/');
      rmSync(path.join(root, owner!, folderDirectory(rest.join('/'), 'maildir'), 'dovecot-acl'));
    }
    const exported = await run(['export', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '-o', 'json']);
    let same = 0;
    let exact = 0;
    for (const [ref, f] of files) {
      if (!f.exact) continue;
      exact++;
      const [owner, ...rest] = ref.split('/');
      if (readFileSync(path.join(root, owner!, folderDirectory(rest.join('/'), 'maildir'), 'dovecot-acl'), 'utf8') === f.text) same++;
    }
    const rate = FOLDERS / first.secs;
    const unchanged = second.out.unchanged === FOLDERS && second.out.entriesSet === 0 && second.out.entriesRemoved === 0;
    return {
      name: 'import',
      ratio: +rate.toFixed(1),
      goal: `${FOLDERS} folders imported; a second run changes nothing; the export gives back every file with an RFC 4314 equivalent`,
      met: first.out.failed === 0 && unchanged && same === exact,
      figures: {
        folders: FOLDERS,
        'import s': first.secs,
        'import mailboxes/s': +rate.toFixed(1),
        'entries set': first.out.entriesSet as number,
        'notes (no RFC 4314 equivalent)': (first.out.notes as unknown[]).length,
        'rule differences reported': (first.out.differences as unknown[]).length,
        'second run s': second.secs,
        'second run unchanged': second.out.unchanged as number,
        'export s': exported.secs,
        'export files': (exported.out.written as unknown[]).length,
        'files given back as they were': `${same} of ${exact}`,
      },
    };
  } finally {
    dir.remove();
    await c.stop();
  }
}
