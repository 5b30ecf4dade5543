/**
 * At most `limit` tasks at a time; the others wait their turn in order.
 * (Migrations after a drain: a thousand logins at once would make every one
 * of them late at the new node's Dovecot.)
 */
export class Limiter {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`limit must be a positive integer, not ${limit}`);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }

  /** Tasks waiting for a turn. */
  get waiting(): number {
    return this.queue.length;
  }
}
