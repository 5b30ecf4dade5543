import { Gauge, Histogram, LATENCY_BUCKETS, type Registry, createRegistry } from '../metrics/registry.js';
import { etcdClientMetrics, rpcServerMetrics } from '../metrics/grpc-metrics.js';
import type { PlacementStore } from '../store/placement-store.js';

/** One event stream being served: what it has delivered so far. */
export interface WatchTracker {
  delivered(revision: number): void;
  close(): void;
}

/** Where the event service reports its streams (see CoordinatorMetrics.watching). */
export interface WatchRegistry {
  watching(consumer: string, from: number): WatchTracker;
}

/**
 * Everything a coordinator exposes on /metrics: its gRPC calls, its etcd
 * requests, the cluster as its watch-fed caches see it (nodes by state,
 * users per node against the bounded-load capacity), and how far behind
 * etcd's head each event stream it serves is. No per-user labels: nodes
 * and consumers (agents) are the finest grain.
 */
export class CoordinatorMetrics implements WatchRegistry {
  readonly registry: Registry = createRegistry();
  readonly rpcInterceptor = rpcServerMetrics(this.registry);
  readonly etcdInterceptor = etcdClientMetrics(this.registry, (revision) => {
    if (revision > this.head) this.head = revision;
  });
  private head = 0;
  private etcdUp = false;
  private readonly streams = new Set<{ consumer: string; revision: number }>();
  private placement: PlacementStore | undefined;
  private readonly routes = new Histogram({
    name: 'mailshare_route_duration_seconds',
    help: 'Time to answer POST /v1/route (Dovecot proxies asking where a user lives), by HTTP status.',
    labelNames: ['status'],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  constructor() {
    const gauge = (opts: { name: string; help: string; labelNames?: string[] }, fill: (g: Gauge) => void): void => {
      const g: Gauge = new Gauge({ ...opts, labelNames: opts.labelNames ?? [], registers: [this.registry], collect: () => fill(g) });
    };
    // One report per scrape for the four gauges that read it (each builds the node list and the ring).
    let memo: { at: number; report: ReturnType<PlacementStore['loadReport']> } | undefined;
    const report = (): ReturnType<PlacementStore['loadReport']> => {
      if (!this.placement) return { total: 0, nodes: [] };
      if (!memo || performance.now() - memo.at > 10) memo = { at: performance.now(), report: this.placement.loadReport() };
      return memo.report;
    };
    const nodes = (): ReturnType<PlacementStore['loadReport']>['nodes'] => report().nodes;
    gauge({ name: 'mailshare_etcd_head_revision', help: 'The newest etcd revision this coordinator has seen (in any etcd response; probed every 2 s).' }, (g) => g.set(this.head));
    gauge({ name: 'mailshare_etcd_up', help: '1 when the last probe reached etcd, else 0 (the coordinator then reports NOT_SERVING).' }, (g) => g.set(this.etcdUp ? 1 : 0));
    gauge(
      {
        name: 'mailshare_event_stream_lag_revisions',
        help: "etcd head revision minus the revision an event stream has delivered, per consumer (node:NAME or token:ID; the largest of a consumer's streams).",
        labelNames: ['consumer'],
      },
      (g) => {
        g.reset();
        const lag = new Map<string, number>();
        for (const s of this.streams) lag.set(s.consumer, Math.max(lag.get(s.consumer) ?? 0, this.head - s.revision, 0));
        for (const [consumer, v] of lag) g.set({ consumer }, v);
      },
    );
    gauge({ name: 'mailshare_nodes', help: 'Known nodes by state (active, draining, down: no live lease).', labelNames: ['state'] }, (g) => {
      const counts: Record<string, number> = { active: 0, draining: 0, down: 0 };
      for (const n of nodes()) counts[n.state] = (counts[n.state] ?? 0) + 1;
      for (const [state, v] of Object.entries(counts)) g.set({ state }, v);
    });
    gauge({ name: 'mailshare_node_users', help: 'Users assigned to a node.', labelNames: ['node'] }, (g) => {
      g.reset();
      for (const n of nodes()) g.set({ node: n.name }, n.users);
    });
    gauge({ name: 'mailshare_node_capacity_users', help: 'Bounded-load capacity of a node now: users it may hold before new ones go elsewhere (0: takes none).', labelNames: ['node'] }, (g) => {
      g.reset();
      for (const n of nodes()) g.set({ node: n.name }, n.capacity);
    });
    gauge({ name: 'mailshare_assignments', help: 'Users assigned to any node.' }, (g) => g.set(report().total));
  }

  observeRoute(status: number, seconds: number): void {
    this.routes.observe({ status: String(status) }, seconds);
  }

  /** The placement store whose caches the node gauges read (set once it exists). */
  observePlacement(placement: PlacementStore): void {
    this.placement = placement;
  }

  /** The result of a health probe: etcd's head revision, or undefined when it failed. */
  probed(revision: number | undefined): void {
    this.etcdUp = revision !== undefined;
    if (revision !== undefined) this.head = Math.max(this.head, revision);
  }

  watching(consumer: string, from: number): WatchTracker {
    const s = { consumer, revision: from > 0 ? from - 1 : this.head };
    this.streams.add(s);
    return {
      delivered: (revision) => {
        if (revision > s.revision) s.revision = revision;
      },
      close: () => this.streams.delete(s),
    };
  }
}
