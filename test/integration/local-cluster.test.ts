import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { getFreePort } from '../../src/store/etcd-process.js';
import { canConnect } from '../harness/gateway-cluster.js';
import { RawImap, message } from '../harness/imap.js';
import { python } from '../harness/lines.js';
import { findProcesses, waitFor } from '../harness/process.js';
import { BIN, REPO_ROOT, cleanEnv, runCli } from '../harness/server.js';
import { scrape } from '../harness/metrics.js';
import { tempDir } from '../harness/tmp.js';

/** The README walkthrough: deploy/local-cluster.sh (two tenants), then a share from IMAP and the CLI. */
const dir = tempDir('mailshare-cluster-');
let script: ChildProcess | undefined;
afterAll(() => {
  if (script?.pid) {
    try {
      process.kill(-script.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  // Dovecot daemonizes out of the script's process group: stop whatever a failed run left.
  for (const pid of findProcesses('dovecot', dir.path)) process.kill(pid, 'SIGKILL');
  dir.remove();
});

describe('deploy/local-cluster.sh', () => {
  it('starts a two-node, two-tenant cluster with one command; alice shares a folder with bob across nodes, not with globex; Ctrl-C stops it all', async () => {
    // `mailshare` on PATH is this build.
    chmodSync(dir.path, 0o755);
    const bin = path.join(dir.path, 'bin');
    mkdirSync(bin);
    writeFileSync(path.join(bin, 'mailshare'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
    chmodSync(path.join(bin, 'mailshare'), 0o755);
    const ports = await Promise.all(Array.from({ length: 16 }, () => getFreePort()));
    const addr = ports.map((p) => `127.0.0.1:${p}`);
    const names = ['COORDINATOR', 'GATEWAY1', 'GATEWAY2', 'DOVECOT1', 'DOVECOT2', 'GATEWAY1_POP3', 'GATEWAY2_POP3', 'GATEWAY1_LMTP', 'GATEWAY2_LMTP', 'DOVECOT1_POP3', 'DOVECOT2_POP3', 'DOVECOT1_LMTP', 'DOVECOT2_LMTP', 'COORDINATOR_HTTP', 'GATEWAY1_METRICS', 'GATEWAY2_METRICS'];
    const at = Object.fromEntries(names.map((n, i) => [n, addr[i]!]));
    // MAILSHARE_DOVECOT_PREFIX: the Dovecot the script runs (npm run test:dovecot24 sets it).
    const env = cleanEnv({ PATH: `${bin}:${process.env.PATH}`, MAILSHARE_DOVECOT_PREFIX: process.env.MAILSHARE_DOVECOT_PREFIX, ...at });
    const start = async (): Promise<{ output: () => string; exited: Promise<number | null> }> => {
      script = spawn('bash', [path.join(REPO_ROOT, 'deploy', 'local-cluster.sh'), path.join(dir.path, 'cluster')], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      script.stdout!.on('data', (c: Buffer) => (text += c.toString()));
      script.stderr!.on('data', (c: Buffer) => (text += c.toString()));
      const exited = new Promise<number | null>((r) => script!.on('exit', (code) => r(code)));
      // Its CLI calls and daemons start slowly when the suite's other files load both cores.
      await waitFor(() => text.includes('local-cluster: ready'), 150_000, 'cluster ready').catch((err: unknown) => {
        throw new Error(`${String(err)}; the script said: ${text}`);
      });
      return { output: () => text, exited };
    };
    const first = await start();

    // alice, on gateway n1: a folder with a message, shared with bob for reading.
    // The credentials file holds the coordinator's address (as the README says): no MAILSHARE_ADDR, whatever the ports.
    const cliEnv = { MAILSHARE_CREDENTIALS: path.join(dir.path, 'cluster', 'server', 'credentials.json') };
    // alice and bob are placed on different nodes.
    expect((await runCli(['user', 'locate', 'acme', 'alice'], { env: cliEnv })).stdout).toMatch(/\bn1\b/);
    expect((await runCli(['user', 'locate', 'acme', 'bob'], { env: cliEnv })).stdout).toMatch(/\bn2\b/);
    const alice = await RawImap.login(addr[1]!, 'alice@acme.test', 'alice-pw');
    expect(await alice.cmd('CREATE Projects')).toMatch(/^t\d+ OK/m);
    const m = message('kickoff');
    alice.write(`a APPEND Projects {${m.length}+}\r\n${m}\r\n`);
    expect(await alice.until(/^a (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a OK/m);
    expect(await alice.cmd('SETACL Projects bob lr')).toMatch(/^t\d+ OK/m);
    expect(await alice.cmd('SETACL Projects dave@globex.test lr')).toMatch(/^t\d+ NO \[CANNOT\] Mailboxes can only be shared with users of your own organisation/m);
    alice.close();

    // The admin's view, with the CLI lines the README shows.
    expect((await runCli(['tenant', 'list'], { env: cliEnv })).stdout).toMatch(/^acme\s+acme\.test\s[\s\S]*^globex\s+globex\.test\s/m);
    const shares = await runCli(['share', 'list', 'acme', 'bob'], { env: cliEnv });
    expect(shares.code).toBe(0);
    expect(shares.stdout).toMatch(/alice\/Projects\s+lr/);
    expect((await runCli(['acl', 'set', 'acme', 'alice/Projects', 'carol', 'lrs'], { env: cliEnv })).code).toBe(0);
    const nodes = await runCli(['node', 'list'], { env: cliEnv });
    expect(nodes.code).toBe(0);
    expect(nodes.stdout).toMatch(/n1\s/);
    expect(nodes.stdout).toMatch(/n2\s/);

    // bob, on gateway n2, sees it under Shared/.
    const bob = await RawImap.login(addr[2]!, 'bob@acme.test', 'bob-pw');
    expect(await bob.cmd('LIST "" "*"')).toMatch(/^\* LIST \(\\HasNoChildren\) "\/" "Shared\/alice\/Projects"/m);
    expect(await bob.cmd('SELECT Shared/alice/Projects')).toMatch(/\* 1 EXISTS/);
    expect(await bob.cmd('FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])')).toMatch(/Subject: kickoff/);
    bob.close();
    // A name without a domain is acme's.
    const carol = await RawImap.login(addr[1]!, 'carol', 'carol-pw');
    expect(await carol.cmd('MYRIGHTS Shared/alice/Projects')).toMatch(/"lrs"/);
    carol.close();
    // dave, of globex, through either gateway: nothing of acme.
    const dave = await RawImap.login(addr[2]!, 'dave@globex.test', 'dave-pw');
    expect(await dave.cmd('LIST "" "*"')).not.toMatch(/alice|Shared/);
    expect(await dave.cmd('SELECT Shared/alice/Projects')).toMatch(/^t\d+ NO \[NONEXISTENT\]/m);
    dave.close();

    // Mail for alice (on n1) delivered through n2's gateway by LMTP lands on n1, and POP3 through n2 reads it.
    const delivered = await python(
      `
import smtplib, sys
s = smtplib.LMTP(sys.argv[1], int(sys.argv[2]))
print(s.sendmail('x@example.com', ['alice@acme.test', 'nobody@acme.test'], 'Subject: by lmtp\\r\\n\\r\\nhi\\r\\n'))
s.quit()
`,
      at.GATEWAY2_LMTP!.split(':'),
    );
    expect(delivered).toMatch(/'nobody@acme.test': \(550/);
    const n1Log = readFileSync(path.join(dir.path, 'cluster', 'n1', 'dovecot.log'), 'utf8');
    expect(n1Log).toMatch(/lmtp\(alice@acme\.test\).*saved mail to INBOX/);
    expect(readFileSync(path.join(dir.path, 'cluster', 'n2', 'dovecot.log'), 'utf8')).not.toMatch(/lmtp\(alice@acme\.test\)/);
    const popped = await python(
      `
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]))
p.user('alice@acme.test'); p.pass_('alice-pw')
print(b'\\n'.join(p.top(1, 0)[1]).decode())
p.quit()
`,
      at.GATEWAY2_POP3!.split(':'),
    );
    expect(popped).toMatch(/Subject: by lmtp/);
    expect((await runCli(['node', 'list'], { env: cliEnv })).stdout).toContain(at.DOVECOT1_LMTP!);

    // Each process serves /metrics where the script says.
    expect(first.output()).toContain(`coordinator http://${at.COORDINATOR_HTTP}/metrics`);
    expect((await scrape(at.COORDINATOR_HTTP!)).value('mailshare_nodes', { state: 'active' })).toBe(2);
    expect((await scrape(at.GATEWAY2_METRICS!)).value('mailshare_gateway_lmtp_recipients_total', { result: 'delivered' })).toBe(1);

    process.kill(-script!.pid!, 'SIGINT');
    expect(await first.exited).toBe(0);
    expect(first.output()).toContain('local-cluster: stopped');
    for (const a of addr) expect(await canConnect(a), a).toBe(false);

    // Started again on the same directory: the gateways reuse their node tokens (none is minted).
    const nodeTokens = async (): Promise<string[]> =>
      (JSON.parse((await runCli(['token', 'list', '-o', 'json'], { env: cliEnv })).stdout) as { tokens: Array<{ id: string; role: string }> }).tokens.filter((t) => t.role.startsWith('node')).map((t) => t.id).sort();
    const second = await start();
    const again = await nodeTokens();
    expect(again).toHaveLength(2);
    // A token the coordinator no longer knows is replaced at the next start, and only that one.
    const saved = readFileSync(path.join(dir.path, 'cluster', 'n1', 'node.token'), 'utf8').trim();
    const id = /^mst_([0-9a-f]{16})_/.exec(saved)![1]!;
    expect(again).toContain(id);
    expect((await runCli(['token', 'revoke', id], { env: cliEnv })).code).toBe(0);
    process.kill(-script!.pid!, 'SIGINT');
    expect(await second.exited).toBe(0);
    const third = await start();
    const now = await nodeTokens();
    expect(now).toHaveLength(2);
    expect(now).not.toContain(id);
    expect(now.filter((t) => again.includes(t))).toHaveLength(1);
    process.kill(-script!.pid!, 'SIGINT');
    expect(await third.exited).toBe(0);
  }, 480_000);
});
