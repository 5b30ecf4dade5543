/**
 * The one error type that crosses layers. The store translates etcd failures
 * into it once; services map it to a gRPC status through one table
 * (services/status.ts); the CLI prints its message on one line.
 */
export type DomainErrorCode =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'unauthenticated'
  | 'conflict'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'out_of_range'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'cancelled'
  | 'internal';

export interface DomainErrorOptions {
  /** The request field the error is about, e.g. "role" or "tls.cert". */
  field?: string;
  /** True when the same call may succeed if simply retried later. */
  retryable?: boolean;
  cause?: unknown;
}

export class DomainError extends Error {
  override readonly name = 'DomainError';
  readonly code: DomainErrorCode;
  readonly field: string | undefined;
  readonly retryable: boolean;

  constructor(code: DomainErrorCode, message: string, options: DomainErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options.field;
    this.retryable = options.retryable ?? (code === 'unavailable' || code === 'deadline_exceeded');
  }
}

export function invalidArgument(field: string, message: string): DomainError {
  return new DomainError('invalid_argument', `${field}: ${message}`, { field });
}

export function isDomainError(err: unknown): err is DomainError {
  return err instanceof DomainError;
}
