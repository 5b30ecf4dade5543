import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { DomainError } from '../domain/errors.js';

interface Waiter {
  resolve(ttl: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

interface Channel {
  readonly stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
  /** Renewals sent and not yet answered, per lease, oldest first (etcd answers in order). */
  readonly waiting: Map<string, Waiter[]>;
}

/**
 * Renews etcd leases over one LeaseKeepAlive stream shared by every lease,
 * instead of a stream per renewal: a coordinator renews the leases of all
 * its nodes every TTL/3. A renewal not answered in time, or a broken
 * stream, fails the renewals it carried (the caller retries; the node's own
 * deadline decides whether its lease may have expired) and the next renewal
 * opens a fresh stream.
 */
export class LeaseRenewer {
  private channel: Promise<Channel> | undefined;
  /** The open channel, once `channel` resolved. */
  private current: Channel | undefined;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly timeoutMs = 5000,
  ) {}

  /** Renews a lease once; resolves to its remaining TTL in seconds, 0 when etcd no longer has it. */
  async renew(leaseId: string): Promise<number> {
    if (this.closed) throw new DomainError('unavailable', 'etcd unavailable while renewing a lease: shutting down', { retryable: true });
    const channel = await this.open();
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => this.fail(channel, new DomainError('unavailable', 'etcd did not answer a lease renewal in time', { retryable: true })), this.timeoutMs),
      };
      const list = channel.waiting.get(leaseId);
      if (list) list.push(waiter);
      else channel.waiting.set(leaseId, [waiter]);
      channel.stream.write({ ID: leaseId });
    });
  }

  close(): void {
    this.closed = true;
    const ch = this.channel;
    void ch?.then((c) => this.fail(c, new DomainError('unavailable', 'etcd unavailable while renewing a lease: shutting down', { retryable: true }))).catch(() => undefined);
  }

  private open(): Promise<Channel> {
    if (this.channel) return this.channel;
    const opening = this.client.leaseClient.leaseKeepAlive().then(
      (stream) => {
        const channel: Channel = { stream, waiting: new Map() };
        if (this.channel === opening) this.current = channel;
        stream.on('data', (res) => {
          const id = String(res.ID);
          const list = channel.waiting.get(id);
          const w = list?.shift();
          if (list && list.length === 0) channel.waiting.delete(id);
          if (!w) return;
          clearTimeout(w.timer);
          w.resolve(Math.max(0, Number(res.TTL)));
        });
        const broken = (err?: Error): void => this.fail(channel, new DomainError('unavailable', 'etcd unavailable while renewing a lease', { cause: err, retryable: true }));
        stream.on('error', broken);
        stream.on('end', () => broken());
        return channel;
      },
      (err: unknown) => {
        if (this.channel === opening) this.channel = undefined;
        throw new DomainError('unavailable', 'etcd unavailable while renewing a lease', { cause: err, retryable: true });
      },
    );
    this.channel = opening;
    return opening;
  }

  /** Ends a channel: its outstanding renewals fail, the next renewal opens a new one. */
  private fail(channel: Channel, err: Error): void {
    if (this.current === channel) {
      this.current = undefined;
      this.channel = undefined;
    }
    for (const list of channel.waiting.values()) {
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    channel.waiting.clear();
    try {
      channel.stream.cancel();
    } catch {
      // already gone
    }
  }
}
