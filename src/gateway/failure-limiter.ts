/**
 * Failed logins per key (a client address, a user name) within a sliding
 * window. Keys come from the network, so memory is bounded: keys whose last
 * failure left the window are dropped as new failures arrive (keys are kept
 * in order of their last failure), and beyond `maxKeys` the least recently
 * failing keys go first.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly windowMs = 60_000,
    private readonly maxKeys = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  record(key: string): void {
    const now = this.now();
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs);
    list.push(now);
    // Re-inserted: the map stays ordered by last failure.
    this.failures.delete(key);
    this.failures.set(key, list);
    for (const [k, l] of this.failures) {
      if (this.failures.size <= this.maxKeys && now - l[l.length - 1]! < this.windowMs) break;
      this.failures.delete(k);
    }
  }

  /** Failures of the key within the window. */
  count(key: string): number {
    const now = this.now();
    return (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs).length;
  }

  /** Whether the key failed `max` times or more within the window. */
  exceeded(key: string, max: number): boolean {
    return this.count(key) >= max;
  }

  get size(): number {
    return this.failures.size;
  }
}
