import type * as grpc from '@grpc/grpc-js';
import type { LocateAnswers, LocateBatch, LocateStreamRequest, LocateStreamResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { bearer } from './grpc.js';

export interface Lookups {
  locate(tenant: string, user: string, assign: boolean): Promise<LocateStreamResponse | undefined>;
  close(): void;
}

/**
 * Lookups matched to their answers by id over a stream that `open` makes; a
 * broken stream answers its outstanding lookups with undefined and is opened
 * again; with `timeoutMs`, so does a lookup that waits too long.
 */
function lookupsOver<S extends grpc.ClientDuplexStream<never, unknown>>(
  open: () => S,
  answersOf: (message: unknown) => LocateStreamResponse[],
  send: (stream: S, lookup: LocateStreamRequest) => void,
  timeoutMs: number | undefined,
): Lookups & { stream(): S } {
  const waiting = new Map<number, (r: LocateStreamResponse | undefined) => void>();
  let id = 0;
  let stream: S;
  const start = (): void => {
    stream = open();
    stream.on('data', (m: unknown) => {
      for (const a of answersOf(m)) {
        waiting.get(a.id)?.(a);
        waiting.delete(a.id);
      }
    });
    stream.on('error', () => {
      for (const w of waiting.values()) w(undefined);
      waiting.clear();
      start();
    });
  };
  start();
  return {
    stream: () => stream,
    locate(tenant, user, assign) {
      return new Promise((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        if (timeoutMs !== undefined) {
          setTimeout(() => {
            if (waiting.delete(n)) resolve(undefined);
          }, timeoutMs);
        }
        send(stream, { id: n, request: { tenant, user, mailbox: '', assign } });
      });
    },
    close() {
      stream.removeAllListeners('error');
      stream.on('error', () => undefined);
      stream.end();
    },
  };
}

/** Lookups over one PlacementService.LocateStream, a message each. */
export function openLocateStream(client: PlacementServiceClient, token: string, opts: { timeoutMs?: number } = {}): Lookups {
  return lookupsOver(
    () => client.locateStream(bearer(token)) as grpc.ClientDuplexStream<never, unknown>,
    (m) => [m as LocateStreamResponse],
    (stream, lookup) => (stream as grpc.ClientDuplexStream<LocateStreamRequest, LocateStreamResponse>).write(lookup),
    opts.timeoutMs,
  );
}

/**
 * Lookups over one PlacementService.LocateMany: those made in one turn of
 * the event loop travel in one message (up to 1,000); answers come batched.
 */
export function openLocateMany(client: PlacementServiceClient, token: string, opts: { timeoutMs?: number } = {}): Lookups {
  let queue: LocateStreamRequest[] = [];
  let scheduled = false;
  const lookups = lookupsOver(
    () => client.locateMany(bearer(token)) as grpc.ClientDuplexStream<never, unknown>,
    (m) => (m as LocateAnswers).answers,
    (_stream, lookup) => {
      queue.push(lookup);
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        const stream = lookups.stream() as grpc.ClientDuplexStream<LocateBatch, LocateAnswers>;
        while (queue.length > 0) stream.write({ lookups: queue.splice(0, 1000) });
      });
    },
    opts.timeoutMs,
  );
  return {
    locate: (tenant, user, assign) => lookups.locate(tenant, user, assign),
    close: () => {
      queue = [];
      lookups.close();
    },
  };
}
