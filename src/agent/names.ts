import type { Agent } from './agent.js';

/** Whom a login (or a mail recipient) names, resolved from the agent's memory. */
export interface NamedUser {
  /** undefined: no tenant owns the domain (or the name has none and there is no default tenant). */
  readonly tenant: string | undefined;
  /** The user id in the tenant: the local part. */
  readonly user: string;
  /** The same user as Dovecot knows them (user@primary for a tenant with login domains). */
  readonly dovecotUser: string;
}

/**
 * user@domain goes to the tenant that owns the domain, the local part is the
 * user id; a name without a domain goes to the default tenant. In a tenant
 * with domains user ids hold no "@": such a name is nobody's.
 */
export function resolveName(agent: Agent, defaultTenant: string | undefined, name: string): NamedUser {
  const at = name.lastIndexOf('@');
  const domain = at >= 0 ? name.slice(at + 1).toLowerCase() : undefined;
  const local = at >= 0 ? name.slice(0, at) : name;
  const tenant = domain !== undefined ? agent.tenantOfDomain(domain) : defaultTenant;
  const known = domain !== undefined && local.includes('@') ? undefined : tenant;
  return { tenant: known, user: local, dovecotUser: known === undefined ? local : dovecotName(agent, known, local) };
}

/**
 * A user's name at Dovecot: user@primary for a tenant with login domains
 * (its first), the bare user id for one without (a stock multi-domain
 * Dovecot needs no change).
 */
export function dovecotName(agent: Agent, tenant: string, user: string): string {
  const primary = agent.domainsOf(tenant)[0];
  return primary === undefined ? user : `${user}@${primary}`;
}
