import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { decodeTenant } from './directory-store.js';
import type { Keys } from './keys.js';
import { type PrefixCache, createPrefixCache } from './prefix-cache.js';

/**
 * Every tenant's login domains, watch-fed: which tenant owns a domain, and
 * a tenant's primary (first) domain, without an etcd read (the route
 * endpoint answers from here).
 */
export class TenantCache {
  private readonly tenants: PrefixCache<readonly string[]>;
  private readonly owners = new Map<string, string>();

  constructor(client: Etcd3, private readonly keys: Keys, logger: Logger) {
    this.tenants = createPrefixCache<readonly string[]>({
      client,
      prefix: keys.tenantsPrefix,
      logger,
      decode: (key, value) => decodeTenant(keys.tenantFromKey(key), value, 0)?.domains,
      onReset: () => this.owners.clear(),
      onChange: (key, before, after) => {
        const id = keys.tenantFromKey(key);
        for (const d of before ?? []) if (this.owners.get(d) === id) this.owners.delete(d);
        for (const d of after ?? []) this.owners.set(d, id);
      },
    });
  }

  get ready(): Promise<void> {
    return this.tenants.ready;
  }

  /** The tenant that owns a (lower-case) login domain. */
  tenantOfDomain(domain: string): string | undefined {
    return this.owners.get(domain);
  }

  /** Whether the tenant exists, and its primary domain (undefined: it has none). */
  tenant(id: string): { exists: boolean; primary: string | undefined } {
    const domains = this.tenants.get(this.keys.tenant(id));
    return { exists: domains !== undefined, primary: domains?.[0] };
  }

  close(): Promise<void> {
    return this.tenants.close();
  }
}
