import { ExponentialBackoff, type IBackoff } from 'cockatiel';
import type { AgentLogger } from './agent.js';

/** Pauses of a reconnect loop: exponential with decorrelated jitter (cockatiel), 100 ms up to 3 s (a coordinator that is back is used again within about that). */
export class Backoff {
  private readonly factory = new ExponentialBackoff({ initialDelay: 100, maxDelay: 3000 });
  private state: IBackoff<unknown> | undefined;

  /** The pause before the next attempt. */
  next(): number {
    this.state = this.state ? this.state.next(undefined) : this.factory.next();
    return this.state.duration;
  }

  reset(): void {
    this.state = undefined;
  }
}

/**
 * The log of one reconnect loop: a warning when it starts failing, a
 * summary every `summaryMs` while it keeps failing, a note when it works
 * again: never a line per attempt (a loop retrying for minutes writes a
 * handful of lines, not thousands).
 */
export class RetryLog {
  private failing = false;
  private attempts = 0;
  private since = 0;
  private lastSummary = 0;

  constructor(
    private readonly what: string,
    private readonly log: AgentLogger,
    private readonly summaryMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}

  failed(err: string): void {
    const now = this.now();
    this.attempts++;
    if (!this.failing) {
      this.failing = true;
      this.since = now;
      this.lastSummary = now;
      this.log.warn({ err }, `${this.what} failed; retrying with backoff`);
    } else if (now - this.lastSummary >= this.summaryMs) {
      this.lastSummary = now;
      this.log.warn({ err, attempts: this.attempts, failingForMs: now - this.since }, `${this.what} still failing`);
    }
  }

  /** The loop works; returns whether it had been failing. */
  ok(): boolean {
    if (!this.failing) return false;
    this.log.info({ attempts: this.attempts, downMs: this.now() - this.since }, `${this.what} works again`);
    this.failing = false;
    this.attempts = 0;
    return true;
  }
}
