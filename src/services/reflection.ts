import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';

/** Finds the shipped proto/ directory (same depth from src/ and dist/). */
export function protoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'proto');
    if (existsSync(path.join(candidate, 'mailshare', 'v1'))) return candidate;
    dir = path.dirname(dir);
  }
  throw new Error('proto/ directory not found next to the mailshare installation');
}

/**
 * Server reflection (grpc.reflection.v1 and v1alpha) over every service we
 * serve, including grpc.health.v1, so grpcurl and grpcui work without
 * local .proto files.
 */
export function createReflection(): ReflectionService {
  const root = protoRoot();
  const require = createRequire(import.meta.url);
  const healthProto = path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto', 'health', 'v1', 'health.proto');
  const files = readdirSync(path.join(root, 'mailshare', 'v1'))
    .filter((f) => f.endsWith('.proto'))
    .sort()
    .map((f) => `mailshare/v1/${f}`);
  const pkg = loadSync([...files, healthProto], {
    includeDirs: [root, path.dirname(path.dirname(path.dirname(healthProto)))],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return new ReflectionService(pkg);
}
