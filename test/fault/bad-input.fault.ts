import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseIdentifier } from '../../src/domain/identifier.js';
import { GROUP_NAME_PATTERN, TENANT_ID_PATTERN, USER_ID_PATTERN } from '../../src/domain/ids.js';
import { parseMailboxName } from '../../src/domain/mailbox-name.js';
import { parseRights } from '../../src/domain/rights.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type Api, connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * Fault test 3 (bad input): at least 10,000 generated and mutated requests
 * to every sharing and directory RPC. The server must answer each with a
 * result or a well-formed gRPC error (a known code, a one-line message), stay
 * healthy, and store nothing invalid (etcd is scanned afterwards).
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let api: Api;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  api = connectApi(server.address, server.adminToken);
  await api.directory.createTenant({ id: 'acme', domains: [] });
  await api.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: 'P', actor: '' });
});
afterAll(async () => {
  api?.close();
  await server?.stop();
  await etcd?.stop();
});

/** Strings that stress parsers: valid-looking ids, unicode edge cases, control bytes, huge values. */
const nasty = fc.oneof(
  fc.constantFrom('', 'acme', 'alice', 'alice/P', 'bob', 'anyone', '-bob', 'group:sales', 'lrs', '+w', '-w', 'INBOX', 'inbox/x', '..', 'a//b', '\u0000', '\ud800', 'é', '𝄞', '%', '*', ' ', 'A'.repeat(70)),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ maxLength: 3000 }),
  fc.stringMatching(/^[a-z0-9.+@_-]{1,20}(\/[A-Za-z0-9 ]{1,10}){0,3}$/),
);
const num = fc.oneof(fc.constantFrom(0, -1, 1, 2 ** 31 - 1), fc.integer());

const VALID_CODES = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.ALREADY_EXISTS,
  grpc.status.PERMISSION_DENIED,
  grpc.status.ABORTED,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.RESOURCE_EXHAUSTED,
]);

describe('bad input fuzzing', () => {
  it('answers 10,000+ generated requests with results or well-formed errors, and stores nothing invalid', async () => {
    const calls: Array<(s: string[], n: number[]) => Promise<unknown>> = [
      (s) => api.directory.createTenant({ id: s[0]!, domains: [] }),
      (s, n) => api.directory.updateTenant({ id: s[0]!, settings: { maxSharesPerMailbox: n[0]! }, expectedRevision: 0 }),
      (s) => api.directory.getTenant({ id: s[0]! }),
      (s) => api.directory.setGroupMembers({ tenant: s[0]!, name: s[1]!, members: [s[2]!, s[3]!], expectedRevision: 0 }),
      (s) => api.directory.addGroupMember({ tenant: s[0]!, name: s[1]!, member: s[2]!, expectedRevision: 0, members: [] }),
      (s) => api.directory.getGroup({ tenant: s[0]!, name: s[1]! }),
      (s, n) => api.directory.listGroups({ tenant: s[0]!, pageSize: n[0]!, pageToken: s[1]! }),
      (s) => api.mailbox.createMailbox({ tenant: s[0]!, owner: s[1]!, name: s[2]!, actor: s[3]! }),
      (s) => api.mailbox.getMailbox({ tenant: s[0]!, mailbox: s[1]!, actor: s[2]! }),
      (s, n) => api.mailbox.listMailboxes({ tenant: s[0]!, owner: s[1]!, pageSize: n[0]!, pageToken: s[2]! }),
      (s, n) => api.mailbox.renameMailbox({ tenant: s[0]!, mailbox: s[1]!, newName: s[2]!, expectedRevision: n[0]!, actor: '' }),
      (s, n) => api.mailbox.listSharedWith({ tenant: s[0]!, user: s[1]!, pageSize: n[0]!, pageToken: s[2]! }),
      (s, n) => api.acl.setAcl({ tenant: s[0]!, mailbox: s[1]!, identifier: s[2]!, rights: s[3]!, expectedRevision: n[0]!, actor: s[4]! }),
      (s) => api.acl.deleteAcl({ tenant: s[0]!, mailbox: s[1]!, identifier: s[2]!, expectedRevision: 0, actor: '' }),
      (s) => api.acl.listRights({ tenant: s[0]!, mailbox: s[1]!, identifier: s[2]!, actor: s[3]! }),
      (s) => api.acl.myRights({ tenant: s[0]!, mailbox: s[1]!, user: s[2]! }),
      (s) => api.auth.createToken({ role: s[0]!, description: s[1]! }),
      (s, n) => api.audit.listAudit({ tenant: s[0]!, pageSize: n[0]!, pageToken: s[1]! }),
    ];
    // Half the time a field is replaced by a known-good value, so calls get past the first check.
    const good = ['acme', 'alice/P', 'bob', 'lrs', 'sales', 'alice', 'P'];
    const req = fc.tuple(fc.nat(calls.length - 1), fc.array(fc.oneof(nasty, fc.constantFrom(...good)), { minLength: 5, maxLength: 5 }), fc.array(num, { minLength: 1, maxLength: 1 }));
    const samples = fc.sample(req, 10_500);
    let answered = 0;
    let errors = 0;
    for (let i = 0; i < samples.length; i += 16) {
      await Promise.all(
        samples.slice(i, i + 16).map(async ([which, s, n]) => {
          try {
            await calls[which]!(s, n);
          } catch (err) {
            const e = err as grpc.ServiceError;
            expect(VALID_CODES.has(e.code), `${e.code} ${e.details}`).toBe(true);
            expect(e.details).not.toMatch(/[\r\n]/);
            expect(e.details.length).toBeGreaterThan(0);
            errors++;
          }
          answered++;
        }),
      );
    }
    expect(answered).toBeGreaterThanOrEqual(10_000);
    expect(errors).toBeGreaterThan(1000);
    // Still healthy.
    expect((await api.directory.getTenant({ id: 'acme' })).id).toBe('acme');

    // Everything stored is valid.
    const c = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      const all = await c.getAll().prefix(`${server.prefix}v1/`).strings();
      const root = `${server.prefix}v1/`;
      let mailboxes = 0;
      for (const [key, value] of Object.entries(all)) {
        const k = key.slice(root.length);
        let m: RegExpExecArray | null;
        if ((m = /^tenants\/(.+)$/.exec(k))) expect(TENANT_ID_PATTERN.test(m[1]!), k).toBe(true);
        else if ((m = /^t\/([^/]+)\/groups\/(.+)$/.exec(k))) {
          expect(GROUP_NAME_PATTERN.test(m[2]!), k).toBe(true);
          for (const u of (JSON.parse(value) as { members: string[] }).members) expect(USER_ID_PATTERN.test(u), `${k} member ${u}`).toBe(true);
        } else if ((m = /^t\/([^/]+)\/mbox\/([^/]+)\/(.+)$/.exec(k))) {
          mailboxes++;
          expect(USER_ID_PATTERN.test(m[2]!), k).toBe(true);
          expect(parseMailboxName(m[3]!)).toBe(m[3]);
          for (const [ident, rights] of Object.entries((JSON.parse(value) as { acl: Record<string, string> }).acl)) {
            expect(() => parseIdentifier(ident), `${k} ${ident}`).not.toThrow();
            expect(() => parseRights(rights), `${k} ${rights}`).not.toThrow();
          }
        }
      }
      expect(mailboxes).toBeGreaterThan(0);
    } finally {
      c.close();
    }
  });
});
