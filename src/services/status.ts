import { Metadata, status, type StatusObject } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { type DomainErrorCode, DomainError } from '../domain/errors.js';

/** The one table from DomainError codes to gRPC status codes. */
const TABLE: Record<DomainErrorCode, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  permission_denied: status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  conflict: status.ABORTED,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  out_of_range: status.OUT_OF_RANGE,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  internal: status.INTERNAL,
};

export type GrpcError = Partial<StatusObject> & { code: status; details: string };

/**
 * Turns any thrown value into a gRPC status. A DomainError keeps its message
 * (it was written for the caller) and names its field in trailing metadata
 * ("mailshare-field"); anything else is logged with its stack and becomes a
 * generic INTERNAL, so no internals leak to clients.
 */
export function toGrpcError(err: unknown, log: Logger): GrpcError {
  if (err instanceof DomainError && err.code !== 'internal') {
    const metadata = new Metadata();
    if (err.field) metadata.set('mailshare-field', err.field);
    if (err.retryable) metadata.set('mailshare-retryable', 'true');
    return { code: TABLE[err.code], details: err.message, metadata };
  }
  log.error({ err }, 'internal error');
  return { code: status.INTERNAL, details: 'internal error' };
}
