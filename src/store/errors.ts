import { DomainError } from '../domain/errors.js';

/**
 * Translates a failure of the etcd client into a DomainError, once, here.
 * Connection-level failures are `unavailable` (retryable); deadline misses
 * are `deadline_exceeded`; anything else is `internal`.
 */
export function fromEtcdError(err: unknown, what: string): DomainError {
  if (err instanceof DomainError) return err;
  const e = err as { name?: string; message?: string; code?: number };
  const name = e?.name ?? '';
  const message = e?.message ?? String(err);
  if (
    name === 'BrokenCircuitError' ||
    name === 'GRPCConnectFailedError' ||
    name === 'GRPCUnavailableError' ||
    name === 'EtcdNoLeaderError' ||
    /unavailable|ECONNREFUSED|No connection established|circuit/i.test(message)
  ) {
    return new DomainError('unavailable', `etcd unavailable while ${what}`, { cause: err, retryable: true });
  }
  if (name === 'GRPCDeadlineExceededError' || /deadline exceeded/i.test(message)) {
    return new DomainError('deadline_exceeded', `etcd did not answer in time while ${what}`, { cause: err });
  }
  if (name === 'GRPCCancelledError' || /cancelled/i.test(message)) {
    return new DomainError('cancelled', `cancelled while ${what}`, { cause: err });
  }
  return new DomainError('internal', `etcd error while ${what}`, { cause: err });
}

/** Runs an etcd operation and translates its failure. */
export async function etcdOp<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw fromEtcdError(err, what);
  }
}
