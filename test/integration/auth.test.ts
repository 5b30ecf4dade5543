import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthServiceClient } from '../../src/gen/mailshare/v1/auth.js';
import { SystemServiceClient } from '../../src/gen/mailshare/v1/system.js';
import { createEtcdClient } from '../../src/store/etcd-client.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { codeOf, unaryCall } from '../harness/grpc.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

let etcd: EtcdCluster;
let server: InProcessServer;
let auth: AuthServiceClient;
let system: SystemServiceClient;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  auth = new AuthServiceClient(server.address, grpc.credentials.createInsecure());
  system = new SystemServiceClient(server.address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  auth?.close();
  system?.close();
  await server?.stop();
  await etcd?.stop();
});

const create = (role: string, token = server.adminToken, description = '') =>
  unaryCall(auth.createToken.bind(auth), { role, description }, token);

describe('authentication', () => {
  it('rejects calls without a token, with a malformed token, or with a wrong secret', async () => {
    const noToken = await codeOf(unaryCall(system.getStatus.bind(system), {}));
    expect(noToken.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(noToken.details).toMatch(/missing bearer token/);

    expect((await codeOf(unaryCall(system.getStatus.bind(system), {}, 'not-a-token'))).code).toBe(grpc.status.UNAUTHENTICATED);

    const real = server.adminToken;
    const forged = real.slice(0, -4) + (real.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const wrong = await codeOf(unaryCall(system.getStatus.bind(system), {}, forged));
    expect(wrong.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(wrong.details).toBe('invalid bearer token');

    const unknownId = 'mst_0000000000000000_' + real.slice(-43);
    expect((await codeOf(unaryCall(system.getStatus.bind(system), {}, unknownId))).code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('accepts the right role and refuses the wrong one', async () => {
    const node = await create('node:imap1', server.adminToken, 'backend 1');
    const tenantAdmin = await create('tenant-admin:acme');
    expect(node.token).toMatch(/^mst_[0-9a-f]{16}_/);
    expect(node.info).toMatchObject({ role: 'node:imap1', description: 'backend 1' });
    // A node token names its node: a bare "node" could act as any node.
    expect(await codeOf(create('node'))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'role' });

    // Any role may read status and ask who it is.
    for (const t of [server.adminToken, node.token, tenantAdmin.token]) {
      const st = await unaryCall(system.getStatus.bind(system), {}, t);
      expect(st.version).toBe('0.0.0-test');
    }
    expect(await unaryCall(auth.whoAmI.bind(auth), {}, node.token)).toEqual({ tokenId: node.info!.id, role: 'node:imap1' });
    expect((await unaryCall(auth.whoAmI.bind(auth), {}, tenantAdmin.token)).role).toBe('tenant-admin:acme');

    // Only admins manage tokens.
    for (const t of [node.token, tenantAdmin.token]) {
      const denied = await codeOf(create('admin', t));
      expect(denied.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(denied.details).toMatch(/may not/);
      expect((await codeOf(unaryCall(auth.listTokens.bind(auth), { pageSize: 0, pageToken: '' }, t))).code).toBe(grpc.status.PERMISSION_DENIED);
      expect((await codeOf(unaryCall(auth.revokeToken.bind(auth), { id: node.info!.id }, t))).code).toBe(grpc.status.PERMISSION_DENIED);
    }
  });

  it('stops accepting a revoked token', async () => {
    const t = await create('node:imap2:acme,beta');
    expect((await unaryCall(auth.whoAmI.bind(auth), {}, t.token)).role).toBe('node:imap2:acme,beta');
    await unaryCall(auth.revokeToken.bind(auth), { id: t.info!.id }, server.adminToken);
    await waitFor(async () => (await codeOf(unaryCall(auth.whoAmI.bind(auth), {}, t.token))).code === grpc.status.UNAUTHENTICATED, 5000, 'revocation');
    const again = await codeOf(unaryCall(auth.revokeToken.bind(auth), { id: t.info!.id }, server.adminToken));
    expect(again.code).toBe(grpc.status.NOT_FOUND);
  });

  it('rejects bad input with INVALID_ARGUMENT naming the field, and stores nothing', async () => {
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      const before = await client.getAll().prefix(server.prefix).keys();
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ role: 'root', description: '' }, 'role'],
        [{ role: 'tenant-admin:Bad/Tenant', description: '' }, 'role'],
        [{ role: '', description: '' }, 'role'],
        [{ role: 'node:n1', description: 'x'.repeat(201) }, 'description'],
        [{ role: 'node:n1', description: 'line\nbreak' }, 'description'],
      ];
      for (const [req, field] of cases) {
        const e = await codeOf(create(req.role as string, server.adminToken, req.description as string));
        expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(e.field).toBe(field);
        expect(e.details.startsWith(`${field}:`)).toBe(true);
      }
      const badId = await codeOf(unaryCall(auth.revokeToken.bind(auth), { id: 'xyz' }, server.adminToken));
      expect(badId).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'id' });
      const badPage = await codeOf(unaryCall(auth.listTokens.bind(auth), { pageSize: 5000, pageToken: '' }, server.adminToken));
      expect(badPage).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'page_size' });
      const badToken = await codeOf(unaryCall(auth.listTokens.bind(auth), { pageSize: 1, pageToken: 'Zm9v' }, server.adminToken));
      expect(badToken).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, field: 'page_token' });
      expect(await client.getAll().prefix(server.prefix).keys()).toEqual(before);
    } finally {
      client.close();
    }
  });

  it('pages through tokens without gaps or repeats', async () => {
    const made = new Set<string>();
    for (let i = 0; i < 7; i++) made.add((await create(`node:page${i}`, server.adminToken, `page ${i}`)).info!.id);
    const seen: string[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const res = await unaryCall(auth.listTokens.bind(auth), { pageSize: 3, pageToken }, server.adminToken);
      expect(res.tokens.length).toBeLessThanOrEqual(3);
      seen.push(...res.tokens.map((t) => t.id));
      pageToken = res.nextPageToken;
      pages++;
    } while (pageToken !== '');
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of made) expect(seen).toContain(id);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect([...seen].sort()).toEqual(seen);
  });

  it('stores only a hash of the secret', async () => {
    const t = await create('node:imap3');
    const client = createEtcdClient({ endpoints: etcd.endpoints });
    try {
      const all = await client.getAll().prefix(server.prefix).strings();
      const secret = t.token.split('_').slice(2).join('_');
      for (const v of Object.values(all)) expect(v).not.toContain(secret);
      expect(Object.keys(all).some((k) => k.endsWith(t.info!.id))).toBe(true);
    } finally {
      client.close();
    }
  });
});
