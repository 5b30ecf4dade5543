import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { runCli, startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * Fault test 3, CLI half: generated and mutated argument lists for every
 * admin verb, run as the real binary against a live coordinator. Every run
 * must end with exit code 0, 1 or 2; a failure prints exactly one line on
 * stderr starting with "mailshare: " (no stack trace); and the server stays
 * healthy. (What the requests could store is checked by the RPC half.)
 */
let etcd: EtcdCluster;
let server: InProcessServer;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const api = connectApi(server.address, server.adminToken);
  await api.directory.createTenant({ id: 'acme', domains: [] });
  await api.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: 'P', actor: '' });
  api.close();
});
afterAll(async () => {
  await server?.stop();
  await etcd?.stop();
});

const VERBS = [
  ['tenant', 'create'], ['tenant', 'get'], ['tenant', 'list'], ['tenant', 'update'], ['tenant', 'delete'],
  ['group', 'set'], ['group', 'add'], ['group', 'remove'], ['group', 'get'], ['group', 'list'], ['group', 'delete'],
  ['mailbox', 'create'], ['mailbox', 'get'], ['mailbox', 'list'], ['mailbox', 'rename'], ['mailbox', 'delete'], ['share', 'list'],
  ['acl', 'set'], ['acl', 'get'], ['acl', 'delete'], ['acl', 'rights'], ['acl', 'listrights'],
  ['node', 'list'], ['node', 'drain'], ['node', 'undrain'], ['node', 'remove'], ['user', 'locate'], ['user', 'move'], ['user', 'kick'],
  ['token', 'create'], ['token', 'list'], ['token', 'revoke'], ['token', 'whoami'], ['audit', 'list'], ['status'],
];
const word = fc.oneof(
  fc.constantFrom('acme', 'alice', 'alice/P', 'bob', 'lr', '+w', '-w', '--', '-o', 'json', 'text', '--expected-revision', '7', '-1', 'x', '', ' ', 'é', '\u0007', '%s', '${HOME}', '--force', '--assign', '--role', 'admin', 'group:g', 'anyone', '--max-shares', '99999999999999999999'),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary-ascii', maxLength: 20 }),
  fc.stringMatching(/^--[a-z-]{1,15}(=[a-z0-9]{0,5})?$/),
);

describe('CLI argument fuzzing', () => {
  it('answers every generated argument list with exit 0/1/2 and at most one clean line on stderr', async () => {
    const env = { MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, MAILSHARE_TIMEOUT: '5s' };
    // A fresh seed each run, printed so that a failure can be replayed (MAILSHARE_FUZZ_SEED).
    const seed = Number(process.env.MAILSHARE_FUZZ_SEED ?? Date.now() % 100_000);
    process.stdout.write(`cli-fuzz: seed ${seed}\n`);
    const cases = fc.sample(fc.tuple(fc.constantFrom(...VERBS), fc.array(word.filter((w) => !w.includes('\0')), { maxLength: 6 })), { numRuns: 160, seed });
    let failures = 0;
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(
        cases.slice(i, i + 4).map(async ([verb, args]) => {
          const argv = [...verb, ...args];
          const r = await runCli(argv, { env, timeoutMs: 30_000 });
          const what = JSON.stringify(argv);
          expect(r.signal, what).toBeNull();
          expect([0, 1, 2], `${what} → ${r.code} ${r.stderr}`).toContain(r.code);
          if (r.code !== 0) {
            failures++;
            expect(r.stderr, what).toMatch(/^mailshare: [^\n]*\n$/);
            expect(r.stderr, what).not.toMatch(/\n\s+at /);
          }
        }),
      );
    }
    expect(failures).toBeGreaterThan(0);
    const health = await runCli(['status'], { env });
    expect(health.code).toBe(0);
  });
});
