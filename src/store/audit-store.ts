import type { Etcd3, PutBuilder } from 'etcd3';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';
import { randomId } from './cas.js';

/** One audited change, as written in the same transaction as the change. */
export interface AuditEntry {
  tenant: string;
  /** Role and token of the caller. */
  who: string;
  /** The user a node acted for; "" for administrative calls. */
  actor: string;
  action: string;
  target: string;
  identifier?: string;
  before?: string;
  after?: string;
}

export interface AuditRecord extends Required<AuditEntry> {
  time: Date;
  revision: number;
}

/** Who did it, passed from services down to every audited store write. */
export interface AuditContext {
  who: string;
  actor: string;
  /** The call's cancellation: retry loops stop when it fires. */
  signal?: AbortSignal;
}

export class AuditStore {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
  ) {}

  /** The puts that record an entry; callers add them to their transaction. */
  ops(entry: AuditEntry & { signal?: AbortSignal }, time = new Date()): PutBuilder[] {
    const { signal: _signal, ...fields } = entry;
    const rec = { ...fields, time: time.toISOString() };
    return [
      this.client.put(this.keys.audit(entry.tenant, time, randomId())).value(JSON.stringify(rec)),
      this.client.put(this.keys.auditTenant(entry.tenant)).value(''),
    ];
  }

  async list(tenant: string, limit: number, afterKey: string | undefined): Promise<{ records: AuditRecord[]; lastKey: string | undefined }> {
    const prefix = this.keys.auditPrefix(tenant);
    const start = afterKey !== undefined ? `${afterKey}\0` : prefix;
    const res = await etcdOp('listing audit records', () =>
      this.client.getAll().inRange({ start, end: prefixEnd(prefix) }).limit(limit + 1).exec(),
    );
    const records: AuditRecord[] = [];
    for (const kv of res.kvs.slice(0, limit)) {
      try {
        const r = JSON.parse(kv.value.toString()) as AuditEntry & { time: string };
        records.push({
          tenant: r.tenant,
          who: r.who,
          actor: r.actor ?? '',
          action: r.action,
          target: r.target,
          identifier: r.identifier ?? '',
          before: r.before ?? '',
          after: r.after ?? '',
          time: new Date(r.time),
          revision: Number(kv.mod_revision),
        });
      } catch {
        // A record we cannot read is skipped rather than failing the listing.
      }
    }
    return { records, lastKey: res.kvs.length > limit ? res.kvs[limit - 1]!.key.toString() : undefined };
  }

  /**
   * Deletes records older than `cutoff` for every tenant that has any.
   * Idempotent, so several coordinators may prune at once.
   */
  async prune(cutoff: Date): Promise<number> {
    const markers = await etcdOp('listing audit tenants', () => this.client.getAll().prefix(this.keys.auditTenantsPrefix).keys());
    let deleted = 0;
    for (const marker of markers) {
      const tenant = marker.slice(this.keys.auditTenantsPrefix.length);
      const res = await etcdOp('pruning audit records', () =>
        this.client.delete().inRange({ start: this.keys.auditPrefix(tenant), end: this.keys.auditBefore(tenant, cutoff) }).exec(),
      );
      deleted += Number(res.deleted);
    }
    return deleted;
  }
}
