import { describe, expect, it } from 'vitest';
import { FailureLimiter } from '../../src/gateway/failure-limiter.js';

describe('failed-login limiter', () => {
  it('counts failures per key within the window', () => {
    let now = 0;
    const f = new FailureLimiter(60_000, 1000, () => now);
    for (let i = 0; i < 5; i++) f.record('user:bob');
    expect(f.exceeded('user:bob', 5)).toBe(true);
    expect(f.exceeded('user:bob', 6)).toBe(false);
    expect(f.exceeded('user:alice', 1)).toBe(false);
    now = 59_999;
    expect(f.exceeded('user:bob', 5)).toBe(true);
    now = 60_000;
    expect(f.exceeded('user:bob', 1)).toBe(false);
  });

  it('forgets keys whose failures left the window, so random names cannot fill memory', () => {
    let now = 0;
    const f = new FailureLimiter(60_000, 1_000_000, () => now);
    for (let i = 0; i < 5000; i++) f.record(`user:random${i}`);
    expect(f.size).toBe(5000);
    now = 61_000;
    f.record('user:fresh');
    expect(f.size).toBe(1);
    expect(f.exceeded('user:fresh', 1)).toBe(true);
  });

  it('keeps at most maxKeys, dropping the least recently failing', () => {
    let now = 0;
    const f = new FailureLimiter(60_000, 100, () => now);
    f.record('ip:10.0.0.1');
    for (let i = 0; i < 500; i++) {
      now++;
      f.record(`user:u${i}`);
      if (i % 50 === 0) f.record('ip:10.0.0.1');
    }
    expect(f.size).toBe(100);
    // Failing again keeps a key among the most recent.
    expect(f.exceeded('ip:10.0.0.1', 10)).toBe(true);
    expect(f.exceeded('user:u0', 1)).toBe(false);
    expect(f.exceeded('user:u499', 1)).toBe(true);
  });
});
