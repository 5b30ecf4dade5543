import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';

/** Flags every client command accepts (see addConnectionOptions). */
export interface ConnectionFlags {
  addr?: string;
  credentials?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  timeout?: string;
}

export interface Connection {
  readonly addr: string;
  readonly channelCredentials: grpc.ChannelCredentials;
  readonly callCredentials: grpc.Metadata;
  readonly options: grpc.ClientOptions;
  /** Deadline for one call, in ms. */
  readonly timeoutMs: number;
  /** Where settings came from, for error messages. */
  readonly credentialsFile: string | undefined;
}

export const DEFAULT_ADDR = '127.0.0.1:7400';

/**
 * Where the CLI looks for credentials when MAILSHARE_CREDENTIALS and
 * --credentials are not given: the embedded server's default data dir under
 * the current directory, then the user's config directory.
 */
export function defaultCredentialPaths(env: NodeJS.ProcessEnv, cwd: string): string[] {
  const home = env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config');
  return [path.join(cwd, '.mailshare', 'credentials.json'), path.join(home, 'mailshare', 'credentials.json')];
}

interface StoredCredentials {
  addr?: unknown;
  token?: unknown;
  tls?: unknown;
}

/**
 * Resolves address, token and TLS: flags > environment > credentials file >
 * defaults. The token is never a flag (it would show in `ps`).
 */
export function resolveConnection(flags: ConnectionFlags, env: NodeJS.ProcessEnv, cwd: string): Connection {
  const explicit = flags.credentials ?? env.MAILSHARE_CREDENTIALS;
  let file: string | undefined;
  let stored: StoredCredentials = {};
  const candidates = explicit ? [path.resolve(cwd, explicit)] : defaultCredentialPaths(env, cwd);
  for (const candidate of candidates) {
    let text: string;
    try {
      text = readFileSync(candidate, 'utf8');
    } catch (err) {
      if (explicit) throw new DomainError('invalid_argument', `credentials: cannot read ${candidate}: ${(err as NodeJS.ErrnoException).code}`, { field: 'credentials' });
      continue;
    }
    try {
      stored = JSON.parse(text) as StoredCredentials;
    } catch {
      throw new DomainError('invalid_argument', `credentials: ${candidate} is not valid JSON`, { field: 'credentials' });
    }
    file = candidate;
    break;
  }

  const addr = flags.addr ?? env.MAILSHARE_ADDR ?? (typeof stored.addr === 'string' ? stored.addr : undefined) ?? DEFAULT_ADDR;
  if (!/^[^\s/]+:\d{1,5}$/.test(addr)) {
    throw new DomainError('invalid_argument', `addr: "${addr}" is not host:port`, { field: 'addr' });
  }
  const token = env.MAILSHARE_TOKEN ?? (typeof stored.token === 'string' ? stored.token : undefined);
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);

  const tlsCa = flags.tlsCa ?? env.MAILSHARE_TLS_CA;
  const tlsCert = flags.tlsCert ?? env.MAILSHARE_TLS_CLIENT_CERT;
  const tlsKey = flags.tlsKey ?? env.MAILSHARE_TLS_CLIENT_KEY;
  const useTls = flags.tls === true || tlsCa !== undefined || tlsCert !== undefined || stored.tls === true;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new DomainError('invalid_argument', 'tls-cert: --tls-cert and --tls-key must be given together', { field: 'tls-cert' });
  }
  const read = (p: string, field: string): Buffer => {
    try {
      return readFileSync(path.resolve(cwd, p));
    } catch (err) {
      throw new DomainError('invalid_argument', `${field}: cannot read ${p}: ${(err as NodeJS.ErrnoException).code}`, { field });
    }
  };
  const channelCredentials = useTls
    ? grpc.credentials.createSsl(
        tlsCa ? read(tlsCa, 'tls-ca') : null,
        tlsKey ? read(tlsKey, 'tls-key') : null,
        tlsCert ? read(tlsCert, 'tls-cert') : null,
      )
    : grpc.credentials.createInsecure();

  const options: grpc.ClientOptions = {};
  if (flags.tlsServerName) options['grpc.ssl_target_name_override'] = flags.tlsServerName;

  const timeoutMs = parseTimeout(flags.timeout ?? env.MAILSHARE_TIMEOUT ?? '10s');
  return { addr, channelCredentials, callCredentials: metadata, options, timeoutMs, credentialsFile: file };
}

export function parseTimeout(value: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(value.trim());
  if (!m || Number(m[1]) === 0) throw new DomainError('invalid_argument', `timeout: "${value}" is not a duration (e.g. 500ms, 10s)`, { field: 'timeout' });
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : m[2] === 's' || m[2] === undefined ? 1000 : 1);
}

/** A generated client constructor (ts-proto grpc-js output). */
type ClientCtor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ClientOptions>) => C;

export function makeClient<C extends grpc.Client>(conn: Connection, ctor: ClientCtor<C>): C {
  return new ctor(conn.addr, conn.channelCredentials, conn.options);
}

/**
 * Calls a unary method with the connection's token and deadline, as a
 * promise. Typed on the (request, metadata, options, callback) overload.
 */
export function call<Req, Res>(
  conn: Connection,
  method: (req: Req, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(req, conn.callCredentials, { deadline: Date.now() + conn.timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}
