import type { Interceptor } from '@grpc/grpc-js';
import { Etcd3, type IWatchResponse, type Watcher, isRecoverableError } from 'etcd3';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, retry } from 'cockatiel';

export interface EtcdClientOptions {
  endpoints: readonly string[];
  /** Deadline for every unary call, in ms (never applied to streams). Default 3000. */
  callTimeoutMs?: number;
  /** Global retries of recoverable failures, each on another host. Default 2. */
  retries?: number;
  /** gRPC client interceptors on every etcd call (the coordinator's request metrics). */
  interceptors?: Interceptor[];
}

/**
 * The one way mailshare opens an etcd client. Unary calls get a deadline
 * (etcd3 has none by default, so a call to a dead leader would hang for
 * etcd's own request timeout); streams (watches, keepalives) never do.
 * gRPC keepalive pings detect half-open connections.
 */
export function createEtcdClient(opts: EtcdClientOptions): Etcd3 {
  const timeout = opts.callTimeoutMs ?? 3000;
  return new Etcd3({
    hosts: [...opts.endpoints],
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    grpcOptions: {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // A watch catching up gets up to 1,000 revisions in one response (etcd's watchBatchMaxRevs):
      // 1,000 transactions of 120 puts are ~15 MB, over gRPC's 4 MiB default.
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      // etcd3 hands these options to each grpc-js client it creates, where `interceptors` applies.
      ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
    },
    faultHandling: {
      // A short half-open time: with one host, etcd3's default (5 s) turns a
      // one-second blip into five seconds of BrokenCircuitError.
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: 1_000,
          breaker: new ConsecutiveBreaker(3),
        }),
      global: retry(handleWhen(isRecoverableError), {
        maxAttempts: opts.retries ?? 2,
        backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 500 }),
      }),
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 3_000 }).next(),
    },
  });
}

/**
 * The revision up to which a watch response proves that every change under
 * the watch was delivered: its last event's, or for a response without
 * events (progress) its header's. Not the header's when there are events:
 * a watch catching up gets up to 1,000 revisions per response (etcd's
 * watchBatchMaxRevs) under a header at the current revision, with more to come.
 */
export function deliveredThrough(res: IWatchResponse): number {
  const last = res.events[res.events.length - 1];
  return last ? Number(last.kv.mod_revision) : Number(res.header.revision);
}

/**
 * Makes `w` resume, when etcd3 re-creates it after its stream failed, from
 * the revision after the last change it delivered (or the one it was
 * started from). etcd3 resumes from the last header revision + 1, which
 * while the watch catches up is past changes not yet delivered: they
 * would be skipped for good.
 */
export function resumeExactly(w: Watcher, startRevision: number | undefined): void {
  const req = (w as unknown as { request: { start_revision?: number | string } }).request;
  let next = startRevision !== undefined && startRevision > 0 ? String(startRevision) : undefined;
  // Listeners added after etcd3's own (in the Watcher's constructor) run after them and win.
  w.on('data', (res: IWatchResponse) => {
    next = String(deliveredThrough(res) + 1);
    req.start_revision = next;
  });
  w.on('connected', () => {
    if (next !== undefined) req.start_revision = next;
  });
}
