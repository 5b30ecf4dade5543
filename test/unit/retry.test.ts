import { describe, expect, it } from 'vitest';
import { Backoff, RetryLog } from '../../src/agent/retry.js';

describe('reconnect pacing', () => {
  it('backs off exponentially, with jitter, up to 3 s, and starts over after a success', () => {
    const b = new Backoff();
    const pauses = Array.from({ length: 12 }, () => b.next());
    expect(pauses[0]).toBeLessThan(500);
    expect(Math.max(...pauses)).toBeLessThanOrEqual(3000);
    expect(pauses.slice(-3).every((p) => p >= 1000)).toBe(true);
    expect(pauses.reduce((a, p) => a + p, 0)).toBeGreaterThan(10_000);
    b.reset();
    expect(b.next()).toBeLessThan(500);
  });

  it('logs a failing loop once, then a summary per period, and once when it works again', () => {
    const lines: string[] = [];
    let now = 0;
    const log = { info: (_o: object, m?: string) => lines.push(`info ${m}`), warn: (_o: object, m?: string) => lines.push(`warn ${m}`), debug: () => undefined };
    const r = new RetryLog('the event stream', log, 30_000, () => now);
    for (let i = 0; i < 10_000; i++) {
      r.failed('connection refused');
      now += 10;
    }
    r.ok();
    r.ok();
    expect(lines).toEqual([
      'warn the event stream failed; retrying with backoff',
      'warn the event stream still failing',
      'warn the event stream still failing',
      'warn the event stream still failing',
      'info the event stream works again',
    ]);
  });
});
