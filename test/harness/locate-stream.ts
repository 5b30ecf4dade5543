import type * as grpc from '@grpc/grpc-js';
import type { LocateAnswers, LocateBatch, LocateStreamRequest, LocateStreamResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { bearer } from './grpc.js';

/**
 * Lookups over one PlacementService.LocateStream, matched to their answers
 * by id. A broken stream answers its outstanding lookups with undefined and
 * is opened again; with `timeoutMs`, so does a lookup that waits too long.
 */
export function openLocateStream(client: PlacementServiceClient, token: string, opts: { timeoutMs?: number } = {}) {
  const waiting = new Map<number, (r: LocateStreamResponse | undefined) => void>();
  let id = 0;
  let stream: grpc.ClientDuplexStream<LocateStreamRequest, LocateStreamResponse>;
  const open = (): void => {
    stream = client.locateStream(bearer(token));
    stream.on('data', (r: LocateStreamResponse) => {
      waiting.get(r.id)?.(r);
      waiting.delete(r.id);
    });
    stream.on('error', () => {
      for (const w of waiting.values()) w(undefined);
      waiting.clear();
      open();
    });
  };
  open();
  return {
    locate(tenant: string, user: string, assign: boolean): Promise<LocateStreamResponse | undefined> {
      return new Promise((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        if (opts.timeoutMs !== undefined) {
          setTimeout(() => {
            if (waiting.delete(n)) resolve(undefined);
          }, opts.timeoutMs);
        }
        stream.write({ id: n, request: { tenant, user, mailbox: '', assign } });
      });
    },
    close(): void {
      stream.removeAllListeners('error');
      stream.on('error', () => undefined);
      stream.end();
    },
  };
}

/**
 * The same over PlacementService.LocateMany: lookups made in one turn of the
 * event loop travel in one message (up to 1,000), answers come in batches.
 */
export function openLocateMany(client: PlacementServiceClient, token: string) {
  const waiting = new Map<number, (r: LocateStreamResponse | undefined) => void>();
  let id = 0;
  let queue: LocateStreamRequest[] = [];
  let scheduled = false;
  let stream: grpc.ClientDuplexStream<LocateBatch, LocateAnswers>;
  const flush = (): void => {
    scheduled = false;
    while (queue.length > 0) stream.write({ lookups: queue.splice(0, 1000) });
  };
  const open = (): void => {
    stream = client.locateMany(bearer(token));
    stream.on('data', (r: LocateAnswers) => {
      for (const a of r.answers) {
        waiting.get(a.id)?.(a);
        waiting.delete(a.id);
      }
    });
    stream.on('error', () => {
      for (const w of waiting.values()) w(undefined);
      waiting.clear();
      open();
    });
  };
  open();
  return {
    locate(tenant: string, user: string, assign: boolean): Promise<LocateStreamResponse | undefined> {
      return new Promise((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        queue.push({ id: n, request: { tenant, user, mailbox: '', assign } });
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    close(): void {
      stream.removeAllListeners('error');
      stream.on('error', () => undefined);
      stream.end();
      queue = [];
    },
  };
}
