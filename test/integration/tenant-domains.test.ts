import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { type Api, connectApi } from '../harness/api.js';
import { unaryCall } from '../harness/grpc.js';
import { type EtcdCluster, startEtcd } from '../harness/etcd.js';
import { type InProcessServer, runCli, startInProcessServer } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * Tenants' login domains (users will log in as user@domain): unique across
 * the cluster, kept with the tenant, moved only by removing them first,
 * freed when the tenant goes; admin only to change. Over gRPC and the CLI.
 */
let etcd: EtcdCluster;
let server: InProcessServer;
let admin: Api;
const dir = tempDir('mailshare-domains-');

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  admin = connectApi(server.address, server.adminToken);
});
afterAll(async () => {
  admin?.close();
  await server?.stop();
  await etcd?.stop();
  dir.remove();
});

const codeOf = (p: Promise<unknown>): Promise<grpc.ServiceError> => p.then(() => ({ code: grpc.status.OK }) as grpc.ServiceError, (e: grpc.ServiceError) => e);

describe('login domains over gRPC', () => {
  it('are created with the tenant, unique in the cluster, and move only by removing them first', async () => {
    const acme = await admin.directory.createTenant({ id: 'd-acme', domains: ['Acme.Test', 'mail.acme.test'] });
    expect(acme.domains).toEqual(['acme.test', 'mail.acme.test']);
    // Another tenant cannot take one, at creation or later; nothing of the refused create exists.
    const taken = await codeOf(admin.directory.createTenant({ id: 'd-globex', domains: ['globex.test', 'acme.test'] }));
    expect(taken.code).toBe(grpc.status.ALREADY_EXISTS);
    expect(taken.details).toMatch(/acme\.test.*d-acme/);
    expect((await codeOf(admin.directory.getTenant({ id: 'd-globex' }))).code).toBe(grpc.status.NOT_FOUND);
    await admin.directory.createTenant({ id: 'd-globex', domains: ['globex.test'] });
    expect((await codeOf(admin.directory.addTenantDomain({ tenant: 'd-globex', domain: 'mail.acme.test' }))).code).toBe(grpc.status.ALREADY_EXISTS);
    // Adding one it owns changes nothing.
    const same = await admin.directory.addTenantDomain({ tenant: 'd-acme', domain: 'acme.test' });
    expect(same.revision).toBe((await admin.directory.getTenant({ id: 'd-acme' })).revision);
    // Moved: removed from acme, then added to globex.
    expect((await admin.directory.removeTenantDomain({ tenant: 'd-acme', domain: 'mail.acme.test' })).domains).toEqual(['acme.test']);
    expect((await admin.directory.addTenantDomain({ tenant: 'd-globex', domain: 'mail.acme.test' })).domains).toEqual(['globex.test', 'mail.acme.test']);
    expect((await codeOf(admin.directory.removeTenantDomain({ tenant: 'd-acme', domain: 'mail.acme.test' }))).code).toBe(grpc.status.NOT_FOUND);
    // Settings updates keep the domains.
    const t = await admin.directory.getTenant({ id: 'd-globex' });
    expect((await admin.directory.updateTenant({ id: 'd-globex', settings: { allowAnyone: false }, expectedRevision: t.revision })).domains).toEqual(['globex.test', 'mail.acme.test']);
    // Deleting a tenant frees its domains.
    await admin.directory.deleteTenant({ id: 'd-globex', force: false, expectedRevision: 0 });
    expect((await admin.directory.addTenantDomain({ tenant: 'd-acme', domain: 'globex.test' })).domains).toEqual(['acme.test', 'globex.test']);
  });

  it('refuses bad names with the field named, and changes nothing', async () => {
    await admin.directory.createTenant({ id: 'd-bad', domains: [] });
    for (const domain of ['', 'localhost', 'a..b', '-a.test', 'a-.test', 'a_b.test', 'x'.repeat(64) + '.test', 'a.test/b']) {
      const e = await codeOf(admin.directory.addTenantDomain({ tenant: 'd-bad', domain }));
      expect(e.code, domain).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.details).toMatch(/^domain: /);
    }
    const create = await codeOf(admin.directory.createTenant({ id: 'd-bad2', domains: ['ok.test', 'not ok'] }));
    expect(create.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(create.details).toMatch(/^domains\[1\]: /);
    expect((await codeOf(admin.directory.getTenant({ id: 'd-bad2' }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await codeOf(admin.directory.addTenantDomain({ tenant: 'd-nosuch', domain: 'nosuch.test' }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await admin.directory.getTenant({ id: 'd-bad' })).domains).toEqual([]);
  });

  it('only admin changes them; a tenant admin sees its own tenant\'s, nothing of another', async () => {
    await admin.directory.createTenant({ id: 'd-own', domains: ['own.test'] });
    await admin.directory.createTenant({ id: 'd-other', domains: ['other.test'] });
    const ta = connectApi(server.address, (await admin.auth.createToken({ role: 'tenant-admin:d-own', description: '' })).token);
    try {
      expect((await ta.directory.getTenant({ id: 'd-own' })).domains).toEqual(['own.test']);
      expect((await codeOf(ta.directory.getTenant({ id: 'd-other' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((await codeOf(ta.directory.addTenantDomain({ tenant: 'd-own', domain: 'more.test' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((await codeOf(ta.directory.removeTenantDomain({ tenant: 'd-own', domain: 'own.test' }))).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((await admin.directory.getTenant({ id: 'd-own' })).domains).toEqual(['own.test']);
    } finally {
      ta.close();
    }
  });
});

describe('user ids in a tenant with login domains', () => {
  it('hold no "@" (users are named without their domain): ACL identifiers, group members and mailbox owners are refused, and nothing is written', async () => {
    await admin.directory.createTenant({ id: 'u-dom', domains: ['u-dom.test'] });
    await admin.mailbox.createMailbox({ tenant: 'u-dom', owner: 'alice', name: 'Team', actor: '' });
    for (const [call, field] of [
      [() => admin.acl.setAcl({ tenant: 'u-dom', mailbox: 'alice/Team', identifier: 'bob@u-dom.test', rights: 'lr', expectedRevision: 0, actor: '' }), 'identifier'],
      [() => admin.acl.setAcl({ tenant: 'u-dom', mailbox: 'alice/Team', identifier: '-bob@elsewhere.test', rights: 'r', expectedRevision: 0, actor: '' }), 'identifier'],
      [() => admin.directory.setGroupMembers({ tenant: 'u-dom', name: 'team', members: ['carol', 'dave@u-dom.test'], expectedRevision: 0 }), 'members[1]'],
      [() => admin.directory.addGroupMember({ tenant: 'u-dom', name: 'team', member: 'erin@x.test', expectedRevision: 0, members: [] }), 'member'],
      [() => admin.mailbox.createMailbox({ tenant: 'u-dom', owner: 'frank@u-dom.test', name: 'X', actor: '' }), 'owner'],
    ] as const) {
      const e = await codeOf(call());
      expect(e.code, field).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.details).toMatch(new RegExp(`^${field.replace(/[[\]]/g, '\\$&')}: .*login domains`));
    }
    // Nor is such a user ever assigned a node.
    const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
    try {
      const e = await codeOf(unaryCall(placement.locate.bind(placement), { tenant: 'u-dom', user: 'gina@u-dom.test', mailbox: '', assign: true }, server.adminToken));
      expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.details).toMatch(/^user: .*login domains/);
      expect((await unaryCall(placement.locate.bind(placement), { tenant: 'u-dom', user: 'gina@u-dom.test', mailbox: '', assign: false }, server.adminToken)).node).toBe('');
    } finally {
      placement.close();
    }
    expect((await admin.acl.getAcl({ tenant: 'u-dom', mailbox: 'alice/Team', actor: '' })).entries.map((x) => x.identifier)).toEqual(['alice']);
    expect((await codeOf(admin.directory.getGroup({ tenant: 'u-dom', name: 'team' }))).code).toBe(grpc.status.NOT_FOUND);
    // A tenant without domains keeps its ids as they are.
    await admin.directory.createTenant({ id: 'u-plain', domains: [] });
    await admin.mailbox.createMailbox({ tenant: 'u-plain', owner: 'alice', name: 'Team', actor: '' });
    await admin.acl.setAcl({ tenant: 'u-plain', mailbox: 'alice/Team', identifier: 'bob@example.org', rights: 'lr', expectedRevision: 0, actor: '' });
    // Its first domain is refused while it names such a user, and accepted once it no longer does.
    const refused = await codeOf(admin.directory.addTenantDomain({ tenant: 'u-plain', domain: 'u-plain.test' }));
    expect(refused.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(refused.details).toMatch(/bob@example\.org/);
    await admin.directory.setGroupMembers({ tenant: 'u-plain', name: 'g', members: ['x@y.test'], expectedRevision: 0 });
    await admin.acl.deleteAcl({ tenant: 'u-plain', mailbox: 'alice/Team', identifier: 'bob@example.org', expectedRevision: 0, actor: '' });
    expect((await codeOf(admin.directory.addTenantDomain({ tenant: 'u-plain', domain: 'u-plain.test' }))).details).toMatch(/x@y\.test/);
    await admin.directory.deleteGroup({ tenant: 'u-plain', name: 'g', expectedRevision: 0 });
    expect((await admin.directory.addTenantDomain({ tenant: 'u-plain', domain: 'u-plain.test' })).domains).toEqual(['u-plain.test']);
  });
});

describe('login domains from the CLI (README examples)', () => {
  const env = (): Record<string, string> => ({ MAILSHARE_ADDR: server.address, MAILSHARE_TOKEN: server.adminToken, XDG_CONFIG_HOME: dir.path });
  const ms = (...args: string[]) => runCli(args, { env: env(), cwd: dir.path });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await ms(...args);
    expect(r.stderr, `mailshare ${args.join(' ')}`).toBe('');
    expect(r.code).toBe(0);
    return r.stdout;
  };

  it('create --domain, domain add|remove|list, get and -o json', async () => {
    expect(await ok('tenant', 'create', 'c-acme', '--domain', 'c-acme.test')).toMatch(/^domains:\s+c-acme\.test$/m);
    expect(await ok('tenant', 'domain', 'add', 'c-acme', 'mail.c-acme.test')).toMatch(/^domains:\s+c-acme\.test, mail\.c-acme\.test$/m);
    expect(await ok('tenant', 'domain', 'list', 'c-acme')).toBe('c-acme.test\nmail.c-acme.test\n');
    expect(JSON.parse(await ok('tenant', 'domain', 'list', 'c-acme', '-o', 'json'))).toEqual({ tenant: 'c-acme', domains: ['c-acme.test', 'mail.c-acme.test'] });
    expect(JSON.parse(await ok('tenant', 'get', 'c-acme', '-o', 'json')).domains).toEqual(['c-acme.test', 'mail.c-acme.test']);
    expect(await ok('tenant', 'domain', 'remove', 'c-acme', 'mail.c-acme.test')).toMatch(/^domains:\s+c-acme\.test$/m);
    expect(await ok('tenant', 'list')).toMatch(/^c-acme\s+c-acme\.test\s+true\s+50\s/m);
    // Refusals: exit code not 0, one line on stderr, nothing changed.
    await ok('tenant', 'create', 'c-globex');
    const taken = await ms('tenant', 'domain', 'add', 'c-globex', 'c-acme.test');
    expect(taken.code).not.toBe(0);
    expect(taken.stderr.trim().split('\n')).toHaveLength(1);
    expect(taken.stderr).toMatch(/c-acme\.test.*c-acme/);
    const bad = await ms('tenant', 'domain', 'add', 'c-globex', 'no_good');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^mailshare: INVALID_ARGUMENT: domain: /);
    expect(await ok('tenant', 'domain', 'list', 'c-globex')).toBe('');
  });
});
