import type * as grpc from '@grpc/grpc-js';
import type { LocateStreamRequest, LocateStreamResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
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
