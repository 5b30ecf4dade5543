import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildRing, capacity, chooseNode, hash32, parseWeight } from '../../src/domain/placement.js';

function place(nodes: Array<{ name: string; weight: number }>, users: string[], eps = 0.25) {
  const ring = buildRing(nodes);
  const loads = new Map<string, number>();
  const where = new Map<string, string>();
  let total = 0;
  for (const u of users) {
    const n = chooseNode(ring, u, (x) => loads.get(x) ?? 0, total, eps)!;
    where.set(u, n);
    loads.set(n, (loads.get(n) ?? 0) + 1);
    total++;
  }
  return { ring, loads, where };
}

const users = (n: number, prefix = 'user') => Array.from({ length: n }, (_, i) => `${prefix}${i}@example.com`);

describe('consistent hashing with bounded loads', () => {
  it('never exceeds (1+ε) × the weighted fair share', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.constantFrom(0.1, 0.25, 1),
        (weights, count, eps) => {
          const nodes = weights.map((w, i) => ({ name: `n${i}`, weight: w }));
          const { ring, loads } = place(nodes, users(count), eps);
          const W = weights.reduce((a, b) => a + b, 0);
          for (const n of nodes) {
            expect(loads.get(n.name) ?? 0).toBeLessThanOrEqual(Math.ceil(((1 + eps) * count * n.weight) / W));
            expect(capacity(ring, n.name, count - 1, eps)).toBe(Math.ceil(((1 + eps) * count * n.weight) / W));
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('honours weights', () => {
    const { loads } = place(
      [
        { name: 'big', weight: 300 },
        { name: 'small', weight: 100 },
      ],
      users(8000),
    );
    const ratio = loads.get('big')! / loads.get('small')!;
    expect(ratio).toBeGreaterThan(2.4);
    expect(ratio).toBeLessThan(3.6);
  });

  it('is deterministic and independent of node order', () => {
    const a = place([{ name: 'a', weight: 100 }, { name: 'b', weight: 100 }, { name: 'c', weight: 50 }], users(500));
    const b = place([{ name: 'c', weight: 50 }, { name: 'a', weight: 100 }, { name: 'b', weight: 100 }], users(500));
    expect([...a.where]).toEqual([...b.where]);
  });

  it('moves few users when a node joins (consistent hashing)', () => {
    const nodes = ['a', 'b', 'c', 'd'].map((name) => ({ name, weight: 100 }));
    const us = users(4000);
    const before = place(nodes, us, 10).where; // large ε: pure consistent hashing
    const after = place([...nodes, { name: 'e', weight: 100 }], us, 10).where;
    const moved = us.filter((u) => before.get(u) !== after.get(u));
    expect(moved.every((u) => after.get(u) === 'e')).toBe(true);
    expect(moved.length / us.length).toBeGreaterThan(0.1);
    expect(moved.length / us.length).toBeLessThan(0.3);
  });

  it('gives nothing from an empty ring and validates weights', () => {
    expect(chooseNode(buildRing([]), 'x', () => 0, 0)).toBeUndefined();
    expect(() => parseWeight(0)).toThrow(/weight: must be/);
    expect(() => parseWeight(1001)).toThrow();
    expect(parseWeight(1000)).toBe(1000);
  });

  it('spreads hashes evenly', () => {
    const buckets = new Array(16).fill(0);
    for (let i = 0; i < 16000; i++) buckets[hash32(`k${i}`) >>> 28]++;
    for (const b of buckets) expect(Math.abs(b - 1000)).toBeLessThan(150);
  });
});
