import * as grpc from '@grpc/grpc-js';
import { AclServiceClient } from '../gen/mailshare/v1/acl.js';
import { MailboxServiceClient } from '../gen/mailshare/v1/mailbox.js';

/** The services a gateway session calls on a coordinator. */
export interface CoordinatorApi {
  readonly acl: AclServiceClient;
  readonly mailboxes: MailboxServiceClient;
}

/**
 * Clients of every coordinator, used in order: a call that finds its
 * coordinator unavailable is tried on the next one (each at most once), and
 * later calls start from the one that answered. Coordinators are stateless,
 * so any of them gives the same answer.
 */
export class CoordinatorClients {
  private readonly apis: CoordinatorApi[];
  private current = 0;

  constructor(addresses: readonly string[], credentials: grpc.ChannelCredentials, options: grpc.ClientOptions = {}) {
    if (addresses.length === 0) throw new Error('coordinators: give at least one address');
    this.apis = addresses.map((a) => ({ acl: new AclServiceClient(a, credentials, options), mailboxes: new MailboxServiceClient(a, credentials, options) }));
  }

  /** One unary call, failed over on UNAVAILABLE. */
  async call<T>(fn: (api: CoordinatorApi, cb: (err: grpc.ServiceError | null, res: T) => void) => unknown): Promise<T> {
    let lastErr: unknown;
    for (let tried = 0; tried < this.apis.length; tried++) {
      const at = this.current;
      try {
        return await new Promise<T>((resolve, reject) => {
          fn(this.apis[at]!, (err, res) => (err ? reject(err) : resolve(res)));
        });
      } catch (err) {
        if ((err as grpc.ServiceError).code !== grpc.status.UNAVAILABLE) throw err;
        lastErr = err;
        if (this.current === at) this.current = (at + 1) % this.apis.length;
      }
    }
    throw lastErr;
  }

  close(): void {
    for (const a of this.apis) {
      a.acl.close();
      a.mailboxes.close();
    }
  }
}
