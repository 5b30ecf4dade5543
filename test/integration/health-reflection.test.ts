import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer, loadSync } from '@grpc/proto-loader';
import { fromBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from '../harness/grpc.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { waitFor } from '../harness/process.js';
import { startInProcessServer, type InProcessServer } from '../harness/server.js';

const require = createRequire(import.meta.url);

type Ctor = new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, (...a: unknown[]) => unknown>;

function load(file: string, includeDir: string, service: string): Ctor {
  const def = loadSync(file, { includeDirs: [includeDir], keepCase: true, longs: String, enums: String, defaults: true });
  let obj: unknown = grpc.loadPackageDefinition(def);
  for (const part of service.split('.')) obj = (obj as Record<string, unknown>)[part];
  return obj as Ctor;
}

const healthDir = path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto');
const HealthClient = load(path.join(healthDir, 'health/v1/health.proto'), healthDir, 'grpc.health.v1.Health');
const reflDir = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
const ReflectionClient = load(path.join(reflDir, 'grpc/reflection/v1/reflection.proto'), reflDir, 'grpc.reflection.v1.ServerReflection');

let etcd: EtcdCluster;
let server: InProcessServer;

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
});
afterAll(async () => {
  await server?.stop();
  await etcd?.stop();
});

function healthCheck(service: string): Promise<string> {
  const c = new HealthClient(server.address, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    (c.Check as (req: unknown, opts: unknown, cb: (e: grpc.ServiceError | null, r: { status: string }) => void) => void)(
      { service },
      { deadline: Date.now() + 5000 },
      (err, res) => {
        c.close();
        if (err) reject(err);
        else resolve(res.status);
      },
    );
  });
}

function reflect(token: string | undefined, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  const c = new ReflectionClient(server.address, grpc.credentials.createInsecure());
  const stream = (c.ServerReflectionInfo as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, Record<string, unknown>>)(bearer(token));
  return new Promise((resolve, reject) => {
    stream.on('data', (res) => {
      resolve(res);
      stream.end();
    });
    stream.on('error', (err) => reject(err));
    stream.on('end', () => c.close());
    stream.write(request);
  });
}

describe('standard services', () => {
  it('answers grpc.health.v1 without a token, for the server and each service', async () => {
    expect(await healthCheck('')).toBe('SERVING');
    expect(await healthCheck('mailshare.v1.SystemService')).toBe('SERVING');
    expect(await healthCheck('mailshare.v1.AuthService')).toBe('SERVING');
    await expect(healthCheck('no.such.Service')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('serves reflection (v1) listing every service, to authenticated callers only', async () => {
    const res = await reflect(server.adminToken, { list_services: '' });
    const names = ((res.list_services_response as { service: Array<{ name: string }> }).service).map((s) => s.name).sort();
    expect(names).toEqual(expect.arrayContaining(['grpc.health.v1.Health', 'mailshare.v1.AuthService', 'mailshare.v1.SystemService']));

    const file = await reflect(server.adminToken, { file_containing_symbol: 'mailshare.v1.SystemService' });
    const protos = (file.file_descriptor_response as { file_descriptor_proto: Buffer[] }).file_descriptor_proto;
    expect(protos.length).toBeGreaterThan(0);
    expect(Buffer.concat(protos).toString('latin1')).toContain('GetStatus');

    await expect(reflect(undefined, { list_services: '' })).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it('describes every service in its real .proto files: a client built from reflection alone calls a method of each', async () => {
    const token = server.adminToken;
    const services = ((await reflect(token, { list_services: '' })).list_services_response as { service: Array<{ name: string }> }).service.map((x) => x.name).sort();
    expect(services).toEqual([
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
      'mailshare.v1.AclService',
      'mailshare.v1.AuditService',
      'mailshare.v1.AuthService',
      'mailshare.v1.DirectoryService',
      'mailshare.v1.EventService',
      'mailshare.v1.MailboxService',
      'mailshare.v1.PlacementService',
      'mailshare.v1.SystemService',
    ]);
    // As grpcurl does: the file of each service, then each import by file name, until none is missing.
    const files = new Map<string, Uint8Array>();
    const take = (res: Record<string, unknown>): void => {
      for (const bytes of (res.file_descriptor_response as { file_descriptor_proto: Buffer[] }).file_descriptor_proto) files.set(fromBinary(FileDescriptorProtoSchema, bytes).name, bytes);
    };
    for (const name of services) take(await reflect(token, { file_containing_symbol: name }));
    for (;;) {
      const missing = [...files.values()].flatMap((b) => fromBinary(FileDescriptorProtoSchema, b).dependency).filter((d) => !files.has(d));
      if (missing.length === 0) break;
      take(await reflect(token, { file_by_filename: missing[0]! }));
    }
    // One file per .proto, named as in proto/, with their imports.
    expect([...files.keys()].sort()).toEqual([
      'google/protobuf/timestamp.proto',
      'grpc/reflection/v1/reflection.proto',
      'grpc/reflection/v1alpha/reflection.proto',
      'health/v1/health.proto',
      'mailshare/v1/acl.proto',
      'mailshare/v1/audit.proto',
      'mailshare/v1/auth.proto',
      'mailshare/v1/directory.proto',
      'mailshare/v1/events.proto',
      'mailshare/v1/mailbox.proto',
      'mailshare/v1/placement.proto',
      'mailshare/v1/system.proto',
    ]);
    expect(await reflect(token, { file_containing_symbol: 'mailshare.v1.PlacementService.Locate' })).toHaveProperty('file_descriptor_response');
    expect(await reflect(token, { file_containing_symbol: 'mailshare.v1.Node.addresses' })).toHaveProperty('file_descriptor_response');
    expect((await reflect(token, { file_containing_symbol: 'mailshare.v1.Nothing' })).error_response).toMatchObject({ error_code: grpc.status.NOT_FOUND });

    const set = new BinaryWriter();
    for (const bytes of files.values()) set.tag(1, WireType.LengthDelimited).bytes(bytes);
    const pkg = grpc.loadPackageDefinition(loadFileDescriptorSetFromBuffer(Buffer.from(set.finish()), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }));
    const client = (service: string): grpc.Client & Record<string, (...a: unknown[]) => unknown> => {
      let obj: unknown = pkg;
      for (const part of service.split('.')) obj = (obj as Record<string, unknown>)[part];
      return new (obj as Ctor)(server.address, grpc.credentials.createInsecure());
    };
    const md = bearer(token);
    const unary = (service: string, method: string, req: Record<string, unknown>): Promise<Record<string, unknown>> => {
      const c = client(service);
      return new Promise((resolve, reject) =>
        (c[method] as (r: unknown, m: grpc.Metadata, o: unknown, cb: (e: grpc.ServiceError | null, r: Record<string, unknown>) => void) => void)(req, md, { deadline: Date.now() + 5000 }, (e, r) => {
          c.close();
          if (e) reject(e);
          else resolve(r);
        }),
      );
    };
    expect(await unary('mailshare.v1.SystemService', 'GetStatus', {})).toMatchObject({ state: 'serving' });
    expect(await unary('mailshare.v1.AuthService', 'WhoAmI', {})).toMatchObject({ role: 'admin' });
    expect(await unary('mailshare.v1.DirectoryService', 'CreateTenant', { id: 'reflected', domains: [] })).toMatchObject({ id: 'reflected' });
    expect(await unary('mailshare.v1.MailboxService', 'CreateMailbox', { tenant: 'reflected', owner: 'alice', name: 'Projects' })).toMatchObject({ mailbox: 'alice/Projects' });
    expect(((await unary('mailshare.v1.AclService', 'GetAcl', { tenant: 'reflected', mailbox: 'alice/Projects' })).entries as unknown[]).length).toBe(1);
    expect(await unary('mailshare.v1.AuditService', 'ListAudit', { tenant: 'reflected' })).toHaveProperty('records');
    expect(await unary('mailshare.v1.PlacementService', 'ListNodes', {})).toHaveProperty('nodes');
    expect(await unary('grpc.health.v1.Health', 'Check', { service: '' })).toMatchObject({ status: 'SERVING' });
    // A server stream, and reflection itself through its own description (both versions).
    const snapshot = client('mailshare.v1.EventService');
    const got = await new Promise<Array<Record<string, unknown>>>((resolve, reject) => {
      const out: Array<Record<string, unknown>> = [];
      const st = (snapshot.Snapshot as (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<Record<string, unknown>>)({ kinds: ['tenant'] }, md);
      st.on('data', (m) => out.push(m)).on('end', () => resolve(out)).on('error', reject);
    });
    snapshot.close();
    expect(got.some((m) => (m.events as Array<{ tenant: string }>).some((e) => e.tenant === 'reflected'))).toBe(true);
    for (const version of ['v1', 'v1alpha']) {
      const r = client(`grpc.reflection.${version}.ServerReflection`);
      const listed = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const st = (r.ServerReflectionInfo as (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, Record<string, unknown>>)(md);
        st.on('data', (m) => {
          resolve(m);
          st.end();
        });
        st.on('error', reject);
        st.write({ list_services: '' });
      });
      r.close();
      expect((listed.list_services_response as { service: unknown[] }).service).toHaveLength(services.length);
    }
  });

  it('reports NOT_SERVING while etcd is down and SERVING again after it returns', async () => {
    const own = await startEtcd();
    const s = await startInProcessServer({ endpoints: own.endpoints });
    const check = async (): Promise<string> => {
      const c = new HealthClient(s.address, grpc.credentials.createInsecure());
      try {
        return await new Promise<string>((resolve, reject) =>
          (c.Check as (r: unknown, o: unknown, cb: (e: grpc.ServiceError | null, r: { status: string }) => void) => void)({ service: '' }, { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r.status))),
        );
      } finally {
        c.close();
      }
    };
    try {
      expect(await check()).toBe('SERVING');
      await own.members[0]!.stop();
      await waitFor(async () => (await check()) === 'NOT_SERVING', 15_000, 'NOT_SERVING');
      await own.restart(0);
      await waitFor(async () => (await check()) === 'SERVING', 20_000, 'SERVING again');
    } finally {
      await s.stop();
      await own.stop();
    }
  });
});
