import type { Etcd3, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { deliveredThrough, resumeExactly } from './etcd-client.js';

export interface PrefixCacheOptions<T> {
  client: Etcd3;
  prefix: string;
  /** Turns a stored value into a record; returning undefined skips a bad record (logged). */
  decode(key: string, value: Buffer, meta: KeyMeta): T | undefined;
  logger: Logger;
  /** Delay before a resync after the watch failed; default 200 ms, doubling to 5 s. */
  retryDelayMs?: number;
  /** Called for every change, after the map is updated (derived state such as counts). */
  onChange?(key: string, before: T | undefined, after: T | undefined): void;
  /** Called before a snapshot (re)load replaces everything. */
  onReset?(): void;
}

/** What etcd keeps with a key besides its value. */
export interface KeyMeta {
  readonly createRevision: number;
  /** The revision of the key's last change (what a transaction's "Mod" compare checks). */
  readonly modRevision: number;
  /** Lease id (decimal), "0" without one. */
  readonly lease: string;
}

export interface PrefixCache<T> {
  get(key: string): T | undefined;
  entries(): IterableIterator<[string, T]>;
  /** The etcd revision the cache content is valid at. */
  revision(): number;
  /**
   * Resolves once `cond` holds, checked now and after every change the
   * watch applies; false on timeout. For read-your-writes: a writer waits
   * until its own change reached the cache before answering.
   */
  waitUntil(cond: () => boolean, timeoutMs: number): Promise<boolean>;
  /** waitUntil the cache is at `revision` or later (a revision of a change under this prefix). */
  waitFor(revision: number, timeoutMs: number): Promise<boolean>;
  /** Resolves once the first snapshot is loaded. */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * An in-memory copy of every key under a prefix, fed by an etcd watch:
 * snapshot (range at revision R) + watch from R+1. etcd watches are ordered
 * and resumable; when the watch is cancelled (e.g. its revision was
 * compacted away) the cache reloads a fresh snapshot and watches again.
 */
export function createPrefixCache<T>(opts: PrefixCacheOptions<T>): PrefixCache<T> {
  const map = new Map<string, T>();
  let rev = 0;
  let watcher: Watcher | undefined;
  let closed = false;
  let delay = opts.retryDelayMs ?? 200;
  let timer: NodeJS.Timeout | undefined;
  const log = opts.logger.child({ component: 'prefix-cache', prefix: opts.prefix });

  const waiters = new Set<{ cond: () => boolean; done: (ok: boolean) => void }>();
  const wake = (): void => {
    for (const w of waiters) if (w.cond()) w.done(true);
  };
  const apply = (key: string, value: Buffer | undefined, meta: KeyMeta): void => {
    const before = map.get(key);
    let after: T | undefined;
    if (value !== undefined) {
      after = opts.decode(key, value, meta);
      if (after === undefined) log.warn({ key }, 'skipping undecodable record');
    }
    if (after === undefined) map.delete(key);
    else map.set(key, after);
    if (before !== undefined || after !== undefined) opts.onChange?.(key, before, after);
  };

  const load = async (): Promise<void> => {
    const res = await opts.client.getAll().prefix(opts.prefix).exec();
    map.clear();
    opts.onReset?.();
    for (const kv of res.kvs) apply(kv.key.toString(), kv.value, { createRevision: Number(kv.create_revision), modRevision: Number(kv.mod_revision), lease: kv.lease });
    rev = Number(res.header.revision);
    wake();
    const w = await opts.client
      .watch()
      .prefix(opts.prefix)
      .startRevision(String(rev + 1))
      .create();
    if (closed) {
      await w.cancel();
      return;
    }
    watcher = w;
    resumeExactly(w, rev + 1);
    w.on('data', (res) => {
      for (const ev of res.events) apply(ev.kv.key.toString(), ev.type === 'Delete' ? undefined : ev.kv.value, { createRevision: Number(ev.kv.create_revision), modRevision: Number(ev.kv.mod_revision), lease: ev.kv.lease });
      rev = Math.max(rev, deliveredThrough(res));
      wake();
    });
    w.on('error', (err) => {
      // etcd already cancelled this watch; cancelling it again confuses etcd3.
      log.warn({ err: (err as Error).message }, 'watch failed; reloading snapshot');
      if (watcher === w) watcher = undefined;
      schedule();
    });
    delay = opts.retryDelayMs ?? 200;
  };

  const schedule = (): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      load().catch((err: unknown) => {
        log.warn({ err: (err as Error).message }, 'snapshot failed; retrying');
        delay = Math.min(delay * 2, 5000);
        schedule();
      });
    }, delay);
  };

  const ready = load().catch((err: unknown) => {
    schedule();
    throw err;
  });

  const waitUntil = (cond: () => boolean, timeoutMs: number): Promise<boolean> => {
    if (cond()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = {
        cond,
        done: (ok: boolean) => {
          waiters.delete(w);
          clearTimeout(timer);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => w.done(false), timeoutMs);
      waiters.add(w);
    });
  };

  return {
    get: (key) => map.get(key),
    entries: () => map.entries(),
    revision: () => rev,
    waitUntil,
    waitFor: (revision, timeoutMs) => waitUntil(() => rev >= revision, timeoutMs),
    ready,
    close: async () => {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of waiters) w.done(false);
      if (watcher) await watcher.cancel().catch(() => undefined);
    },
  };
}
