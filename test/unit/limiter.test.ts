import { describe, expect, it } from 'vitest';
import { Limiter } from '../../src/gateway/core/limiter.js';

describe('Limiter', () => {
  it('runs at most `limit` tasks at once, the rest in order, and goes on after a failure', async () => {
    const l = new Limiter(2);
    let now = 0;
    let most = 0;
    const order: number[] = [];
    const task = (i: number) => async () => {
      now++;
      most = Math.max(most, now);
      await new Promise((r) => setTimeout(r, 5));
      now--;
      order.push(i);
      if (i === 1) throw new Error('one fails');
      return i;
    };
    const results = await Promise.allSettled([0, 1, 2, 3, 4].map((i) => l.run(task(i))));
    expect(most).toBe(2);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(order.slice(2).sort()).toEqual([2, 3, 4]);
    expect(l.waiting).toBe(0);
    expect(await l.run(async () => 'after')).toBe('after');
    expect(() => new Limiter(0)).toThrow(/positive integer/);
  });
});
