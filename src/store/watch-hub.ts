import type { Logger } from 'pino';
import type { DomainError } from '../domain/errors.js';
import { EVENT_KINDS, type EventFilter, type EventStore, type StoreEvent, type WatchHandle } from './event-store.js';

/** One etcd watch response as the hub hands it on: every entity change in it, unfiltered. */
export interface HubBatch {
  readonly events: readonly StoreEvent[];
  /** Every change up to here has been delivered (EventStore.watch's revision). */
  readonly revision: number;
  /**
   * What subscribers derive from the batch, keyed by what they derive it
   * for (a filter): whoever comes first computes it, the others reuse it.
   */
  readonly memo: Map<string, unknown>;
}

export interface HubOptions {
  /** Changes kept for subscribers that start a little in the past (a snapshot's revision + 1). */
  readonly bufferEvents?: number;
}

interface Subscriber {
  readonly from: number;
  readonly onBatch: (batch: HubBatch) => void;
  readonly onError: (err: DomainError) => void;
}

const ALL: EventFilter = { kinds: new Set(EVENT_KINDS), tenants: undefined };

/**
 * One etcd watch of every mailshare key, shared by all the coordinator's
 * event streams: each change is read from etcd and decoded once, however
 * many agents watch, where a watch per stream made etcd send every change
 * N times and the coordinator decode it N times.
 *
 * A stream that starts at a revision the hub has already passed is served
 * from the hub's buffer of recent changes when it reaches back that far
 * (an agent resuming right after its snapshot); otherwise subscribe()
 * declines and the stream watches etcd itself, as before. When the hub's
 * watch fails, every subscriber is told (it resumes from its last
 * revision, as after any failed watch) and the hub starts again.
 */
export class WatchHub {
  private readonly subscribers = new Set<Subscriber>();
  /** Recent batches, oldest first; every change from `bufferFrom` on is in them. */
  private buffer: HubBatch[] = [];
  private buffered = 0;
  private bufferFrom = 0;
  /** Every change up to here has been delivered to the subscribers (0: not watching). */
  private delivered = 0;
  private watch: WatchHandle | undefined;
  private closed = false;
  private retryMs = 200;
  private failed: (() => void) | undefined;
  private readonly bufferEvents: number;

  constructor(
    private readonly events: EventStore,
    private readonly log: Logger,
    opts: HubOptions = {},
  ) {
    this.bufferEvents = opts.bufferEvents ?? 20_000;
  }

  start(): void {
    void this.run();
  }

  /** Whether the hub is watching (subscribe() can serve a start from now). */
  get live(): boolean {
    return this.delivered > 0;
  }

  /** Streams served by the hub now (for tests and metrics). */
  get size(): number {
    return this.subscribers.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failed?.();
    await this.watch?.cancel();
    this.subscribers.clear();
  }

  /**
   * Delivers every change from `fromRevision` on (0: from now), or returns
   * undefined when the hub cannot: it is not watching, or the start lies
   * before what it still holds. Changes already passed are delivered at
   * once (synchronously, as one batch) before this returns.
   */
  subscribe(fromRevision: number, onBatch: (batch: HubBatch) => void, onError: (err: DomainError) => void): WatchHandle | undefined {
    if (this.delivered === 0 || this.closed) return undefined;
    const from = fromRevision === 0 ? this.delivered + 1 : fromRevision;
    if (from <= this.delivered && from < this.bufferFrom) return undefined;
    const sub: Subscriber = { from, onBatch, onError };
    if (from <= this.delivered) {
      const events: StoreEvent[] = [];
      for (const b of this.buffer) if (b.revision >= from) for (const e of b.events) if (e.revision >= from) events.push(e);
      onBatch({ events, revision: this.delivered, memo: new Map() });
    }
    this.subscribers.add(sub);
    return {
      cancel: async () => {
        this.subscribers.delete(sub);
      },
    };
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      try {
        const head = await this.events.headRevision();
        if (this.closed) return;
        const failed = new Promise<void>((resolve) => (this.failed = resolve));
        this.buffer = [];
        this.buffered = 0;
        this.bufferFrom = head + 1;
        // Streams may subscribe from here: the watch starts right after `head`, so they miss nothing.
        this.delivered = head;
        this.watch = await this.events.watch(head + 1, ALL, (events, revision) => this.deliver(events, revision), (err) => this.fail(err));
        if (this.closed) break;
        this.retryMs = 200;
        await failed;
      } catch (err) {
        if (this.closed) return;
        this.log.warn({ err: String(err) }, 'the shared event watch could not start; streams watch etcd themselves meanwhile');
        this.fail(err as DomainError);
      }
      this.delivered = 0;
      void this.watch?.cancel();
      this.watch = undefined;
      if (this.closed) return;
      await new Promise((r) => setTimeout(r, this.retryMs));
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    }
  }

  private deliver(events: StoreEvent[], revision: number): void {
    if (this.closed || this.delivered === 0) return;
    const batch: HubBatch = { events, revision, memo: new Map() };
    this.delivered = Math.max(this.delivered, revision);
    if (events.length > 0) {
      this.buffer.push(batch);
      this.buffered += events.length;
      while (this.buffered > this.bufferEvents && this.buffer.length > 1) {
        const old = this.buffer.shift()!;
        this.buffered -= old.events.length;
        this.bufferFrom = old.revision + 1;
      }
    }
    for (const s of this.subscribers) {
      // A subscriber that started ahead of the hub skips what comes before its start.
      if (revision < s.from && events.every((e) => e.revision < s.from)) continue;
      s.onBatch(events.length > 0 && events[0]!.revision < s.from ? { events: events.filter((e) => e.revision >= s.from), revision, memo: new Map() } : batch);
    }
  }

  private fail(err: DomainError): void {
    if (this.delivered === 0) return;
    if (!this.closed) this.log.warn({ err: err.message }, 'the shared event watch failed; its streams resume, and it starts again');
    this.delivered = 0;
    const subs = [...this.subscribers];
    this.subscribers.clear();
    for (const s of subs) s.onError(err);
    this.failed?.();
  }
}
