import { readFileSync } from 'node:fs';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { InvalidArgumentError } from 'commander';
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
