/**
 * Benchmarks (not tests; never run in CI): `npm run bench -- [NAME...] [--json FILE]`.
 * Each compares a subject with a baseline measured in the same run and
 * prints figures and the ratio, because this machine is small and shared.
 */
import { writeFileSync } from 'node:fs';
import { aclPropagation } from './acl-propagation.js';
import { failover } from './failover.js';
import { imapLatency } from './imap-latency.js';
import { importBench } from './import.js';
import { imapProxy } from './imap-proxy.js';
import { lmtpBench } from './lmtp.js';
import { locateCache } from './locate-cache.js';
import { locateRpc } from './locate-rpc.js';
import { migrationBench } from './migration.js';
import { routeBench } from './route.js';
import { scale } from './scale.js';
import { usersScale } from './users-scale.js';

export interface BenchResult {
  name: string;
  /** subject / baseline, in the benchmark's own unit (higher is better). */
  ratio: number;
  goal: string;
  met: boolean;
  figures: Record<string, number | string>;
}

const BENCHMARKS: Record<string, () => Promise<BenchResult>> = {
  'locate-cache': locateCache,
  'locate-rpc': locateRpc,
  'acl-propagation': aclPropagation,
  failover,
  scale,
  'imap-proxy': imapProxy,
  'imap-latency': imapLatency,
  lmtp: lmtpBench,
  route: routeBench,
  import: importBench,
  migration: migrationBench,
  'users-scale': usersScale,
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let jsonFile: string | undefined;
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json') jsonFile = args[++i];
    else names.push(args[i]!);
  }
  for (const n of names) {
    if (!BENCHMARKS[n]) {
      process.stderr.write(`bench: unknown benchmark "${n}" (known: ${Object.keys(BENCHMARKS).join(', ')})\n`);
      process.exit(2);
    }
  }
  const results: BenchResult[] = [];
  for (const name of names.length ? names : Object.keys(BENCHMARKS)) {
    process.stderr.write(`bench: running ${name}…\n`);
    const r = await BENCHMARKS[name]!();
    results.push(r);
    process.stdout.write(`\n${r.name}\n`);
    for (const [k, v] of Object.entries(r.figures)) process.stdout.write(`  ${k.padEnd(28)} ${typeof v === 'number' ? v.toLocaleString('en-US', { maximumFractionDigits: 3 }) : v}\n`);
    process.stdout.write(`  ${'ratio'.padEnd(28)} ${r.ratio.toFixed(1)}x   goal ${r.goal}: ${r.met ? 'met' : 'NOT met'}\n`);
  }
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify(results, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${String(err)}\n`);
    process.exit(1);
  },
);
