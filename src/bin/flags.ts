import { readFileSync } from 'node:fs';
import type { ChannelCredentials, ClientOptions } from '@grpc/grpc-js';
import { type Command, InvalidArgumentError } from 'commander';
import { DomainError } from '../domain/errors.js';

/** Flag parsers and flag-named files shared by the long-running commands (gateway, agent). */
export const hostPort = (v: string): string => {
  if (!/^[^\s/]+:\d{1,5}$/.test(v)) throw new InvalidArgumentError('must be host:port');
  return v;
};
export const positive = (v: string): number => {
  if (!/^\d{1,4}$/.test(v) || Number(v) === 0) throw new InvalidArgumentError('must be a positive whole number');
  return Number(v);
};
export const count = (v: string): number => {
  if (!/^\d{1,7}$/.test(v) || Number(v) === 0) throw new InvalidArgumentError('must be a positive whole number');
  return Number(v);
};
export const duration = (v: string): number => {
  if (v === '0') return 0;
  const m = /^(\d{1,9})(ms|s|m|h)$/.exec(v);
  if (!m) throw new InvalidArgumentError('must be a duration with its unit, e.g. 15m, 90s, or 0 (never)');
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3600_000 }[m[2]!]!;
};


/** A certificate or key file named by a flag; an unreadable one is that flag's error. */
export function readFlagFile(file: string, field: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new DomainError('invalid_argument', `${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { field });
  }
}

/** TLS to the coordinators from --coordinator-ca/-cert/-key (or their environment variables); undefined: plaintext. */
export async function coordinatorCredentials(flags: { coordinatorCa?: string; coordinatorCert?: string; coordinatorKey?: string; coordinatorServerName?: string }): Promise<ChannelCredentials | undefined> {
  const ca = flags.coordinatorCa ?? process.env.MAILSHARE_TLS_CA;
  const cert = flags.coordinatorCert ?? process.env.MAILSHARE_TLS_CLIENT_CERT;
  const key = flags.coordinatorKey ?? process.env.MAILSHARE_TLS_CLIENT_KEY;
  if ((cert === undefined) !== (key === undefined)) throw new DomainError('invalid_argument', 'coordinator-cert: give both --coordinator-cert and --coordinator-key', { field: 'coordinator-cert' });
  if (ca === undefined && cert === undefined && flags.coordinatorServerName === undefined) return undefined;
  const grpc = await import('@grpc/grpc-js');
  const optional = (file: string | undefined, field: string): Buffer | null => (file === undefined ? null : readFlagFile(file, field));
  return grpc.credentials.createSsl(optional(ca, 'coordinator-ca'), optional(key, 'coordinator-key'), optional(cert, 'coordinator-cert'));
}

/** Flags of every process that holds a node's lease (gateway, agent); see addNodeOptions. */
export interface NodeFlags {
  node: string;
  tenant?: string;
  coordinators?: string;
  weight?: number;
  zone?: string;
  ttl?: number;
  userExpire?: number;
  assignmentView?: 'all' | 'followed';
  metricsListen?: string;
  coordinatorCa?: string;
  coordinatorCert?: string;
  coordinatorKey?: string;
  coordinatorServerName?: string;
  logLevel?: string;
}

function assignmentView(value: string): 'all' | 'followed' {
  if (value !== 'all' && value !== 'followed') throw new InvalidArgumentError('give all or followed');
  return value;
}

/** The options every node process takes, after its own. */
export function addNodeOptions(cmd: Command, userExpire: string): Command {
  return cmd
    .option('--coordinators <list>', 'comma-separated coordinator addresses (env MAILSHARE_COORDINATORS; default MAILSHARE_ADDR or 127.0.0.1:7400)')
    .option('--weight <n>', 'relative capacity 1-1000 (default 100)', positive)
    .option('--zone <zone>', 'zone label')
    .option('--ttl <seconds>', 'lease TTL (default 5)', positive)
    .option('--user-expire <duration>', `${userExpire}, e.g. 15m (default 15m; 0 never)`, duration)
    .option('--assignment-view <all|followed>', "users whose assignments this node keeps: followed (its own node's and those with sessions through it) or all (default followed)", assignmentView)
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics here (plain HTTP, no token: counts only; default off)', hostPort)
    .option('--coordinator-ca <file>', "CA that signed the coordinators' certificates: talk to them over TLS (env MAILSHARE_TLS_CA)")
    .option('--coordinator-cert <file>', 'client certificate for coordinators that require one (env MAILSHARE_TLS_CLIENT_CERT)')
    .option('--coordinator-key <file>', 'private key of --coordinator-cert (env MAILSHARE_TLS_CLIENT_KEY)')
    .option('--coordinator-server-name <name>', "name expected in the coordinators' certificates")
    .option('--log-level <level>', 'trace|debug|info|warn|error|fatal|silent (default info)');
}

/** What every node process needs from its flags and environment, checked (each problem names its flag). */
export async function nodeSettings(flags: NodeFlags): Promise<{
  token: string;
  tenant: string | undefined;
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  coordinators: string[];
  credentials: ChannelCredentials | undefined;
  channelOptions: ClientOptions | undefined;
}> {
  const { parseTenantId, TENANT_ID_PATTERN } = await import('../domain/ids.js');
  const token = process.env.MAILSHARE_TOKEN;
  if (!token) throw new DomainError('invalid_argument', 'token: set MAILSHARE_TOKEN to a token with role node', { field: 'token' });
  if (!TENANT_ID_PATTERN.test(flags.node)) throw new DomainError('invalid_argument', `node: "${flags.node}" is not a node name`, { field: 'node' });
  const tenant = flags.tenant === undefined ? undefined : parseTenantId(flags.tenant, 'tenant');
  const level = flags.logLevel ?? 'info';
  if (!(LEVELS as readonly string[]).includes(level)) throw new DomainError('invalid_argument', `log-level: "${level}" is not a log level`, { field: 'log-level' });
  const coordinators = (flags.coordinators ?? process.env.MAILSHARE_COORDINATORS ?? process.env.MAILSHARE_ADDR ?? '127.0.0.1:7400').split(',').map((s) => s.trim()).filter(Boolean);
  return {
    token,
    tenant,
    level: level as (typeof LEVELS)[number],
    coordinators,
    credentials: await coordinatorCredentials(flags),
    channelOptions: flags.coordinatorServerName ? { 'grpc.ssl_target_name_override': flags.coordinatorServerName } : undefined,
  };
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
