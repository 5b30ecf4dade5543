import { DomainError, invalidArgument } from './errors.js';

/**
 * Bearer token format: "mst_" + 16 hex digits of public id + "_" + 43
 * base64url characters of secret (32 random bytes). The id addresses the
 * stored record; only a hash of the secret is stored.
 */
export const TOKEN_ID_PATTERN = /^[0-9a-f]{16}$/;
const TOKEN_PATTERN = /^mst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface ParsedToken {
  readonly id: string;
  readonly secret: string;
}

export function formatToken(id: string, secret: string): string {
  return `mst_${id}_${secret}`;
}

/** Parses a presented bearer secret; any malformation is unauthenticated. */
export function parseToken(value: string): ParsedToken {
  const m = TOKEN_PATTERN.exec(value);
  if (!m) throw new DomainError('unauthenticated', 'malformed bearer token');
  return { id: m[1]!, secret: m[2]! };
}

export function parseTokenId(value: string, field = 'id'): string {
  if (!TOKEN_ID_PATTERN.test(value)) throw invalidArgument(field, 'must be 16 lowercase hex digits');
  return value;
}

export const TOKEN_DESCRIPTION_MAX = 200;

export function parseTokenDescription(value: string, field = 'description'): string {
  if ([...value].length > TOKEN_DESCRIPTION_MAX) {
    throw invalidArgument(field, `must be at most ${TOKEN_DESCRIPTION_MAX} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalidArgument(field, 'must not contain control characters');
  return value;
}
