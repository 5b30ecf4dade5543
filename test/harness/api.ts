import * as grpc from '@grpc/grpc-js';
import { AclServiceClient } from '../../src/gen/mailshare/v1/acl.js';
import { AuditServiceClient } from '../../src/gen/mailshare/v1/audit.js';
import { AuthServiceClient } from '../../src/gen/mailshare/v1/auth.js';
import { DirectoryServiceClient } from '../../src/gen/mailshare/v1/directory.js';
import { MailboxServiceClient } from '../../src/gen/mailshare/v1/mailbox.js';
import { bearer } from './grpc.js';

/** A generated client's unary methods as promise-returning functions. */
type Promisified<C> = {
  [K in keyof C as C[K] extends (req: infer _R, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: infer _CB) => grpc.ClientUnaryCall ? K : never]: C[K] extends {
    (req: infer Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: (err: grpc.ServiceError | null, res: infer Res) => void): grpc.ClientUnaryCall;
  }
    ? (req: Req) => Promise<Res>
    : never;
};

function promisify<C extends grpc.Client>(client: C, token: string | undefined): Promisified<C> {
  return new Proxy({} as Promisified<C>, {
    get: (_t, prop: string) => (req: unknown) =>
      new Promise((resolve, reject) => {
        const fn = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[prop]!;
        fn.call(client, req, bearer(token), { deadline: Date.now() + 30_000 }, (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res)));
      }),
  });
}

export interface Api {
  auth: Promisified<AuthServiceClient>;
  directory: Promisified<DirectoryServiceClient>;
  mailbox: Promisified<MailboxServiceClient>;
  acl: Promisified<AclServiceClient>;
  audit: Promisified<AuditServiceClient>;
  close(): void;
}

/** Typed promise clients of every mailshare service, calling with `token`. */
export function connectApi(address: string, token: string | undefined, creds = grpc.credentials.createInsecure()): Api {
  const clients = [
    new AuthServiceClient(address, creds),
    new DirectoryServiceClient(address, creds),
    new MailboxServiceClient(address, creds),
    new AclServiceClient(address, creds),
    new AuditServiceClient(address, creds),
  ] as const;
  return {
    auth: promisify(clients[0], token),
    directory: promisify(clients[1], token),
    mailbox: promisify(clients[2], token),
    acl: promisify(clients[3], token),
    audit: promisify(clients[4], token),
    close: () => clients.forEach((c) => c.close()),
  };
}

/**
 * Node tokens, one per node name (a node token acts for its own node
 * only), minted on first use and kept.
 */
export function nodeTokens(admin: Api): (node: string) => Promise<string> {
  const made = new Map<string, Promise<string>>();
  return (node) => {
    let t = made.get(node);
    if (!t) {
      t = admin.auth.createToken({ role: `node:${node}`, description: `test node ${node}` }).then((r) => r.token);
      made.set(node, t);
    }
    return t;
  };
}
