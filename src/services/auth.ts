import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import type { Role } from '../domain/role.js';
import { formatToken, parseToken } from '../domain/token.js';
import type { TokenStore } from '../store/token-store.js';

/** Who is calling: the token they presented and the role it carries. */
export interface Principal {
  readonly tokenId: string;
  readonly role: Role;
}

export interface MintedToken {
  readonly id: string;
  /** The full bearer string handed to the user once. */
  readonly token: string;
  readonly secretHash: string;
}

/**
 * Secrets are 32 random bytes, so a single SHA-256 is enough to store them
 * safely (no dictionary to defend against, unlike passwords).
 */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function mintToken(): MintedToken {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, token: formatToken(id, secret), secretHash: hashSecret(secret) };
}

const UNAUTH_MISSING = 'missing bearer token (metadata "authorization: Bearer <token>")';
const UNAUTH_INVALID = 'invalid bearer token';

export class Authenticator {
  constructor(private readonly tokens: TokenStore) {}

  /** Resolves the caller's principal or throws unauthenticated. */
  async authenticate(metadata: Metadata): Promise<Principal> {
    const values = metadata.get('authorization');
    if (values.length === 0) throw new DomainError('unauthenticated', UNAUTH_MISSING);
    if (values.length > 1) throw new DomainError('unauthenticated', 'more than one authorization header');
    const header = String(values[0]);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new DomainError('unauthenticated', UNAUTH_MISSING);
    let parsed;
    try {
      parsed = parseToken(m[1]!);
    } catch {
      throw new DomainError('unauthenticated', UNAUTH_INVALID);
    }
    const rec = await this.tokens.lookup(parsed.id);
    const presented = Buffer.from(hashSecret(parsed.secret), 'hex');
    // Compare even when the id is unknown, so timing does not reveal valid ids.
    const stored = Buffer.from(rec?.secretHash ?? '0'.repeat(64), 'hex');
    if (!timingSafeEqual(presented, stored) || !rec) throw new DomainError('unauthenticated', UNAUTH_INVALID);
    return { tokenId: rec.id, role: rec.role };
  }
}
