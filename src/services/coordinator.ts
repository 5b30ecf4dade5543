import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { DomainError } from '../domain/errors.js';
import { AuthServiceService } from '../gen/mailshare/v1/auth.js';
import { AclServiceService } from '../gen/mailshare/v1/acl.js';
import { AuditServiceService } from '../gen/mailshare/v1/audit.js';
import { DirectoryServiceService } from '../gen/mailshare/v1/directory.js';
import { MailboxServiceService } from '../gen/mailshare/v1/mailbox.js';
import { DEFAULT_ALLOWED_ADDRESSES, parseAllowList } from '../domain/address-allowlist.js';
import { PlacementServiceService } from '../gen/mailshare/v1/placement.js';
import { EventStore } from '../store/event-store.js';
import { EventServiceDefinition, createEventService } from './event-service.js';
import { SnapshotCopy } from './snapshot-copy.js';
import { WatchHub } from '../store/watch-hub.js';
import { PlacementStore } from '../store/placement-store.js';
import { createPlacementService } from './placement-service.js';
import { SystemServiceService } from '../gen/mailshare/v1/system.js';
import { AuditStore } from '../store/audit-store.js';
import { DirectoryStore } from '../store/directory-store.js';
import { MailboxStore } from '../store/mailbox-store.js';
import { createAclService } from './acl-service.js';
import { IndexChecker } from '../store/index-check.js';
import { BarrierStore } from '../store/barrier-store.js';
import { createAuditService } from './audit-service.js';
import { createDirectoryService } from './directory-service.js';
import { createMailboxService } from './mailbox-service.js';
import { ClusterStatusReader } from '../store/cluster-status.js';
import type { Keys } from '../store/keys.js';
import type { TokenStore } from '../store/token-store.js';
import { Authenticator } from './auth.js';
import { createAuthService } from './auth-service.js';
import { addReflection } from './reflection.js';
import { statusRoutes } from './status-page.js';
import { routeEndpoint } from './route-endpoint.js';
import { TenantCache } from '../store/tenant-cache.js';
import { ANY_ROLE, authenticated, type RpcDeps } from './rpc.js';
import { createSystemService } from './system-service.js';
import { CoordinatorMetrics } from './coordinator-metrics.js';
import { HttpListener, metricsRoute } from '../metrics/http-listener.js';

export type CoordinatorState = 'starting' | 'serving' | 'draining' | 'stopped';

export interface CoordinatorOptions {
  /** host:port; port 0 picks a free port. */
  listen: string;
  tls?: { cert: string; key: string; clientCa?: string | undefined } | undefined;
  client: Etcd3;
  /**
   * The etcd client of the event streams (each a watch of everything, with
   * previous values); default `client`. One etcd client carries all its
   * watches on one stream, so a burst (a node's lease expiring with its
   * 10,000 assignments) for the agents' watches would hold up the
   * coordinator's own caches behind it: give the event streams their own.
   */
  eventsClient?: Etcd3;
  endpoints: readonly string[];
  keys: Keys;
  tokens: TokenStore;
  logger: Logger;
  version: string;
  embeddedEtcd: boolean;
  /** Health probe interval in ms; default 2000. */
  healthIntervalMs?: number;
  /** Audit records older than this are pruned, in ms; default 90 days. */
  auditRetentionMs?: number;
  /** Bounded-load slack ε of node choice; default 0.25. */
  placementEpsilon?: number;
  /** CIDRs and host names a node may register as its address; default loopback and private ranges. */
  placementAllowedAddresses?: readonly string[];
  /** Bytes an event watcher may have queued before it is cut off; default 8 MiB. */
  eventsBufferLimit?: number;
  /**
   * Keep a watch-fed copy of every entity and serve agents' snapshots from
   * it (compact mailboxes, no etcd read per snapshot); default true. False:
   * every snapshot is read from etcd.
   */
  snapshotCopy?: boolean;
  /** Serve event streams from one shared etcd watch (default true); false: one etcd watch per stream. */
  sharedWatch?: boolean;
  /**
   * host:port of the HTTP listener (/metrics); off when absent. HTTPS with
   * the gRPC certificate when `tls` is set (client certificates too).
   */
  httpListen?: string | undefined;
  /** The metrics to serve (its etcd interceptor should be on `client`); default: new ones. */
  metrics?: CoordinatorMetrics;
}

/** Services whose health is reported individually (plus "" for the server). */
const SERVICE_NAMES = [
  'mailshare.v1.SystemService',
  'mailshare.v1.AuthService',
  'mailshare.v1.DirectoryService',
  'mailshare.v1.MailboxService',
  'mailshare.v1.AclService',
  'mailshare.v1.AuditService',
  'mailshare.v1.PlacementService',
  'mailshare.v1.EventService',
];

const DAY_MS = 24 * 3600 * 1000;

/**
 * One stateless gRPC coordinator: serves the mailshare API, the standard
 * health service and server reflection. All state is in etcd.
 */
export class Coordinator {
  private state: CoordinatorState = 'starting';
  private readonly server: grpc.Server;
  private readonly health: HealthImplementation;
  private readonly cluster: ClusterStatusReader;
  private healthTimer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private readonly audit: AuditStore;
  private readonly placement: PlacementStore;
  /** Tenants' login domains, watch-fed (the route endpoint). */
  private readonly tenants: TenantCache;
  private readonly barriers: BarrierStore;
  private readonly snapshotCopy: SnapshotCopy | undefined;
  private readonly hub: WatchHub | undefined;
  private etcdHealthy = false;
  private boundPort = 0;
  private readonly log: Logger;
  private readonly stopping = new AbortController();
  readonly metrics: CoordinatorMetrics;
  private readonly http: HttpListener | undefined;

  constructor(private readonly opts: CoordinatorOptions) {
    this.log = opts.logger.child({ component: 'coordinator' });
    this.metrics = opts.metrics ?? new CoordinatorMetrics();
    this.server = new grpc.Server({
      interceptors: [this.metrics.rpcInterceptor],
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
    });
    this.health = new HealthImplementation({ '': 'NOT_SERVING' });
    this.cluster = new ClusterStatusReader(opts.client, opts.endpoints);
    // Every long-lived stream (one per agent) listens for shutdown: thousands are normal here.
    setMaxListeners(0, this.stopping.signal);
    const deps: RpcDeps = { auth: new Authenticator(opts.tokens), log: opts.logger.child({ component: 'rpc' }), stopping: this.stopping.signal };

    this.server.addService(
      SystemServiceService,
      createSystemService({
        ...deps,
        version: opts.version,
        startedAt: new Date(),
        embeddedEtcd: opts.embeddedEtcd,
        cluster: this.cluster,
        state: () => this.state,
        healthy: () => this.etcdHealthy,
      }),
    );
    this.server.addService(AuthServiceService, createAuthService({ ...deps, tokens: opts.tokens }));
    this.audit = new AuditStore(opts.client, opts.keys);
    const directory = new DirectoryStore(opts.client, opts.keys, this.audit);
    const mailboxes = new MailboxStore(opts.client, opts.keys, this.audit, directory);
    this.server.addService(DirectoryServiceService, createDirectoryService({ ...deps, directory, mailboxes }));
    this.server.addService(MailboxServiceService, createMailboxService({ ...deps, directory, mailboxes, index: new IndexChecker({ client: opts.client, keys: opts.keys, audit: this.audit }) }));
    this.server.addService(AuditServiceService, createAuditService({ ...deps, audit: this.audit }));
    this.tenants = new TenantCache(opts.client, opts.keys, opts.logger.child({ component: 'tenants' }));
    this.placement = new PlacementStore(opts.client, opts.keys, opts.logger.child({ component: 'placement' }), opts.placementEpsilon ?? 0.25);
    this.metrics.observePlacement(this.placement);
    this.server.addService(AclServiceService, createAclService({ ...deps, directory, mailboxes, placement: this.placement, tenants: this.tenants }));
    this.barriers = new BarrierStore(opts.client, opts.keys, opts.logger.child({ component: 'barriers' }));
    this.server.addService(PlacementServiceService, createPlacementService({ ...deps, placement: this.placement, barriers: this.barriers, directory, allowedAddresses: parseAllowList(opts.placementAllowedAddresses ?? DEFAULT_ALLOWED_ADDRESSES) }));
    const events = new EventStore(opts.eventsClient ?? opts.client, opts.keys);
    if (opts.snapshotCopy !== false) this.snapshotCopy = new SnapshotCopy(events, opts.logger.child({ component: 'snapshot-copy' }), `coordinator ${process.pid}`);
    if (opts.sharedWatch !== false) this.hub = new WatchHub(events, opts.logger.child({ component: 'watch-hub' }));
    this.server.addService(EventServiceDefinition, createEventService({ ...deps, events, placement: this.placement, ...(this.snapshotCopy ? { copy: this.snapshotCopy } : {}), ...(this.hub ? { hub: this.hub } : {}), maxBufferedBytes: opts.eventsBufferLimit ?? 8 * 1024 * 1024, healthy: () => this.etcdHealthy, watchers: this.metrics }));
    this.health.addToServer(this.server);
    if (opts.httpListen !== undefined) {
      this.http = new HttpListener({
        listen: opts.httpListen,
        tls: opts.tls,
        routes: [
          metricsRoute(this.metrics.registry),
          routeEndpoint({ auth: deps.auth, placement: this.placement, tenants: this.tenants, log: this.log, observe: (status, seconds) => this.metrics.observeRoute(status, seconds) }),
          ...statusRoutes({ auth: deps.auth, placement: this.placement, directory, mailboxes, events, log: this.log }),
        ],
        onError: (err, path) => this.log.error({ err, path }, 'HTTP handler failed'),
      });
    }
    // Reflection is served to authenticated callers only (grpcurl -H 'authorization: Bearer …').
    addReflection(this.server, (handler) => authenticated(deps, 'ServerReflectionInfo', ANY_ROLE, handler));
  }

  /** Binds, checks etcd once, and starts serving. Returns the bound address. */
  async start(): Promise<string> {
    const creds = this.credentials();
    await this.placement.start();
    await this.tenants.ready;
    await this.barriers.ready;
    // Loads in the background: snapshots are read from etcd until it is ready.
    this.snapshotCopy?.start();
    this.hub?.start();
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.opts.listen, creds, (err, port) => {
        if (err) reject(new DomainError('unavailable', `listen: cannot listen on ${this.opts.listen}: ${err.message}`, { field: 'listen' }));
        else resolve(port);
      });
    });
    await this.http?.start();
    await this.probeEtcd();
    this.healthTimer = setInterval(() => void this.probeEtcd(), this.opts.healthIntervalMs ?? 2000);
    this.healthTimer.unref();
    // Every coordinator prunes; deleting an already-deleted range is harmless.
    this.pruneTimer = setInterval(() => void this.pruneAudit(), Math.min(3600_000, Math.max(1000, (this.opts.auditRetentionMs ?? 90 * DAY_MS) / 10)));
    this.pruneTimer.unref();
    void this.pruneAudit();
    this.state = 'serving';
    this.log.info({ address: this.address(), http: this.httpAddress(), tls: !!this.opts.tls, mtls: !!this.opts.tls?.clientCa }, 'serving');
    return this.address();
  }

  address(): string {
    const host = this.opts.listen.slice(0, this.opts.listen.lastIndexOf(':'));
    return `${host}:${this.boundPort}`;
  }

  /** Where the HTTP listener (/metrics) is bound, when there is one. */
  httpAddress(): string | undefined {
    return this.http?.listening ? this.http.address() : undefined;
  }

  getState(): CoordinatorState {
    return this.state;
  }

  /**
   * Graceful: report NOT_SERVING (load balancers stop sending), refuse new
   * calls, let in-flight calls finish within timeoutMs, then force.
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'draining';
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.setHealth('NOT_SERVING');
    // Long-lived streams (watches, keepalives) would hold the shutdown open:
    // end them so their clients reconnect elsewhere.
    this.stopping.abort();
    const graceful = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.log.warn({ timeoutMs }, 'graceful shutdown timed out; forcing');
        this.server.forceShutdown();
        resolve();
      }, timeoutMs);
    });
    await Promise.race([graceful, forced]);
    clearTimeout(timer);
    await this.http?.close();
    await this.placement.close();
    await this.tenants.close();
    await this.barriers.close();
    await this.snapshotCopy?.close();
    await this.hub?.close();
    this.cluster.close();
    this.state = 'stopped';
    this.log.info('stopped');
  }

  forceShutdown(): void {
    void this.http?.close();
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.server.forceShutdown();
    void this.placement.close();
    void this.tenants.close();
    void this.barriers.close();
    void this.snapshotCopy?.close();
    void this.hub?.close();
    this.cluster.close();
    this.state = 'stopped';
  }

  private async pruneAudit(): Promise<void> {
    try {
      const deleted = await this.audit.prune(new Date(Date.now() - (this.opts.auditRetentionMs ?? 90 * DAY_MS)));
      if (deleted > 0) this.log.info({ deleted }, 'pruned audit records');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'audit pruning failed; will retry');
    }
  }

  private async probeEtcd(): Promise<void> {
    let ok: boolean;
    try {
      const res = await this.opts.client.get(this.opts.keys.healthProbe).exec();
      this.metrics.probed(Number(res.header.revision));
      ok = true;
    } catch (err) {
      this.metrics.probed(undefined);
      ok = false;
      if (this.etcdHealthy) this.log.warn({ err: (err as Error).message }, 'etcd unreachable; reporting NOT_SERVING');
    }
    if (ok !== this.etcdHealthy && ok) this.log.info('etcd reachable; reporting SERVING');
    this.etcdHealthy = ok;
    if (this.state !== 'draining' && this.state !== 'stopped') this.setHealth(ok ? 'SERVING' : 'NOT_SERVING');
  }

  private setHealth(status: 'SERVING' | 'NOT_SERVING'): void {
    this.health.setStatus('', status);
    for (const s of SERVICE_NAMES) this.health.setStatus(s, status);
  }

  private credentials(): grpc.ServerCredentials {
    const tls = this.opts.tls;
    if (!tls) return grpc.ServerCredentials.createInsecure();
    const read = (file: string, field: string): Buffer => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw new DomainError('invalid_argument', `${field}: cannot read ${file}: ${(err as Error).message}`, { field });
      }
    };
    const ca = tls.clientCa ? read(tls.clientCa, 'tls.clientCa') : null;
    return grpc.ServerCredentials.createSsl(
      ca,
      [{ private_key: read(tls.key, 'tls.key'), cert_chain: read(tls.cert, 'tls.cert') }],
      ca !== null,
    );
  }
}
