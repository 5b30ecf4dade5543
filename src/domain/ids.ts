import { invalidArgument } from './errors.js';

/**
 * Tenant ids: 1–63 characters of lowercase ASCII letters, digits, '.', '_'
 * and '-', starting with a letter or digit. They appear in etcd keys and in
 * role strings ("tenant-admin:<tenant>"), so the charset excludes '/' and ':'.
 */
export const TENANT_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function parseTenantId(value: string, field = 'tenant'): string {
  if (value.length === 0) throw invalidArgument(field, 'must not be empty');
  if (!TENANT_ID_PATTERN.test(value)) {
    throw invalidArgument(
      field,
      `"${printable(value)}" is not a tenant id (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`,
    );
  }
  return value;
}

/**
 * User ids (IMAP login names inside a tenant): 1–128 characters of lowercase
 * ASCII letters, digits and . _ - + @, starting with a letter or digit. The
 * words anyone, authenticated and anonymous are reserved identifiers.
 */
export const USER_ID_PATTERN = /^[a-z0-9][a-z0-9._+@-]{0,127}$/;

/**
 * Login domains (users log in as user@domain): DNS names of at least two
 * labels, each 1-63 of a-z 0-9 - (not starting or ending with -), at most
 * 253 characters; compared in lower case.
 */
const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export function parseDomain(value: string, field = 'domain'): string {
  const d = value.toLowerCase();
  if (d.length === 0) throw invalidArgument(field, 'must not be empty');
  const labels = d.split('.');
  if (d.length > 253 || labels.length < 2 || !labels.every((l) => DOMAIN_LABEL.test(l))) {
    throw invalidArgument(field, `"${printable(value)}" is not a domain name (labels of a-z 0-9 -, separated by dots, e.g. acme.example)`);
  }
  return d;
}

/** Group names: the same charset and length as tenant ids. */
export const GROUP_NAME_PATTERN = TENANT_ID_PATTERN;

export function parseUserId(value: string, field = 'user'): string {
  if (value.length === 0) throw invalidArgument(field, 'must not be empty');
  if (!USER_ID_PATTERN.test(value) || ['anyone', 'authenticated', 'anonymous'].includes(value)) {
    throw invalidArgument(field, `"${printable(value)}" is not a user id (1-128 of a-z 0-9 . _ - + @, starting with a letter or digit; not a reserved word)`);
  }
  return value;
}

export function parseGroupName(value: string, field = 'group'): string {
  if (value.length === 0) throw invalidArgument(field, 'must not be empty');
  if (!GROUP_NAME_PATTERN.test(value)) {
    throw invalidArgument(field, `"${printable(value)}" is not a group name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`);
  }
  return value;
}

/** Renders untrusted input safely inside an error message. */
export function printable(value: string, max = 80): string {
  // eslint-disable-next-line no-control-regex
  const cleaned = value.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return cleaned.length > max ? `${cleaned.slice(0, max)}…` : cleaned;
}
