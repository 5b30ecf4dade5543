import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
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
