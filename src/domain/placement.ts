import { DomainError } from './errors.js';

/**
 * Choosing a backend node for a user: consistent hashing with bounded loads,
 * after V. Mirrokni, M. Thorup, M. Zadimoghaddam, "Consistent Hashing with
 * Bounded Loads", SODA 2018 (arXiv:1608.01350).
 *
 * Every node owns `weight` points on a 32-bit hash ring. A user hashes to a
 * point and takes the first node clockwise whose load is below its capacity,
 *   capacity(node) = ceil((1 + ε) · (total + 1) · weight / Σ weights),
 * where total counts the users already placed. So no node ever holds more
 * than (1 + ε) times its weighted fair share, and a user moves only when its
 * node goes away or fills up, as in plain consistent hashing. Nodes that are
 * draining or down own no points (they take no new users).
 */
export interface RingNode {
  readonly name: string;
  /** Relative capacity, 1..1000; the node owns this many ring points. */
  readonly weight: number;
}

export const MIN_WEIGHT = 1;
export const MAX_WEIGHT = 1000;
export const DEFAULT_WEIGHT = 100;
export const DEFAULT_EPSILON = 0.25;

export interface Ring {
  readonly nodes: ReadonlyMap<string, RingNode>;
  readonly totalWeight: number;
  /** Sorted point hashes and the node owning each. */
  readonly points: Uint32Array;
  readonly owners: readonly string[];
}

export function parseWeight(n: number, field = 'weight'): number {
  if (!Number.isInteger(n) || n < MIN_WEIGHT || n > MAX_WEIGHT) {
    throw new DomainError('invalid_argument', `${field}: must be a whole number from ${MIN_WEIGHT} to ${MAX_WEIGHT}`, { field });
  }
  return n;
}

export function parseEpsilon(x: number, field = 'epsilon'): number {
  if (!Number.isFinite(x) || x <= 0 || x > 10) throw new DomainError('invalid_argument', `${field}: must be > 0 and ≤ 10`, { field });
  return x;
}

export function buildRing(nodes: readonly RingNode[]): Ring {
  const pts: Array<[number, string]> = [];
  const map = new Map<string, RingNode>();
  let total = 0;
  for (const n of nodes) {
    map.set(n.name, n);
    total += n.weight;
    for (let i = 0; i < n.weight; i++) pts.push([hash32(`${n.name}#${i}`), n.name]);
  }
  // Ties (astronomically rare) break by name so every coordinator builds the same ring.
  pts.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return { nodes: map, totalWeight: total, points: Uint32Array.from(pts.map((p) => p[0])), owners: pts.map((p) => p[1]) };
}

export function capacity(ring: Ring, node: string, totalLoad: number, epsilon: number): number {
  const n = ring.nodes.get(node);
  if (!n || ring.totalWeight === 0) return 0;
  return Math.ceil(((1 + epsilon) * (totalLoad + 1) * n.weight) / ring.totalWeight);
}

/**
 * The node for `key`, or undefined when the ring is empty. `load(node)` is
 * how many users the node holds now; `totalLoad` their sum over the ring.
 */
export function chooseNode(ring: Ring, key: string, load: (node: string) => number, totalLoad: number, epsilon = DEFAULT_EPSILON): string | undefined {
  const n = ring.points.length;
  if (n === 0) return undefined;
  let i = lowerBound(ring.points, hash32(key));
  const tried = new Set<string>();
  for (let step = 0; step < n && tried.size < ring.nodes.size; step++, i++) {
    const owner = ring.owners[i % n]!;
    if (tried.has(owner)) continue;
    tried.add(owner);
    if (load(owner) < capacity(ring, owner, totalLoad, epsilon)) return owner;
  }
  // Unreachable while ε > 0 (capacities sum above totalLoad + 1), kept as a safe fallback.
  return ring.owners[lowerBound(ring.points, hash32(key)) % n];
}

function lowerBound(arr: Uint32Array, x: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** FNV-1a over UTF-16 code units, finished with MurmurHash3's fmix32 for avalanche. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Protocols a node may register a server address for, besides IMAP. */
export const NODE_PROTOCOLS: readonly string[] = ['lmtp', 'pop3', 'sieve', 'submission', 'doveadm'];
