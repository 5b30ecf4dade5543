import { randomBytes } from 'node:crypto';
import { ExponentialBackoff, handleType, retry } from 'cockatiel';
import { DomainError } from '../domain/errors.js';

/**
 * Thrown inside a compare-and-swap attempt when the transaction's guards
 * failed because someone else wrote first: the attempt is re-run from a
 * fresh read.
 */
export class CasConflict extends Error {
  override readonly name = 'CasConflict';
}

/**
 * Re-runs a read-compute-transaction attempt while it loses races, with
 * exponential backoff and decorrelated jitter (cockatiel), so concurrent
 * writers of one record all land. Used only for changes that commute or
 * where the caller gave no expected revision.
 */
const policy = retry(handleType(CasConflict), {
  maxAttempts: 200,
  backoff: new ExponentialBackoff({ initialDelay: 1, maxDelay: 40 }),
});

export async function withCasRetry<T>(attempt: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  try {
    return await policy.execute(() => attempt(), signal);
  } catch (err) {
    if (signal?.aborted) throw new DomainError('cancelled', 'call cancelled or past its deadline', { cause: err });
    if (err instanceof CasConflict) {
      throw new DomainError('conflict', 'too many concurrent changes to the same record; try again', { retryable: true });
    }
    throw err;
  }
}

/** Fails with conflict (ABORTED) when an expected revision was given and differs. */
export function checkExpectedRevision(expected: number, actual: number, what: string): void {
  if (expected !== 0 && expected !== actual) {
    throw new DomainError('conflict', `expected_revision: ${what} is at revision ${actual}, not ${expected}`, {
      field: 'expected_revision',
    });
  }
}

/** A random id: 16 lowercase hex digits. */
export function randomId(): string {
  return randomBytes(8).toString('hex');
}

/** etcd allows 128 operations per transaction by default (--max-txn-ops). */
export const MAX_TXN_OPS = 128;
