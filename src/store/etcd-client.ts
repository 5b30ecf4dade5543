import type { Interceptor } from '@grpc/grpc-js';
import { Etcd3, isRecoverableError } from 'etcd3';
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
