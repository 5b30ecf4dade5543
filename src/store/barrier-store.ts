import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { randomId } from './cas.js';
import { etcdOp } from './errors.js';
import type { Keys } from './keys.js';
import { type PrefixCache, createPrefixCache } from './prefix-cache.js';

/** A revision an operator waits for every node to apply. */
export interface Barrier {
  readonly id: string;
  readonly revision: number;
}

/**
 * Barriers for "wait until applied": `barriers/<id>` holds the revision,
 * `barriers/<id>/<node>` each node's answer, all on one lease that ends
 * the barrier (at the latest when the wait would have timed out). Every
 * coordinator keeps a watch-fed copy: a new barrier is told to the nodes
 * whose keepalive streams it holds, and the waiter sees the answers arrive
 * without reading etcd. Nothing is written unless an operator waits.
 */
export class BarrierStore {
  private readonly cache: PrefixCache<number>;
  private readonly listeners = new Set<(b: Barrier) => void>();
  private readonly leases = new Map<string, string>();

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    logger: Logger,
  ) {
    const prefix = keys.barriersPrefix;
    this.cache = createPrefixCache<number>({
      client,
      prefix,
      logger,
      decode: (key, value, meta) => {
        const n = Number(value.toString());
        if (!Number.isSafeInteger(n)) return undefined;
        if (!key.slice(prefix.length).includes('/')) this.leases.set(key, meta.lease);
        return n;
      },
      onChange: (key, before, after) => {
        const id = key.slice(prefix.length);
        if (id.includes('/')) return;
        if (after === undefined) this.leases.delete(key);
        else if (before === undefined) for (const l of this.listeners) l({ id, revision: after });
      },
    });
  }

  get ready(): Promise<void> {
    return this.cache.ready;
  }

  /** Called for every new barrier (on every coordinator). */
  onBarrier(fn: (b: Barrier) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** A new barrier for `revision`, ending by itself after `ttlSeconds`. */
  async create(revision: number, ttlSeconds: number): Promise<{ id: string; leaseId: string; headRevision: number }> {
    const grant = await etcdOp('granting a lease', () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    const id = randomId();
    const res = await etcdOp('writing a barrier', () => this.client.put(this.keys.barrier(id)).value(String(revision)).lease(grant.ID).exec());
    return { id, leaseId: grant.ID, headRevision: Number(res.header.revision) };
  }

  /** A node's answer; false when the barrier is gone (or unknown here yet). */
  async ack(id: string, node: string, revision: number): Promise<boolean> {
    const key = this.keys.barrier(id);
    let lease = this.leases.get(key);
    if (lease === undefined) {
      // Not in this coordinator's copy yet: from etcd.
      const res = await etcdOp('reading a barrier', () => this.client.get(key).exec());
      lease = res.kvs[0]?.lease;
    }
    if (lease === undefined || lease === '0') return false;
    try {
      // Only while the barrier exists (its lease ends both).
      const res = await etcdOp('answering a barrier', () =>
        this.client.if(key, 'Create', '>', 0).then(this.client.put(`${key}/${node}`).value(String(revision)).lease(lease)).commit(),
      );
      return res.succeeded;
    } catch {
      return false;
    }
  }

  /** The answers so far: node → revision. */
  answers(id: string): Map<string, number> {
    const prefix = `${this.keys.barrier(id)}/`;
    const out = new Map<string, number>();
    for (const [key, rev] of this.cache.entries()) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), rev);
    return out;
  }

  /** Resolves once every node in `nodes` answered (true), or at the timeout (false). */
  waitAll(id: string, nodes: readonly string[], timeoutMs: number): Promise<boolean> {
    return this.cache.waitUntil(() => {
      const a = this.answers(id);
      return nodes.every((n) => a.has(n));
    }, timeoutMs);
  }

  /** Ends a barrier and its answers. */
  async end(leaseId: string): Promise<void> {
    await etcdOp('ending a barrier', () => this.client.leaseClient.leaseRevoke({ ID: leaseId })).catch(() => undefined);
  }

  close(): Promise<void> {
    return this.cache.close();
  }
}
