import * as grpc from '@grpc/grpc-js';
import { type KeepAliveResponse, PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { bearer } from './grpc.js';

/**
 * A minimal backend node for tests: registers, then renews its lease over
 * one KeepAlive stream every `intervalMs` until stopped (a node that "dies"
 * simply stops renewing).
 */
export interface TestNode {
  readonly name: string;
  readonly leaseId: string;
  readonly ttl: number;
  /** Responses seen so far (ttl 0 = lost). */
  readonly responses: KeepAliveResponse[];
  stop(): void;
}

export async function startTestNode(address: string, token: string, opts: { name: string; ttlSeconds?: number; weight?: number; intervalMs?: number; imapAddress?: string; addresses?: Record<string, string> }): Promise<TestNode> {
  const client = new PlacementServiceClient(address, grpc.credentials.createInsecure());
  const reg = await new Promise<{ leaseId: string; ttlSeconds: number }>((resolve, reject) =>
    client.registerNode(
      { name: opts.name, imapAddress: opts.imapAddress ?? `127.0.0.1:${1000 + (opts.name.length % 100)}`, weight: opts.weight ?? 0, zone: '', ttlSeconds: opts.ttlSeconds ?? 2, addresses: opts.addresses ?? {} },
      bearer(token),
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res)),
    ),
  );
  const stream = client.keepAlive(bearer(token));
  const responses: KeepAliveResponse[] = [];
  stream.on('data', (r: KeepAliveResponse) => responses.push(r));
  stream.on('error', () => undefined);
  const send = () => stream.write({ node: opts.name, leaseId: reg.leaseId });
  send();
  const timer = setInterval(send, opts.intervalMs ?? 500);
  return {
    name: opts.name,
    leaseId: reg.leaseId,
    ttl: reg.ttlSeconds,
    responses,
    stop: () => {
      clearInterval(timer);
      stream.end();
      client.close();
    },
  };
}
