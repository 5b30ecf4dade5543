/**
 * Dovecot's imaptest scripted suite against Dovecot directly and through
 * the gateway, in one run: every test that passes directly must pass
 * through the gateway. Prints both verdict lists and the differences;
 * exits 1 when a test passes directly but not through the gateway.
 *
 *   npm run test:imap-compliance [-- --tests "fetch list"]
 *
 * KNOWN_GAPS lists the tests that pass directly but are skipped through the
 * gateway because it does not offer their extension yet (README: which
 * capabilities the gateway offers); any other difference fails the run.
 *
 * imaptest is built once by shared/tools/imaptest/build.sh, found beside the
 * checkout or a directory above it (IMAPTEST_DIR overrides where its
 * run-suite.sh is).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startGatewayCluster } from '../harness/gateway-cluster.js';
import { REPO_ROOT } from '../harness/server.js';

/** IMAPTEST_DIR, or shared/tools/imaptest beside the checkout or any directory above it. */
function findTool(): string {
  if (process.env.IMAPTEST_DIR) return process.env.IMAPTEST_DIR;
  for (let dir = path.dirname(REPO_ROOT); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'shared', 'tools', 'imaptest');
    if (existsSync(path.join(candidate, 'run-suite.sh')) || dir === path.dirname(dir)) return candidate;
  }
}
const TOOL = findTool();
const args = process.argv.slice(2);
const testsAt = args.indexOf('--tests');
const TESTS = testsAt >= 0 ? args[testsAt + 1] : process.env.TESTS;
const USERS = { testuser: 'pass', testuser2: 'pass' };
/** Tests skipped through the gateway because it does not offer their extension (none now). */
const KNOWN_GAPS = new Set<string>([]);

function suite(host: string, port: string, clean: string): Promise<Map<string, string>> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, CLEAN: clean, TIMEOUT: process.env.TIMEOUT ?? '60', ...(TESTS ? { TESTS } : {}) };
    const child = spawn('bash', [path.join(TOOL, 'run-suite.sh'), host, port, 'testuser', 'pass', 'testuser2'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      process.stdout.write(c);
    });
    child.on('error', reject);
    child.on('exit', () => {
      const verdicts = new Map<string, string>();
      for (const m of out.matchAll(/^(PASS|FAIL|SKIP|HANG|ERROR)\s+(\S+)/gm)) verdicts.set(m[2]!, m[1]!);
      resolve(verdicts);
    });
  });
}

async function main(): Promise<number> {
  if (!existsSync(path.join(TOOL, 'run-suite.sh'))) {
    process.stderr.write(`imap-compliance: no imaptest tools at ${TOOL} (set IMAPTEST_DIR)\n`);
    return 2;
  }
  // Builds once (cached); prints the binary's path.
  execFileSync('bash', [path.join(TOOL, 'build.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const cluster = await startGatewayCluster({ nodes: ['c1'], users: USERS, tenant: true });
  try {
    const dovecot = cluster.dovecots[0]!;
    // Each test starts from empty mailboxes, as imaptest expects.
    const clean = `rm -rf ${JSON.stringify(cluster.mailRoot)}/testuser ${JSON.stringify(cluster.mailRoot)}/testuser2`;
    const [dh, dp] = dovecot.address.split(':');
    process.stdout.write(`== Dovecot directly (${dovecot.address})\n`);
    const direct = await suite(dh!, dp!, clean);
    const [gh, gp] = cluster.gateways[0]!.address().split(':');
    process.stdout.write(`== through the gateway (${cluster.gateways[0]!.address()})\n`);
    const gateway = await suite(gh!, gp!, clean);
    const differ = [...direct].filter(([t, v]) => v === 'PASS' && gateway.get(t) !== 'PASS');
    const known = differ.filter(([t]) => KNOWN_GAPS.has(t) && gateway.get(t) === 'SKIP');
    const worse = differ.filter((d) => !known.includes(d)).map(([t]) => `${t}: ${gateway.get(t) ?? 'missing'} through the gateway`);
    const pass = (m: Map<string, string>): number => [...m.values()].filter((v) => v === 'PASS').length;
    process.stdout.write(`\nimap-compliance: direct ${pass(direct)}/${direct.size} pass, gateway ${pass(gateway)}/${gateway.size} pass, ${known.length} known gap(s) (${known.map(([t]) => t).join(', ') || 'none'}), ${worse.length} gateway-only failure(s)\n`);
    for (const w of worse) process.stdout.write(`  ${w}\n`);
    return worse.length === 0 ? 0 : 1;
  } finally {
    await cluster.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`imap-compliance: ${String(err)}\n`);
    process.exit(2);
  },
);
