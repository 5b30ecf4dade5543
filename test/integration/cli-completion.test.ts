import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startTestNode, type TestNode } from '../harness/node-client.js';
import { BIN, cleanEnv, runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * `mailshare completion bash|zsh|fish` and the `__complete` helper its
 * scripts call: subcommands, flags, flag choices, and tenant and node
 * names from the server; driven through bash's own completion machinery.
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let node: TestNode;
const dir = tempDir('mailshare-completion-');
let env: Record<string, string>;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path };
  const api = connectApi(server.address, server.adminToken);
  await api.directory.createTenant({ id: 'acme', domains: [] });
  await api.directory.createTenant({ id: 'globex', domains: [] });
  const token = (await api.auth.createToken({ role: 'node:imap1', description: '' })).token;
  api.close();
  node = await startTestNode(server.address, token, { name: 'imap1', ttlSeconds: 5 });
});
afterAll(async () => {
  node?.stop();
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

const complete = async (...words: string[]) => {
  const r = await runCli(['__complete', '--', ...words], { env, cwd: dir.path });
  expect([r.code, r.stderr]).toEqual([0, '']);
  return r.stdout.split('\n').filter((l) => l !== '');
};

/** Completes the words in bash with the script `mailshare completion bash` prints. */
async function bashComplete(words: string[]): Promise<string[]> {
  const script = `
mailshare() { "${process.execPath}" "${BIN}" "$@"; }
eval "$(mailshare completion bash)"
COMP_WORDS=(mailshare ${words.map((w) => `'${w}'`).join(' ')})
COMP_CWORD=${words.length}
_mailshare
printf '%s\\n' "\${COMPREPLY[@]}"
`;
  const { stdout } = await promisify(execFile)('bash', ['-c', script], { env: cleanEnv(env), cwd: dir.path });
  return stdout.split('\n').filter((l) => l !== '');
}

describe('shell completion', () => {
  it('offers subcommands, flags and flag choices of the command typed so far', async () => {
    expect(await complete('')).toEqual(expect.arrayContaining(['acl', 'tenant', 'node', 'import', 'index', 'completion']));
    expect(await complete('')).not.toContain('__complete');
    expect(await complete('ac')).toEqual(['acl']);
    expect(await complete('acl', '')).toEqual(['get', 'set', 'delete', 'rights', 'explain', 'listrights']);
    expect(await complete('acl', 'explain', '--o')).toEqual(['--output']);
    expect(await complete('acl', 'get', '--output', '')).toEqual(['text', 'json']);
    expect(await complete('import', 'dovecot-acl', '--mail-root', '/x', '--layout', 'f')).toEqual(['fs']);
  });

  it('offers tenant and node names from the server where an argument takes one, and nothing when it cannot be asked', async () => {
    expect(await complete('acl', 'explain', '')).toEqual(['acme', 'globex']);
    expect(await complete('acl', 'explain', 'gl')).toEqual(['globex']);
    expect(await complete('node', 'drain', '')).toEqual(['imap1']);
    // Past the tenant: a mailbox, not a tenant.
    expect(await complete('acl', 'explain', 'acme', '')).toEqual([]);
    // The address given on the line is the one asked.
    expect(await complete('--addr', '127.0.0.1:1', 'acl', 'explain', '')).toEqual([]);
    const down = await runCli(['__complete', '--', 'tenant', 'get', ''], { env: { ...env, MAILSHARE_ADDR: '127.0.0.1:1' }, cwd: dir.path });
    expect([down.code, down.stdout, down.stderr]).toEqual([0, '', '']);
  });

  it("works through bash's completion: eval \"$(mailshare completion bash)\"", async () => {
    expect(await bashComplete(['acl', 'ex'])).toEqual(['explain']);
    expect(await bashComplete(['tenant', 'get', ''])).toEqual(['acme', 'globex']);
    expect(await bashComplete(['user', 'move', 'acme', 'alice', ''])).toEqual([]);
    // A flag whose value is a node: the nodes.
    expect(await bashComplete(['user', 'move', 'acme', 'alice', '--to', ''])).toEqual(['imap1']);
  });

  it('prints the zsh and fish scripts, and refuses another shell', async () => {
    expect((await runCli(['completion', 'zsh'], { env, cwd: dir.path })).stdout).toMatch(/^#compdef mailshare$/m);
    expect((await runCli(['completion', 'fish'], { env, cwd: dir.path })).stdout).toMatch(/^complete -c mailshare /m);
    const bad = await runCli(['completion', 'tcsh'], { env, cwd: dir.path });
    expect([bad.code, bad.stdout, bad.stderr]).toEqual([2, '', 'mailshare: shell: "tcsh" is not one of bash, zsh, fish\n']);
  });
});
