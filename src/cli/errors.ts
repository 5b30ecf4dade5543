import { status, type ServiceError } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';

/** An error the CLI reports as one line on stderr, exiting with `exitCode`. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && 'details' in err && 'metadata' in err;
}

/** Turns any failure into one readable line. */
export function describeError(err: unknown, addr?: string): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof DomainError) return new CliError(err.message, err.code === 'invalid_argument' ? 2 : 1);
  if (isServiceError(err)) {
    const details = err.details.split('\n')[0] ?? '';
    switch (err.code) {
      case status.UNAVAILABLE: {
        // The server itself can answer UNAVAILABLE (e.g. etcd down, no node): then say what it said.
        if (err.metadata?.get('mailshare-retryable').length) return new CliError(`UNAVAILABLE: ${details}`);
        const cause = /(connect \w+|getaddrinfo \w+|socket hang up|TLS[^.:]*|certificate[^.]*)/.exec(details)?.[0] ?? details;
        return new CliError(`cannot reach mailshare server at ${addr ?? '?'}: ${cause}`);
      }
      case status.DEADLINE_EXCEEDED:
        return new CliError(`mailshare server at ${addr ?? '?'} did not answer in time`);
      case status.UNAUTHENTICATED:
        return new CliError(`not authenticated: ${details} (set MAILSHARE_TOKEN or --credentials)`);
      default:
        return new CliError(`${status[err.code] ?? err.code}: ${details}`);
    }
  }
  return new CliError((err as Error)?.message?.split('\n')[0] ?? String(err));
}
