import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Acl, EMPTY_ACL, deleteAcl, effectiveRights, setAcl, shareGrantees } from '../../src/domain/acl.js';
import { parseIdentifier } from '../../src/domain/identifier.js';
import { ALL_RIGHTS, L, formatRightsForResponse, parseRightsChange } from '../../src/domain/rights.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { type Api, connectApi } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

/**
 * Random sequences of ACL, mailbox and group changes against a real etcd:
 * afterwards the stored index must be exactly what the stored ACLs imply,
 * the ACLs what a model of the same changes implies, and ListSharedWith
 * what the definition of effective rights gives for every user.
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let api: Api;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  api = connectApi(server.address, server.adminToken);
});
afterAll(async () => {
  api?.close();
  await server?.stop();
  await etcd?.stop();
});

const USERS = ['u1', 'u2', 'u3', 'u4'];
const GROUPS = ['g1', 'g2'];
const OWNERS = ['u1', 'u2'];
const NAMES = ['A', 'A/B', 'C'];

type Op =
  | { op: 'create'; owner: string; name: string }
  | { op: 'set'; owner: string; name: string; identifier: string; rights: string }
  | { op: 'deleteAcl'; owner: string; name: string; identifier: string }
  | { op: 'delete'; owner: string; name: string }
  | { op: 'rename'; owner: string; name: string; to: string }
  | { op: 'group'; group: string; members: string[] };

const ident = fc
  .tuple(fc.boolean(), fc.constantFrom(...USERS, ...GROUPS.map((g) => `group:${g}`), 'anyone', 'authenticated'))
  .map(([neg, id]) => (neg ? `-${id}` : id));
const rights = fc.oneof(
  fc.tuple(fc.constantFrom('', '+', '-'), fc.subarray([...'lrswipkxtea'], { minLength: 0 })).map(([p, r]) => p + r.join('')),
  fc.constantFrom('lr', '+l', 'lrs', '-l', 'lrswi'),
);
const mb = { owner: fc.constantFrom(...OWNERS), name: fc.constantFrom(...NAMES) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('create' as const), ...mb }),
  fc.record({ op: fc.constant('set' as const), ...mb, identifier: ident, rights }),
  fc.record({ op: fc.constant('set' as const), ...mb, identifier: ident, rights }),
  // Group grants and negative entries are the interesting cases: make them common.
  fc.record({ op: fc.constant('set' as const), ...mb, identifier: fc.constantFrom(...GROUPS.map((g) => `group:${g}`)), rights: fc.constantFrom('lr', '+l') }),
  fc.record({ op: fc.constant('set' as const), ...mb, identifier: fc.constantFrom(...USERS.map((u) => `-${u}`)), rights: fc.constantFrom('l', 'lr') }),
  fc.record({ op: fc.constant('deleteAcl' as const), ...mb, identifier: ident }),
  fc.record({ op: fc.constant('delete' as const), ...mb }),
  fc.record({ op: fc.constant('rename' as const), ...mb, to: fc.constantFrom(...NAMES, 'D', 'D/E') }),
  fc.record({ op: fc.constant('group' as const), group: fc.constantFrom(...GROUPS), members: fc.subarray(USERS) }),
);

interface Model {
  mailboxes: Map<string, { owner: string; name: string; acl: Acl }>;
  groups: Map<string, string[]>;
}

async function apply(tenant: string, model: Model, o: Op): Promise<void> {
  const ref = 'owner' in o ? `${o.owner}/${o.name}` : '';
  const ok = async (p: Promise<unknown>): Promise<boolean> => {
    try {
      await p;
      return true;
    } catch (err) {
      const code = (err as grpc.ServiceError).code;
      // Only "does not exist"/"already exists"/"cannot" answers are expected here.
      expect([grpc.status.NOT_FOUND, grpc.status.ALREADY_EXISTS, grpc.status.FAILED_PRECONDITION, grpc.status.INVALID_ARGUMENT]).toContain(code);
      return false;
    }
  };
  switch (o.op) {
    case 'create':
      if (await ok(api.mailbox.createMailbox({ tenant, owner: o.owner, name: o.name, actor: '' }))) {
        model.mailboxes.set(ref, { owner: o.owner, name: o.name, acl: new Map([[o.owner, ALL_RIGHTS]]) });
      }
      break;
    case 'set':
      if (await ok(api.acl.setAcl({ tenant, mailbox: ref, identifier: o.identifier, rights: o.rights, expectedRevision: 0, actor: '' }))) {
        const m = model.mailboxes.get(ref)!;
        m.acl = setAcl(m.acl, parseIdentifier(o.identifier), parseRightsChange(o.rights));
      }
      break;
    case 'deleteAcl':
      if (await ok(api.acl.deleteAcl({ tenant, mailbox: ref, identifier: o.identifier, expectedRevision: 0, actor: '' }))) {
        const m = model.mailboxes.get(ref)!;
        m.acl = deleteAcl(m.acl, parseIdentifier(o.identifier));
      }
      break;
    case 'delete':
      if (await ok(api.mailbox.deleteMailbox({ tenant, mailbox: ref, expectedRevision: 0, actor: '' }))) model.mailboxes.delete(ref);
      break;
    case 'rename':
      if (await ok(api.mailbox.renameMailbox({ tenant, mailbox: ref, newName: o.to, expectedRevision: 0, actor: '' }))) {
        for (const [k, m] of [...model.mailboxes]) {
          if (m.owner === o.owner && (m.name === o.name || m.name.startsWith(`${o.name}/`))) {
            model.mailboxes.delete(k);
            const name = o.to + m.name.slice(o.name.length);
            model.mailboxes.set(`${m.owner}/${name}`, { ...m, name });
          }
        }
      }
      break;
    case 'group':
      await api.directory.setGroupMembers({ tenant, name: o.group, members: o.members, expectedRevision: 0 });
      model.groups.set(o.group, [...o.members]);
      break;
  }
}

let run = 0;
/** How often the interesting cases occurred, so the test cannot pass vacuously. */
const seen = { groupIndex: 0, negative: 0 };

describe('shared-with index (property, real etcd)', () => {
  it('always equals what the ACLs imply', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        const tenant = `prop-${++run}-${Date.now().toString(36)}`;
        await api.directory.createTenant({ id: tenant, domains: [] });
        const model: Model = { mailboxes: new Map(), groups: new Map() };
        // Start from every mailbox existing, so most random changes land on something.
        for (const owner of OWNERS) for (const name of NAMES) await apply(tenant, model, { op: 'create', owner, name });
        for (const o of ops) {
          await apply(tenant, model, o);
          const all = [...model.mailboxes.values()];
          if (all.some((m) => [...shareGrantees(m.acl, m.owner)].some((g) => g.startsWith('group:')))) seen.groupIndex++;
          if (all.some((m) => [...m.acl.keys()].some((k) => k.startsWith('-')))) seen.negative++;
        }

        // Stored ACLs equal the model's.
        const stored = await api.mailbox.listMailboxes({ tenant, owner: '', pageSize: 1000, pageToken: '' });
        expect(Object.fromEntries(stored.mailboxes.map((m) => [m.mailbox, m.acl]))).toEqual(
          Object.fromEntries(
            [...model.mailboxes].map(([k, m]) => [k, [...(m.acl.size ? m.acl : EMPTY_ACL)].sort(([a], [b]) => ((a.startsWith('-') ? 1 : 0) - (b.startsWith('-') ? 1 : 0)) || (a < b ? -1 : 1)).map(([identifier, r]) => ({ identifier, rights: formatRightsForResponse(r) }))]),
          ),
        );

        // The raw index equals the grantees the ACLs imply.
        const c = createEtcdClient({ endpoints: etcd.endpoints });
        const prefix = `${server.prefix}v1/t/${tenant}/shared/`;
        const index = (await c.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)).sort();
        c.close();
        const implied = [...model.mailboxes.values()].flatMap((m) => [...shareGrantees(m.acl, m.owner)].map((g) => `${g}/${m.owner}/${m.name}`)).sort();
        expect(index).toEqual(implied);
        // `mailshare index check` comes to the same (what it proves on a live system).
        const check = await api.mailbox.checkIndex({ tenant, repair: false });
        expect(check.tenants[0]).toMatchObject({ tenant, missing: 0, stale: 0, wrongId: 0, expected: implied.length, entries: implied.length, differences: [] });

        // ListSharedWith equals the definition for every user.
        for (const user of USERS) {
          const groups = new Set([...model.groups].filter(([, ms]) => ms.includes(user)).map(([g]) => g));
          const expected = [...model.mailboxes.values()]
            .filter((m) => m.owner !== user)
            .map((m) => [`${m.owner}/${m.name}`, effectiveRights(m.acl, { user, groups }, m.owner)] as const)
            .filter(([, r]) => (r & L) !== 0)
            .map(([k, r]) => [k, formatRightsForResponse(r)])
            .sort(([a], [b]) => (a! < b! ? -1 : 1));
          const res = await api.mailbox.listSharedWith({ tenant, user, pageSize: 0, pageToken: '' });
          expect(res.mailboxes.map((m) => [m.mailbox, m.rights])).toEqual(expected);
        }
      }),
      { numRuns: 60 },
    );
    expect(seen.groupIndex).toBeGreaterThan(30);
    expect(seen.negative).toBeGreaterThan(30);
  }, 120_000);
});
