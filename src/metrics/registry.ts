import { Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * One registry per component instance (a coordinator, a gateway): tests run
 * several in one process, and each scrape must show only its own figures.
 * The standard process and Node.js metrics (`process_*`, `nodejs_*`, the
 * names every Node dashboard expects) are included.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client also reports three sums as gauges named with the counters' "_total" suffix, which
  // `promtool check metrics` rejects; the same figures are there by type (nodejs_active_handles …).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  return registry;
}

/** Latency buckets in seconds, from 0.5 ms (a cached answer) to 10 s (a call stuck on etcd). */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
