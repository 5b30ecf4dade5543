import type * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from 'commander';
import { type Connection, type ConnectionFlags, makeClient, resolveConnection } from './connection.js';
import { describeError } from './errors.js';
import type { CliIo } from './io.js';

type ClientCtor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ClientOptions>) => C;

/** A generated client's unary methods as promises bound to one connection. */
export type Calls<C> = {
  [K in keyof C as C[K] extends (req: infer _R, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: infer _CB) => grpc.ClientUnaryCall ? K : never]: C[K] extends {
    (req: infer Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: infer Res) => void): grpc.ClientUnaryCall;
  }
    ? (req: Req) => Promise<Res>
    : never;
};

function bind<C extends grpc.Client>(client: C, conn: Connection): Calls<C> {
  return new Proxy({} as Calls<C>, {
    get: (_t, prop: string) => (req: unknown) =>
      new Promise((resolve, reject) => {
        const fn = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[prop];
        if (typeof fn !== 'function') throw new Error(`no method ${prop}`);
        fn.call(client, req, conn.callCredentials, { deadline: Date.now() + conn.timeoutMs }, (err: grpc.ServiceError | null, res: unknown) =>
          err ? reject(err) : resolve(res),
        );
      }),
  });
}

/**
 * Runs one command against one service: resolves the connection from the
 * flags, calls, closes, and turns any failure into one readable line.
 */
export async function withService<C extends grpc.Client>(
  io: CliIo,
  flags: ConnectionFlags,
  ctor: ClientCtor<C>,
  fn: (api: Calls<C>, conn: Connection) => Promise<void>,
  opts: { extraDeadlineMs?: number } = {},
): Promise<void> {
  const conn = resolveConnection(flags, io.env, io.cwd);
  const client = makeClient(conn, ctor);
  try {
    // A call that waits on the server side (a move waiting for the old node) gets that wait on top of --timeout.
    await fn(bind(client, opts.extraDeadlineMs ? { ...conn, timeoutMs: conn.timeoutMs + opts.extraDeadlineMs } : conn), conn);
  } catch (err) {
    throw describeError(err, conn.addr);
  } finally {
    client.close();
  }
}

/** Fetches every page of a paged list call. */
export async function allPages<T>(fetch: (pageToken: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  do {
    const page = await fetch(token);
    out.push(...page.items);
    token = page.next;
  } while (token !== '');
  return out;
}

/** Parser for --expected-revision: a non-negative integer (0 = unconditional). */
export function parseRevisionOption(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new InvalidArgumentError('must be a revision number');
  return Number(value);
}

/** Parser for integer options. */
export function parseIntOption(value: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new InvalidArgumentError('must be a whole number');
  return Number(value);
}
