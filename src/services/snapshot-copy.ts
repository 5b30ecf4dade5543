import type { Logger } from 'pino';
import { aclEntries } from '../domain/acl.js';
import { packMailbox, packedChunks } from '../domain/mailbox-pack.js';
import type { Event, SnapshotResponse } from '../gen/mailshare/v1/events.js';
import { EVENT_KINDS, type EventFilter, type EventStore, type StoreEvent, type WatchHandle } from '../store/event-store.js';
import { decodeMailbox } from '../store/mailbox-store.js';
import { decodeAssignmentNode } from '../store/placement-store.js';
import { eventToPb } from './event-service.js';
import { hideLease } from './placement-service.js';

/** Events per snapshot message (everything but compact mailboxes). */
const EVENTS_PER_MESSAGE = 500;
/** How long a snapshot waits for the copy to reach etcd's revision before it writes the mark. */
const CATCH_UP_MS = 100;
/** How long it then waits for the copy to see the mark; after that the snapshot is read from etcd. */
const MARK_MS = 5000;

/**
 * The coordinator's own copy of every entity a snapshot serves, fed by one
 * etcd watch, so that an agent's cold start costs etcd nothing and the
 * coordinator little: mailboxes are kept in the compact form agents read
 * (SnapshotResponse.mailboxes, one short one-byte string each), everything
 * else as the events a snapshot sends. Loaded once (one read of every
 * entity at one revision), then kept by the watch from the next revision;
 * reloaded when the watch fails. Until it is loaded, snapshots are read
 * from etcd as before.
 *
 * Memory: about 180 B per mailbox (its key, its compact record, the map
 * entry) and one decoded event per tenant, group, node, assignment and move.
 */
export class SnapshotCopy {
  private copy: Copy = emptyCopy();
  private revision = 0;
  private loaded = false;
  private closed = false;
  private watch: WatchHandle | undefined;
  private wakeWatch: (() => void) | undefined;
  private readonly waiters = new Set<() => void>();
  private retryMs = 200;

  constructor(
    private readonly events: EventStore,
    private readonly log: Logger,
    private readonly name: string,
  ) {}

  start(): void {
    void this.run();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wakeWatch?.();
    await this.watch?.cancel();
  }

  /** Mailboxes held (for metrics and tests). */
  get size(): number {
    return this.copy.mailboxes.size;
  }

  get ready(): boolean {
    return this.loaded;
  }

  private async run(): Promise<void> {
    const all: EventFilter = { kinds: new Set(EVENT_KINDS), tenants: undefined };
    while (!this.closed) {
      try {
        const copy = emptyCopy();
        const t0 = Date.now();
        const revision = await this.events.snapshot(all, async (chunk) => {
          for (const e of chunk) apply(copy, e, this.log);
        });
        if (this.closed) return;
        this.copy = copy;
        this.revision = revision;
        const failed = new Promise<void>((resolve) => (this.wakeWatch = resolve));
        this.watch = await this.events.watch(
          revision + 1,
          all,
          (batch, revision) => {
            for (const e of batch) apply(this.copy, e, this.log);
            if (revision > this.revision) this.revision = revision;
            this.wake();
          },
          (err) => {
            this.log.warn({ err: err.message }, 'the watch behind the snapshot copy failed; loading it again');
            this.wakeWatch?.();
          },
        );
        this.loaded = true;
        this.retryMs = 200;
        this.log.info({ mailboxes: copy.mailboxes.size, assignments: copy.assignments.size, entities: copy.others.size, revision, ms: Date.now() - t0 }, 'snapshot copy loaded');
        this.wake();
        await failed;
      } catch (err) {
        if (this.closed) return;
        this.log.warn({ err: String(err) }, 'could not load the snapshot copy; snapshots are read from etcd meanwhile');
      }
      this.loaded = false;
      this.copy = emptyCopy();
      void this.watch?.cancel();
      this.watch = undefined;
      if (this.closed) return;
      await new Promise((r) => setTimeout(r, this.retryMs));
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    }
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  private reached(revision: number, ms: number): Promise<boolean> {
    if (this.loaded && this.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (): void => {
        if (!this.loaded || this.revision < revision) return;
        done(true);
      };
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), ms);
      this.waiters.add(check);
    });
  }

  /**
   * Streams a snapshot from the copy, at a revision no older than etcd's
   * when called (what was written before the call is in it). Returns that
   * revision, or undefined when the copy cannot serve (not loaded, or it
   * did not catch up in time): then read the snapshot from etcd.
   */
  async serve(filter: EventFilter, hideLeases: boolean, write: (msg: SnapshotResponse) => Promise<void>): Promise<number | undefined> {
    if (!this.loaded) return undefined;
    const head = await this.events.headRevision();
    if (!(await this.reached(head, CATCH_UP_MS))) {
      // etcd's revision moved for keys outside mailshare's root (or changes are still on their
      // way): a write under the root that this copy's watch will see marks a revision it can reach.
      const mark = await this.events.mark(this.name);
      if (!(await this.reached(mark, MARK_MS))) return undefined;
    }
    // Taken at one revision, synchronously: records are replaced, never changed, so these stay as they are.
    const revision = this.revision;
    const { tenants, node } = filter;
    const { mailboxes, assignments, others } = this.copy;
    const events: Event[] = [];
    for (const e of others.values()) {
      if (!filter.kinds.has(e.kind as never)) continue;
      if (tenants !== undefined && e.kind !== 'node' && !tenants.includes(e.tenant)) continue;
      if (node !== undefined && e.move && e.move.fromNode !== node && e.move.toNode !== node) continue;
      events.push(hideLeases && e.node ? { ...e, node: hideLease(e.node) } : e);
    }
    if (filter.kinds.has('assignment')) {
      for (const [key, a] of assignments) {
        const slash = key.indexOf('/');
        const tenant = key.slice(0, slash);
        if (tenants !== undefined && !tenants.includes(tenant)) continue;
        if (node !== undefined && a.node !== node) continue;
        events.push({ revision: a.revision, kind: 'assignment', deleted: false, tenant, assignment: { tenant, user: key.slice(slash + 1), node: a.node, epoch: a.epoch } });
      }
    }
    let records: string[] = [];
    if (filter.kinds.has('mailbox')) {
      if (tenants === undefined) records = [...mailboxes.values()];
      else for (const [key, rec] of mailboxes) if (tenants.includes(key.slice(0, key.indexOf('/')))) records.push(rec);
    }
    for (let i = 0; i < events.length; i += EVENTS_PER_MESSAGE) await write({ events: events.slice(i, i + EVENTS_PER_MESSAGE), revision: 0, mailboxes: Buffer.alloc(0) });
    for (const chunk of packedChunks(records)) await write({ events: [], revision: 0, mailboxes: Buffer.from(chunk, 'latin1') });
    return revision;
  }
}

interface Held {
  readonly node: string;
  readonly epoch: number;
  readonly revision: number;
}

interface Copy {
  /** "tenant/owner/name" → the compact record. */
  readonly mailboxes: Map<string, string>;
  /** "tenant/user" → where and since when (as many as assigned users: kept small). */
  readonly assignments: Map<string, Held>;
  /** Tenants, groups, nodes, moves: their events. */
  readonly others: Map<string, Event>;
}

function emptyCopy(): Copy {
  return { mailboxes: new Map(), assignments: new Map(), others: new Map() };
}

/** A key kept for as long as its entity: flat (a concatenation or a slice would keep its parts, or the whole etcd key, alive). */
function flat(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}

/** Node names, one copy each (every assignment names one). */
const nodeNames = new Map<string, string>();

function apply(copy: Copy, e: StoreEvent, log: Logger): void {
  if (e.kind === 'mailbox') {
    const key = `${e.tenant}/${e.id}`;
    if (e.deleted || !e.value) {
      copy.mailboxes.delete(key);
      return;
    }
    const slash = e.id.indexOf('/');
    const owner = e.id.slice(0, slash);
    const name = e.id.slice(slash + 1);
    const m = decodeMailbox(e.tenant, owner, name, e.value, e.revision);
    if (!m) {
      log.warn({ tenant: e.tenant, mailbox: e.id }, 'unreadable mailbox record left out of snapshots');
      copy.mailboxes.delete(key);
      return;
    }
    const record = packMailbox(e.tenant, owner, name, m.id, aclEntries(m.acl));
    if (copy.mailboxes.has(key)) copy.mailboxes.set(key, record);
    else copy.mailboxes.set(flat(key), record);
    return;
  }
  if (e.kind === 'assignment') {
    const key = `${e.tenant}/${e.id}`;
    if (e.deleted) {
      copy.assignments.delete(key);
      return;
    }
    const named = (e.value && decodeAssignmentNode(e.value)) ?? '';
    let node = nodeNames.get(named);
    if (node === undefined) nodeNames.set(named, (node = flat(named)));
    copy.assignments.set(copy.assignments.has(key) ? key : flat(key), { node, epoch: e.epoch, revision: e.revision });
    return;
  }
  const key = `${e.kind}\0${e.tenant}\0${e.id}\0${e.liveness ? 1 : 0}`;
  if (e.deleted) copy.others.delete(key);
  else copy.others.set(key, eventToPb(e, false));
}
