import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { connectApi } from '../harness/api.js';
import { aclFileOf, writeDovecotAclTree } from '../harness/dovecot-acl-tree.js';
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
    const files = writeDovecotAclTree(root, FOLDERS);
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
    for (const ref of files.keys()) rmSync(aclFileOf(root, ref));
    const exported = await run(['export', 'dovecot-acl', '--mail-root', root, '--tenant', 'big', '-o', 'json']);
    let same = 0;
    let exact = 0;
    for (const [ref, f] of files) {
      if (!f.exact) continue;
      exact++;
      if (readFileSync(aclFileOf(root, ref), 'utf8') === f.text) same++;
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
