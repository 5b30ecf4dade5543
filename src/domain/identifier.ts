import { DomainError } from './errors.js';
import { GROUP_NAME_PATTERN, USER_ID_PATTERN, printable } from './ids.js';

/**
 * RFC 4314 §2 identifiers as mailshare defines them inside a tenant:
 *   alice            a user of the tenant
 *   anyone           every identity (RFC 4314 §2)
 *   authenticated    every logged-in user of the tenant
 *   group:NAME       every member of the tenant's group NAME
 * and "-" before any of them for negative rights.
 */
export type Principal =
  | { readonly kind: 'user'; readonly name: string }
  | { readonly kind: 'anyone' }
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'group'; readonly name: string };

export interface Identifier {
  readonly negative: boolean;
  readonly principal: Principal;
}

export const RESERVED_USER_IDS = new Set(['anyone', 'authenticated', 'anonymous']);

export function parseIdentifier(text: string, field = 'identifier'): Identifier {
  const negative = text.startsWith('-');
  const body = negative ? text.slice(1) : text;
  return { negative, principal: parsePrincipal(body, field) };
}

export function parsePrincipal(body: string, field = 'identifier'): Principal {
  if (body === '') throw new DomainError('invalid_argument', `${field}: must not be empty`, { field });
  if (body === 'anyone') return { kind: 'anyone' };
  if (body === 'authenticated') return { kind: 'authenticated' };
  if (body.startsWith('group:')) {
    const name = body.slice('group:'.length);
    if (!GROUP_NAME_PATTERN.test(name)) {
      throw new DomainError('invalid_argument', `${field}: "${printable(body)}" is not a group identifier (group:NAME, NAME 1-63 of a-z 0-9 . _ -)`, { field });
    }
    return { kind: 'group', name };
  }
  if (!USER_ID_PATTERN.test(body) || RESERVED_USER_IDS.has(body)) {
    throw new DomainError(
      'invalid_argument',
      `${field}: "${printable(body)}" is not an identifier (a user id, anyone, authenticated, group:NAME, or one of them after "-")`,
      { field },
    );
  }
  return { kind: 'user', name: body };
}

export function formatPrincipal(p: Principal): string {
  switch (p.kind) {
    case 'user':
      return p.name;
    case 'group':
      return `group:${p.name}`;
    default:
      return p.kind;
  }
}

export function formatIdentifier(id: Identifier): string {
  return (id.negative ? '-' : '') + formatPrincipal(id.principal);
}

