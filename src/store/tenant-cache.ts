import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { type TenantRecord, decodeTenant } from './directory-store.js';
import type { Keys } from './keys.js';
import { type PrefixCache, createPrefixCache } from './prefix-cache.js';

/**
 * Every tenant's record, watch-fed: which tenant owns a domain, and a
 * tenant's primary (first) domain, without an etcd read (the route
 * endpoint answers from here); and the record with its revision, which a
 * write guarded by the tenant's revision can start from (a stale one fails
 * the guard, and the retry reads etcd).
 */
export class TenantCache {
  private readonly tenants: PrefixCache<TenantRecord>;
  private readonly owners = new Map<string, string>();

  constructor(client: Etcd3, private readonly keys: Keys, logger: Logger) {
    this.tenants = createPrefixCache<TenantRecord>({
      client,
      prefix: keys.tenantsPrefix,
      logger,
      decode: (key, value, meta) => decodeTenant(keys.tenantFromKey(key), value, meta.modRevision),
      onReset: () => this.owners.clear(),
      onChange: (key, before, after) => {
        const id = keys.tenantFromKey(key);
        for (const d of before?.domains ?? []) if (this.owners.get(d) === id) this.owners.delete(d);
        for (const d of after?.domains ?? []) this.owners.set(d, id);
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
    const t = this.tenants.get(this.keys.tenant(id));
    return { exists: t !== undefined, primary: t?.domains[0] };
  }

  /** The tenant's record as the watch last delivered it (undefined: unknown here, which may be only not yet). */
  record(id: string): TenantRecord | undefined {
    return this.tenants.get(this.keys.tenant(id));
  }

  close(): Promise<void> {
    return this.tenants.close();
  }
}
