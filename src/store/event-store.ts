import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { DomainError } from '../domain/errors.js';
import { deliveredThrough, resumeExactly } from './etcd-client.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';

import type { EventKind } from '../domain/event-kinds.js';

export { EVENT_KINDS, type EventKind } from '../domain/event-kinds.js';

/** A change to one entity, decoded from one etcd key-value event. */
export interface StoreEvent {
  readonly revision: number;
  readonly kind: EventKind;
  readonly deleted: boolean;
  readonly tenant: string;
  /** Identifies the entity within its kind: group name, "owner/name", user, node name. */
  readonly id: string;
  /** The stored value (JSON) for puts; for deletes, the previous value when known. */
  readonly value: Buffer | undefined;
  /** For assignments: the epoch (create revision) of the assignment put or deleted. */
  readonly epoch: number;
  /** For nodes: true when the event is about liveness (the lease-bound key). */
  readonly liveness: boolean;
}

export interface EventFilter {
  readonly kinds: ReadonlySet<EventKind>;
  /** undefined = every tenant. */
  readonly tenants: readonly string[] | undefined;
  /**
   * Snapshots only: assignments and moves of this node only (what a Follow
   * stream continues); undefined = every node's.
   */
  readonly node?: string;
}

/** Whether an event of this kind and tenant passes the filter (nodes belong to no tenant: every filter of their kind passes them). */
export function matches(e: { readonly kind: EventKind; readonly tenant: string }, filter: EventFilter): boolean {
  if (!filter.kinds.has(e.kind)) return false;
  return filter.tenants === undefined || e.kind === 'node' || filter.tenants.includes(e.tenant);
}

export class CompactedError extends DomainError {
  constructor(readonly fromRevision: number) {
    super('out_of_range', `from_revision: revision ${fromRevision} has been compacted; take a new Snapshot`, { field: 'from_revision' });
  }
}

/**
 * Classifies etcd keys into entity events and reads consistent snapshots.
 * Index entries, audit records, tokens and markers are not events.
 */
export class EventStore {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
  ) {}

  classify(key: string): { kind: EventKind; tenant: string; id: string; liveness: boolean } | undefined {
    const k = this.keys;
    if (key.startsWith(k.tenantsPrefix)) return { kind: 'tenant', tenant: key.slice(k.tenantsPrefix.length), id: key.slice(k.tenantsPrefix.length), liveness: false };
    if (key.startsWith(k.assignmentsPrefix)) {
      const [tenant, user] = k.assignmentFromKey(key);
      return { kind: 'assignment', tenant, id: user, liveness: false };
    }
    if (key.startsWith(k.movesPrefix)) {
      const [tenant, user] = k.moveFromKey(key);
      return { kind: 'move', tenant, id: user, liveness: false };
    }
    if (key.startsWith(k.nodesPrefix)) return { kind: 'node', tenant: '', id: key.slice(k.nodesPrefix.length), liveness: false };
    if (key.startsWith(k.liveNodesPrefix)) return { kind: 'node', tenant: '', id: key.slice(k.liveNodesPrefix.length), liveness: true };
    const tPrefix = `${k.root}t/`;
    if (!key.startsWith(tPrefix)) return undefined;
    const rest = key.slice(tPrefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) return undefined;
    const tenant = rest.slice(0, slash);
    const inner = rest.slice(slash + 1);
    if (inner.startsWith('groups/')) return { kind: 'group', tenant, id: inner.slice('groups/'.length), liveness: false };
    if (inner.startsWith('mbox/')) return { kind: 'mailbox', tenant, id: inner.slice('mbox/'.length), liveness: false };
    return undefined;
  }

  toEvent(kv: IKeyValue, prev: IKeyValue | undefined, deleted: boolean, revision: number, filter: EventFilter): StoreEvent | undefined {
    const c = this.classify(kv.key.toString());
    if (!c || !matches(c, filter)) return undefined;
    const epoch = c.kind === 'assignment' ? Number((deleted ? prev?.create_revision : kv.create_revision) ?? 0) : 0;
    return { revision, kind: c.kind, deleted, tenant: c.tenant, id: c.id, value: deleted ? prev?.value : kv.value, epoch, liveness: c.liveness };
  }

  /** Ranges that hold each kind (for snapshots). */
  private async ranges(filter: EventFilter, revision: number): Promise<Array<[string, string]>> {
    const k = this.keys;
    const out: Array<[string, string]> = [];
    const p = (prefix: string): [string, string] => [prefix, prefixEnd(prefix)];
    const only = filter.tenants;
    if (filter.kinds.has('tenant')) out.push(...(only ? only.map((t): [string, string] => [k.tenant(t), `${k.tenant(t)}\0`]) : [p(k.tenantsPrefix)]));
    if (filter.kinds.has('group') || filter.kinds.has('mailbox')) {
      // Per tenant, only the groups and mailboxes: the "shared with" index under the same
      // tenant prefix holds as many keys again and is no part of a snapshot.
      const tenants = only
        ? only
        : (await etcdOp('listing tenants', () => this.client.getAll().prefix(k.tenantsPrefix).revision(revision).keys())).map((key) => k.tenantFromKey(key));
      for (const t of tenants) {
        if (filter.kinds.has('group')) out.push(p(k.groupsPrefix(t)));
        if (filter.kinds.has('mailbox')) out.push(p(k.mailboxesPrefix(t)));
      }
    }
    if (filter.kinds.has('assignment')) out.push(...(only ? only.map((t) => p(`${k.assignmentsPrefix}${t}/`)) : [p(k.assignmentsPrefix)]));
    if (filter.kinds.has('node')) out.push(p(k.nodesPrefix), p(k.liveNodesPrefix));
    if (filter.kinds.has('move')) out.push(...(only ? only.map((t) => p(`${k.movesPrefix}${t}/`)) : [p(k.movesPrefix)]));
    return out;
  }

  /**
   * Reads every matching entity at one revision, in chunks, without holding
   * them all in memory. Returns the revision the snapshot is valid at.
   */
  async snapshot(filter: EventFilter, onChunk: (events: StoreEvent[]) => Promise<void>, chunkSize = 500, readSize = 20000): Promise<number> {
    const revision = await this.headRevision();
    // Large reads: etcd 3.4 counts every key left in the range on each paged read, so
    // small pages make a snapshot quadratic in its size. Chunks to the caller stay small.
    const read = (from: string, end: string) =>
      etcdOp('reading a snapshot', () => this.client.getAll().inRange({ start: from, end }).revision(revision).limit(readSize).exec());
    for (const [start, end] of await this.ranges(filter, revision)) {
      let next = read(start, end);
      for (;;) {
        const res = await next;
        const more = res.kvs.length >= readSize;
        // The next page is read while this one is decoded and sent (one page ahead at most).
        if (more) {
          next = read(`${res.kvs[res.kvs.length - 1]!.key.toString()}\0`, end);
          next.catch(() => undefined);
        }
        const events = res.kvs.map((kv) => this.toEvent(kv, undefined, false, Number(kv.mod_revision), filter)).filter((e): e is StoreEvent => e !== undefined);
        for (let i = 0; i < events.length; i += chunkSize) await onChunk(events.slice(i, i + chunkSize));
        if (!more) break;
      }
    }
    return revision;
  }

  /** etcd's current revision (one read). */
  async headRevision(): Promise<number> {
    const head = await etcdOp('reading the current revision', () => this.client.get(this.keys.healthProbe).exec());
    return Number(head.header.revision);
  }

  /**
   * Writes the snapshot mark (no entity, no event: a revision under the
   * root that a watch of the root sees); returns its revision.
   */
  async mark(by: string): Promise<number> {
    const res = await etcdOp('writing the snapshot mark', () => this.client.put(this.keys.snapshotMark).value(by).exec());
    return Number(res.header.revision);
  }

  /**
   * Watches every mailshare key from `fromRevision` (0 = now), delivering
   * each etcd response as one ordered batch (possibly empty after
   * filtering, with the revision it covers). Compaction of fromRevision is
   * reported through onError as CompactedError. The revision is that of
   * the batch's last change under the root (filtered out or not), or for a
   * batch without changes etcd's header revision: every change up to it has
   * been delivered (the header alone does not promise that while a watch
   * catches up).
   */
  async watch(
    fromRevision: number,
    filter: EventFilter,
    onBatch: (events: StoreEvent[], revision: number) => void,
    onError: (err: DomainError) => void,
  ): Promise<WatchHandle> {
    let b = this.client.watch().prefix(this.keys.root).withPreviousKV();
    if (fromRevision > 0) b = b.startRevision(String(fromRevision));
    let w: Watcher;
    try {
      w = await b.create();
    } catch (err) {
      throw await this.explain(err, fromRevision);
    }
    resumeExactly(w, fromRevision);
    // etcd cancels a failed watch itself; cancelling it again would make
    // etcd3 trip over the second cancel response, so only live ones are cancelled.
    let live = true;
    w.on('data', (res) => {
      const events: StoreEvent[] = [];
      for (const ev of res.events) {
        const e = this.toEvent(ev.kv, ev.prev_kv, ev.type === 'Delete', Number(ev.kv.mod_revision), filter);
        if (e) events.push(e);
      }
      onBatch(events, deliveredThrough(res));
    });
    w.on('error', (err: Error) => {
      live = false;
      void this.explain(err, fromRevision).then(onError);
    });
    return {
      cancel: async () => {
        if (!live) return;
        live = false;
        await w.cancel().catch(() => undefined);
      },
    };
  }

  /** Why a watch failed: compaction of its start revision, or etcd trouble. */
  private async explain(err: unknown, fromRevision: number): Promise<DomainError> {
    if (/compacted/i.test((err as Error)?.message ?? '')) return new CompactedError(fromRevision);
    if (fromRevision > 0) {
      try {
        await this.client.get(this.keys.healthProbe).revision(String(fromRevision)).exec();
      } catch (probe) {
        if (/compacted/i.test((probe as Error)?.message ?? '')) return new CompactedError(fromRevision);
      }
    }
    return new DomainError('unavailable', 'the etcd watch failed; resume from your last revision', { cause: err, retryable: true });
  }
}

export interface WatchHandle {
  cancel(): Promise<void>;
}
