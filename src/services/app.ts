import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/server-config.js';
import { DomainError } from '../domain/errors.js';
import { parseToken } from '../domain/token.js';
import { createEtcdClient } from '../store/etcd-client.js';
import { type EtcdMember, isPortFree, spawnEtcdMember } from '../store/etcd-process.js';
import { createKeys } from '../store/keys.js';
import { TokenStore } from '../store/token-store.js';
import { hashSecret, mintToken } from './auth.js';
import { Coordinator } from './coordinator.js';
import { CoordinatorMetrics } from './coordinator-metrics.js';

/** What the CLI reads to reach a server without copying secrets around. */
export interface CredentialsFile {
  addr: string;
  token: string;
  /** True when the server speaks TLS; the CLI then needs a CA (--tls-ca). */
  tls: boolean;
}

export interface RunningServer {
  readonly address: string;
  /** The HTTP listener (/metrics), when configured. */
  readonly httpAddress: string | undefined;
  readonly credentialsFile: string | undefined;
  readonly etcdEndpoints: readonly string[];
  readonly embeddedEtcd: EtcdMember | undefined;
  readonly coordinator: Coordinator;
  /** gRPC first (graceful), then the etcd client, then the embedded etcd. */
  shutdown(): Promise<void>;
}

/**
 * Starts a complete `mailshare server`: the embedded etcd when no endpoints
 * are configured, the etcd client, the token cache, the bootstrap
 * credentials and the gRPC coordinator. If any step fails, everything
 * already started is stopped again before the error propagates, so a failed
 * start never leaves an etcd child behind.
 */
export async function startServer(config: ServerConfig, logger: Logger, version: string): Promise<RunningServer> {
  const cleanups: Array<() => Promise<void> | void> = [];
  const cleanup = async (): Promise<void> => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        logger.warn({ err }, 'cleanup step failed');
      }
    }
  };

  try {
    let member: EtcdMember | undefined;
    let endpoints = config.etcd.endpoints;
    if (endpoints.length === 0) {
      member = await startEmbeddedEtcd(config, logger);
      const m = member;
      cleanups.push(async () => {
        logger.info({ etcdPid: m.pid }, "stopping embedded etcd");
        await m.stop(10_000);
      });
      endpoints = [member.clientUrl];
    }

    const metrics = new CoordinatorMetrics();
    const client = createEtcdClient({ endpoints, interceptors: [metrics.etcdInterceptor] });
    cleanups.push(() => client.close());
    // The event streams' watches on a connection of their own (see CoordinatorOptions.eventsClient).
    const eventsClient = createEtcdClient({ endpoints, interceptors: [metrics.etcdInterceptor] });
    cleanups.push(() => eventsClient.close());
    const keys = createKeys(config.etcd.prefix);
    const tokens = new TokenStore(client, keys, logger);
    cleanups.push(() => tokens.close());
    await withTimeout(tokens.startCache(), 15_000, `cannot reach etcd at ${endpoints.join(',')}`);

    const coordinator = new Coordinator({
      listen: config.listen,
      tls: config.tls.cert && config.tls.key ? { cert: config.tls.cert, key: config.tls.key, clientCa: config.tls.clientCa } : undefined,
      client,
      eventsClient,
      endpoints,
      keys,
      tokens,
      logger,
      version,
      embeddedEtcd: member !== undefined,
      auditRetentionMs: config.auditRetentionMs,
      placementEpsilon: config.placementEpsilon,
      placementAllowedAddresses: config.placementAllowedAddresses,
      eventsBufferLimit: config.eventsBufferLimit,
      snapshotCopy: config.eventsSnapshotCopy,
      sharedWatch: config.eventsSharedWatch,
      httpListen: config.http.listen,
      metrics,
    });
    cleanups.push(() => coordinator.shutdown(config.shutdownTimeoutMs));
    const address = await coordinator.start();

    const credentialsFile = await ensureCredentials(config, tokens, address, member !== undefined, logger);

    let stopped: Promise<void> | undefined;
    return {
      address,
      httpAddress: coordinator.httpAddress(),
      credentialsFile,
      etcdEndpoints: endpoints,
      embeddedEtcd: member,
      coordinator,
      shutdown: () => (stopped ??= cleanup()),
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

interface EmbeddedState {
  clientPort: number;
  peerPort: number;
}

/**
 * The embedded etcd keeps its ports across restarts when they are still
 * free (written to <dataDir>/embedded-etcd.json), so tools that saw the
 * endpoint once keep working; otherwise it picks new free loopback ports.
 */
async function startEmbeddedEtcd(config: ServerConfig, logger: Logger): Promise<EtcdMember> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const stateFile = path.join(config.dataDir, 'embedded-etcd.json');
  let saved: EmbeddedState | undefined;
  try {
    saved = JSON.parse(readFileSync(stateFile, 'utf8')) as EmbeddedState;
  } catch {
    saved = undefined;
  }
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    let clientPort = 0;
    let peerPort = 0;
    if (attempt === 0 && saved && (await isPortFree(saved.clientPort)) && (await isPortFree(saved.peerPort))) {
      clientPort = saved.clientPort;
      peerPort = saved.peerPort;
    }
    try {
      logger.info({ dataDir: config.dataDir }, 'starting embedded etcd');
      const member = await spawnEtcdMember({
        binary: config.etcdBinary,
        name: 'mailshare',
        dataDir: path.join(config.dataDir, 'etcd'),
        logFile: path.join(config.dataDir, 'etcd.log'),
        clientPort,
        peerPort,
      });
      writeAtomic(stateFile, JSON.stringify({ clientPort: member.clientPort, peerPort: member.peerPort }) + '\n');
      logger.info({ etcdPid: member.pid, endpoint: member.clientUrl }, 'embedded etcd ready');
      return member;
    } catch (err) {
      lastErr = err;
      // A spawn failure (binary missing) will not improve by retrying.
      if (err instanceof DomainError && err.message.startsWith('cannot start etcd')) break;
      logger.warn({ err: (err as Error).message, attempt }, 'embedded etcd failed to start; retrying on new ports');
    }
  }
  throw lastErr;
}

async function ensureCredentials(
  config: ServerConfig,
  tokens: TokenStore,
  address: string,
  embedded: boolean,
  logger: Logger,
): Promise<string | undefined> {
  const file = config.credentialsFile;
  const tls = config.tls.cert !== undefined;
  const existing = readCredentials(file);
  if (existing) {
    const rec = await tokens.get(existing.parsed.id);
    if (rec && rec.secretHash === hashSecret(existing.parsed.secret) && rec.role.kind === 'admin') {
      writeCredentials(file, { addr: address, token: existing.creds.token, tls });
      return file;
    }
  }
  const minted = mintToken();
  const rec = {
    id: minted.id,
    role: { kind: 'admin' } as const,
    secretHash: minted.secretHash,
    description: 'bootstrap admin token',
    createdAt: new Date(),
    createdBy: 'bootstrap',
  };
  const created = embedded ? await tokens.replaceBootstrap(rec) : await tokens.createBootstrap(rec);
  if (!created) {
    logger.info(
      { credentialsFile: file },
      'etcd already has a bootstrap admin token; not writing credentials (ask an admin: mailshare token create --role admin)',
    );
    return undefined;
  }
  writeCredentials(file, { addr: address, token: minted.token, tls });
  logger.info({ credentialsFile: file, token: created.id }, 'bootstrap admin token written');
  return file;
}

function readCredentials(file: string): { creds: CredentialsFile; parsed: { id: string; secret: string } } | undefined {
  try {
    const creds = JSON.parse(readFileSync(file, 'utf8')) as CredentialsFile;
    return { creds, parsed: parseToken(String(creds.token)) };
  } catch {
    return undefined;
  }
}

function writeCredentials(file: string, creds: CredentialsFile): void {
  writeAtomic(file, JSON.stringify(creds, null, 2) + '\n');
}

/** Write to a temporary file (mode 0600) and rename: readers never see half a file. */
function writeAtomic(file: string, content: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode: 0o600 });
  renameSync(tmp, file);
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DomainError('unavailable', message)), ms);
      }),
    ]);
  } catch (err) {
    if (err instanceof DomainError) throw err;
    throw new DomainError('unavailable', `${message}: ${(err as Error).message}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

