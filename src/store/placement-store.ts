import type { Etcd3, ICompare } from 'etcd3';
import type { Logger } from 'pino';
import { DomainError } from '../domain/errors.js';
import { type Ring, buildRing, capacity, chooseNode } from '../domain/placement.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';
import { LeaseRenewer } from './lease-renewer.js';
import { type PrefixCache, createPrefixCache } from './prefix-cache.js';

export type NodeState = 'active' | 'draining';

export interface NodeConfig {
  readonly name: string;
  readonly imapAddress: string;
  readonly weight: number;
  readonly zone: string;
  readonly state: NodeState;
  readonly registeredAt: Date;
  readonly revision: number;
  /** Why the node last went down, when it said; '' otherwise. */
  readonly downReason: string;
  /** The node's servers for other protocols ("lmtp", "pop3"): host:port. */
  readonly addresses: Readonly<Record<string, string>>;
}

export interface NodeLive {
  readonly name: string;
  readonly leaseId: string;
}

export interface Assignment {
  readonly tenant: string;
  readonly user: string;
  readonly node: string;
  readonly leaseId: string;
  /** Create revision of the assignment key: the fencing token. */
  readonly epoch: number;
}

interface CachedAssignment {
  readonly node: string;
  readonly epoch: number;
  readonly leaseId: string;
}

/** How long a writer waits for its own change to reach this coordinator's cache (read-your-writes). */
const SETTLE_MS = 5000;

export interface NodeView extends NodeConfig {
  readonly live: NodeLive | undefined;
  readonly users: number;
}

/**
 * Nodes, their leases, and user assignments in etcd. Coordinators keep
 * watch-fed copies of the nodes and of per-node user counts to choose nodes
 * without reading etcd; every assignment itself is a compare-and-swap
 * transaction (the key must not exist, and the chosen node must still be
 * live on the lease the assignment is bound to).
 */
/** An assignment as etcd holds it (its key's create revision is the epoch). */
function assignmentOf(tenant: string, user: string, kv: { value: Buffer; lease: string; create_revision: string }): Assignment {
  return { tenant, user, node: decodeAssignmentNode(kv.value) ?? '', leaseId: kv.lease, epoch: Number(kv.create_revision) };
}

/** What Locate answers: the assignment, and whether this call created it. */
export interface LocateResult {
  assignment: Assignment | undefined;
  created: boolean;
}

/** Users assigned in one transaction (two guards each, plus one per node: under etcd's 128). */
const ASSIGN_BATCH = 50;
/**
 * Batched assignment transactions in flight at once: a burst of logins after a failover is
 * bounded by round trips to etcd, not by etcd's work (its transactions are small), so several
 * go at once; their choices count in each other's loads (`inFlight`).
 */
const ASSIGN_BATCHES = 16;

/** How long a release waits at most for the lease of a holder that did not acknowledge a move to run out. */
const LEASE_WAIT_MAX_S = 60;

export class PlacementStore {
  private readonly configs: PrefixCache<NodeConfig>;
  private readonly lives: PrefixCache<NodeLive>;
  /** Every assignment, watch-fed: Locate answers from here, and node loads are counted from it. */
  private readonly assignments: PrefixCache<CachedAssignment>;
  /** Move intents in flight (a user between nodes): new logins wait for them to end. */
  private readonly moves: PrefixCache<true>;
  private readonly counts = new Map<string, number>();
  /** Users chosen for each node by batches not yet seen in `counts` (written, or being written). */
  private readonly inFlight = new Map<string, number>();
  private inFlightTotal = 0;
  /** Assignments per tenant (the status page). */
  private readonly tenantCounts = new Map<string, number>();
  /** Assignments per lease, so a revoke can wait until this cache saw them go. */
  private readonly perLease = new Map<string, number>();
  private total = 0;
  private ringMemo: { sig: string; ring: Ring } | undefined;
  /** One etcd LeaseKeepAlive stream for every node this coordinator renews. */
  private readonly renewer: LeaseRenewer;
  /**
   * This coordinator's own lease, for its move requests: if it dies mid-move,
   * etcd drops them within the TTL and Locate assigns the users again.
   */
  private moveLease: Promise<{ id: string; timer: NodeJS.Timeout }> | undefined;
  private readonly moveLeaseTtl: number;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    logger: Logger,
    private readonly epsilon: number,
    opts: { moveLeaseTtlSeconds?: number } = {},
  ) {
    this.renewer = new LeaseRenewer(client);
    this.moveLeaseTtl = opts.moveLeaseTtlSeconds ?? 10;
    this.configs = createPrefixCache({
      client,
      prefix: keys.nodesPrefix,
      logger,
      decode: (key, value) => decodeConfig(key.slice(keys.nodesPrefix.length), value, 0),
    });
    this.lives = createPrefixCache({
      client,
      prefix: keys.liveNodesPrefix,
      logger,
      decode: (key, value) => ({ name: key.slice(keys.liveNodesPrefix.length), leaseId: value.toString() }),
    });
    this.moves = createPrefixCache<true>({ client, prefix: keys.movesPrefix, logger, decode: () => true });
    this.assignments = createPrefixCache<CachedAssignment>({
      client,
      prefix: keys.assignmentsPrefix,
      logger,
      decode: (_key, value, meta) => {
        const node = decodeAssignmentNode(value);
        return node === undefined ? undefined : { node, epoch: meta.createRevision, leaseId: meta.lease };
      },
      onReset: () => {
        this.counts.clear();
        this.tenantCounts.clear();
        this.perLease.clear();
        this.total = 0;
      },
      onChange: (key, before, after) => {
        const tenant = key.slice(keys.assignmentsPrefix.length, key.indexOf('/', keys.assignmentsPrefix.length));
        const delta = (after !== undefined ? 1 : 0) - (before !== undefined ? 1 : 0);
        if (delta !== 0) {
          const n = (this.tenantCounts.get(tenant) ?? 0) + delta;
          if (n > 0) this.tenantCounts.set(tenant, n);
          else this.tenantCounts.delete(tenant);
        }
        if (before !== undefined) {
          this.counts.set(before.node, (this.counts.get(before.node) ?? 1) - 1);
          const left = (this.perLease.get(before.leaseId) ?? 1) - 1;
          if (left > 0) this.perLease.set(before.leaseId, left);
          else this.perLease.delete(before.leaseId);
          this.total--;
        }
        if (after !== undefined) {
          this.counts.set(after.node, (this.counts.get(after.node) ?? 0) + 1);
          this.perLease.set(after.leaseId, (this.perLease.get(after.leaseId) ?? 0) + 1);
          this.total++;
        }
      },
    });
  }

  async start(): Promise<void> {
    await Promise.all([this.configs.ready, this.lives.ready, this.assignments.ready, this.moves.ready]);
  }

  async close(): Promise<void> {
    // A graceful stop lets go of its move requests at once.
    const moves = await this.moveLease?.catch(() => undefined);
    this.moveLease = undefined;
    if (moves) {
      clearInterval(moves.timer);
      await this.revoke(moves.id).catch(() => undefined);
    }
    this.renewer.close();
    await Promise.all([this.configs.close(), this.lives.close(), this.assignments.close(), this.moves.close()]);
  }

  /**
   * Grants a new lease and records the node as live on it. If the node was
   * live on another lease, that lease is revoked first: its assignments
   * belong to a previous life of the node and must not survive.
   */
  async register(req: { name: string; imapAddress: string; addresses?: Readonly<Record<string, string>>; weight: number; zone: string; ttlSeconds: number }): Promise<{ leaseId: string; ttl: number; node: NodeConfig }> {
    const old = await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(req.name)).exec());
    const oldLease = old.kvs[0]?.value.toString();
    if (oldLease) await this.revoke(oldLease);
    const grant = await etcdOp('granting a lease', () => this.client.leaseClient.leaseGrant({ TTL: req.ttlSeconds }));
    const leaseId = grant.ID;
    try {
      for (let attempt = 0; ; attempt++) {
        const cur = await etcdOp('reading a node', () => this.client.get(this.keys.node(req.name)).exec());
        const kv = cur.kvs[0];
        const prev = kv ? decodeConfig(req.name, kv.value, Number(kv.mod_revision)) : undefined;
        const config = {
          imapAddress: req.imapAddress,
          addresses: { ...(req.addresses ?? {}) },
          weight: req.weight,
          zone: req.zone,
          state: prev?.state ?? 'active',
          registeredAt: new Date().toISOString(),
        };
        const res = await etcdOp('registering a node', () =>
          this.client
            .if(this.keys.node(req.name), 'Mod', '==', prev?.revision ?? 0)
            .then(
              this.client.put(this.keys.node(req.name)).value(JSON.stringify(config)),
              this.client.put(this.keys.liveNode(req.name)).value(leaseId).lease(leaseId),
            )
            .commit(),
        );
        if (res.succeeded) {
          return {
            leaseId,
            ttl: Number(grant.TTL),
            node: { name: req.name, ...config, registeredAt: new Date(config.registeredAt), revision: Number(res.header.revision), downReason: '' },
          };
        }
        if (attempt > 20) throw new DomainError('conflict', 'node: too many concurrent registrations', { field: 'name' });
      }
    } catch (err) {
      await this.revoke(leaseId);
      throw err;
    }
  }

  /** Renews a lease once; returns the remaining TTL in seconds, 0 when the lease is gone. */
  keepAlive(leaseId: string): Promise<number> {
    return this.renewer.renew(leaseId);
  }

  /** Whether `leaseId` is the lease `node` is live on (the cache first, etcd when it disagrees). */
  async isLeaseOf(node: string, leaseId: string): Promise<boolean> {
    if (this.lives.get(this.keys.liveNode(node))?.leaseId === leaseId) return true;
    const live = await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(node)).exec());
    return live.kvs[0]?.value.toString() === leaseId;
  }

  /**
   * Revokes the node's lease if it is still the one the node is live on.
   * With a reason, it is first written to the node's record, in one
   * transaction guarded by the live key's lease and the record's revision.
   */
  async deregister(name: string, leaseId: string, reason = ''): Promise<boolean> {
    for (let attempt = 0; reason !== ''; attempt++) {
      const cur = await etcdOp('reading a node', () => this.client.get(this.keys.node(name)).exec());
      const kv = cur.kvs[0];
      if (!kv) break;
      const stored = JSON.parse(kv.value.toString()) as Record<string, unknown>;
      const res = await etcdOp('recording why a node stops', () =>
        this.client
          .if(this.keys.liveNode(name), 'Value', '==', leaseId)
          .and(this.keys.node(name), 'Mod', '==', Number(kv.mod_revision))
          .then(this.client.put(this.keys.node(name)).value(JSON.stringify({ ...stored, downReason: reason })))
          .commit(),
      );
      if (res.succeeded) break;
      const live = await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(name)).exec());
      if (live.kvs[0]?.value.toString() !== leaseId) return false;
      if (attempt > 20) throw new DomainError('conflict', 'name: too many concurrent changes of the node', { field: 'name' });
    }
    const live = await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(name)).exec());
    if (live.kvs[0]?.value.toString() !== leaseId) return false;
    await this.revoke(leaseId);
    return true;
  }

  /**
   * Revokes a lease (etcd deletes its keys in one revision), then waits until
   * this coordinator's cache saw its assignments go, so a Locate answered here
   * right after never names the node that let its users go.
   */
  async revoke(leaseId: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId });
    } catch (err) {
      // Already expired or revoked: nothing left to do.
      if (!/not found|requested lease not found/i.test((err as Error).message)) throw new DomainError('unavailable', 'etcd unavailable while revoking a lease', { cause: err });
    }
    await this.assignments.waitUntil(() => !this.perLease.has(leaseId), SETTLE_MS);
  }

  listNodes(): NodeView[] {
    const out: NodeView[] = [];
    for (const [, c] of this.configs.entries()) {
      out.push({ ...c, live: this.lives.get(this.keys.liveNode(c.name)), users: this.counts.get(c.name) ?? 0 });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /**
   * Every known node with its state (down: no live lease), the users it
   * holds, and its bounded-load capacity now (how many it may hold before
   * the next new user goes elsewhere; 0 when it takes none): what the
   * metrics and the status page show. From the watch-fed copies only.
   */
  loadReport(): { total: number; nodes: Array<{ name: string; state: NodeState | 'down'; users: number; capacity: number }> } {
    const ring = this.activeRing();
    return {
      total: this.total,
      nodes: this.listNodes().map((n) => ({
        name: n.name,
        state: n.live ? n.state : 'down',
        users: n.users,
        capacity: capacity(ring, n.name, this.total, this.epsilon),
      })),
    };
  }

  /** Users assigned in a tenant (from the watch-fed copy). */
  assignedIn(tenant: string): number {
    return this.tenantCounts.get(tenant) ?? 0;
  }

  /** Resolves once the copy of the assignments has loaded and reached `revision` (false on timeout). */
  async assignmentsReached(revision: number, timeoutMs: number): Promise<boolean> {
    await this.assignments.ready;
    return this.assignments.waitFor(revision, timeoutMs);
  }

  /** The assignment of a user as this coordinator's copy has it (no etcd read). */
  cachedAssignment(tenant: string, user: string): { node: string; epoch: number } | undefined {
    const a = this.assignments.get(this.keys.assignment(tenant, user));
    return a ? { node: a.node, epoch: a.epoch } : undefined;
  }

  /** Seconds left on a lease (etcd's view), undefined when it is gone. */
  async leaseSecondsLeft(leaseId: string): Promise<number | undefined> {
    const res = await etcdOp('reading a lease', () => this.client.leaseClient.leaseTimeToLive({ ID: leaseId }));
    const ttl = Number(res.TTL);
    return ttl > 0 ? ttl : undefined;
  }

  async getNode(name: string): Promise<NodeConfig | undefined> {
    const res = await etcdOp('reading a node', () => this.client.get(this.keys.node(name)).exec());
    const kv = res.kvs[0];
    return kv ? decodeConfig(name, kv.value, Number(kv.mod_revision)) : undefined;
  }

  async setState(name: string, state: NodeState): Promise<NodeConfig> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const cur = await this.getNode(name);
      if (!cur) throw new DomainError('not_found', `name: node "${name}" is not registered`, { field: 'name' });
      const next = { imapAddress: cur.imapAddress, addresses: cur.addresses, weight: cur.weight, zone: cur.zone, state, registeredAt: cur.registeredAt.toISOString() };
      const res = await etcdOp('changing a node', () =>
        this.client.if(this.keys.node(name), 'Mod', '==', cur.revision).then(this.client.put(this.keys.node(name)).value(JSON.stringify(next))).commit(),
      );
      if (res.succeeded) return { ...cur, state, revision: Number(res.header.revision) };
    }
    throw new DomainError('conflict', 'name: too many concurrent changes to this node; try again', { field: 'name', retryable: true });
  }

  /** Returns how many users' assignments end with it (a dry run: would end, nothing changed). */
  async remove(name: string, force: boolean, dryRun = false): Promise<number> {
    const cur = await this.getNode(name);
    if (!cur) throw new DomainError('not_found', `name: node "${name}" is not registered`, { field: 'name' });
    const live = await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(name)).exec());
    const lease = live.kvs[0]?.value.toString();
    if (lease && !force) {
      throw new DomainError('failed_precondition', `name: node "${name}" is live; stop it first, or use force (which ends its users' assignments)`, { field: 'name' });
    }
    const users = lease ? this.usersOf(name).length : 0;
    if (dryRun) return users;
    if (lease) await this.revoke(lease);
    await etcdOp('removing a node', () => this.client.delete().key(this.keys.node(name)).exec());
    return users;
  }

  async getAssignment(tenant: string, user: string): Promise<Assignment | undefined> {
    const res = await etcdOp('reading an assignment', () => this.client.get(this.keys.assignment(tenant, user)).exec());
    const kv = res.kvs[0];
    if (!kv) return undefined;
    return assignmentOf(tenant, user, kv);
  }

  /**
   * The user's assignment, creating one when `assign` is set and there is
   * none: the chosen node must still be live on the lease the new key is
   * bound to, and the key must not exist, in one transaction. Without
   * `assign` the answer comes from the watch-fed cache (no etcd round trip);
   * a coordinator answers a write only once its own cache shows it, so its
   * clients read their writes, while another coordinator may lag by the
   * watch delay. Safety never rests on this read: the epoch and the lease do.
   */
  async locate(tenant: string, user: string, assign: boolean): Promise<LocateResult> {
    const key = this.keys.assignment(tenant, user);
    if (!assign) {
      const cached = this.assignments.get(key);
      return { assignment: cached ? { tenant, user, ...cached } : undefined, created: false };
    }
    // Many at once (a failover's burst of logins): together, a few transactions for dozens of users.
    return this.batchedAssign(tenant, user);
  }

  /** Assignments asked for in this turn of the event loop and not yet written, by tenant/user. */
  private readonly assignQueue = new Map<string, { tenant: string; user: string; waiters: Array<{ resolve: (r: LocateResult) => void; reject: (err: unknown) => void }> }>();
  private assignFlush: NodeJS.Immediate | undefined;
  private assignBatchesRunning = 0;

  private batchedAssign(tenant: string, user: string): Promise<LocateResult> {
    return new Promise((resolve, reject) => {
      const k = `${tenant}/${user}`;
      const queued = this.assignQueue.get(k);
      if (queued) queued.waiters.push({ resolve, reject });
      else this.assignQueue.set(k, { tenant, user, waiters: [{ resolve, reject }] });
      this.assignFlush ??= setImmediate(() => this.flushAssigns());
    });
  }

  /** Writes what is queued, ASSIGN_BATCH users a transaction, a few transactions at a time. */
  private flushAssigns(): void {
    this.assignFlush = undefined;
    while (this.assignQueue.size > 0 && this.assignBatchesRunning < ASSIGN_BATCHES) {
      const batch = [...this.assignQueue.values()].slice(0, ASSIGN_BATCH);
      for (const b of batch) this.assignQueue.delete(`${b.tenant}/${b.user}`);
      this.assignBatchesRunning++;
      void this.assignBatch(batch).finally(() => {
        this.assignBatchesRunning--;
        if (this.assignQueue.size > 0) this.assignFlush ??= setImmediate(() => this.flushAssigns());
      });
    }
  }

  /**
   * Assigns a batch: one read of their keys from etcd itself (never the
   * cache: a just-expired assignment is not handed out), then, for those
   * without one, one transaction that creates all their keys, guarded per
   * key as a single assignment is (the key absent, no move under way) and
   * per chosen node (its live key still on the lease the keys are bound
   * to). All of them get that transaction's revision as their epoch (an
   * epoch orders one user's assignments; users never compare theirs). If
   * any guard fails, each user takes the one-by-one path.
   */
  private async assignBatch(batch: Array<{ tenant: string; user: string; waiters: Array<{ resolve: (r: LocateResult) => void; reject: (err: unknown) => void }> }>): Promise<void> {
    const settle = (b: (typeof batch)[number], r: Promise<LocateResult>): Promise<void> =>
      r.then(
        (v) => b.waiters.forEach((w) => w.resolve(v)),
        (err: unknown) => b.waiters.forEach((w) => w.reject(err)),
      );
    if (batch.length === 1) return settle(batch[0]!, this.assignOne(batch[0]!.tenant, batch[0]!.user));
    try {
      const keys = batch.map((b) => Buffer.from(this.keys.assignment(b.tenant, b.user)));
      const read = await etcdOp('reading assignments', () => this.client.kv.txn({ compare: [], success: keys.map((key) => ({ request_range: { key } })), failure: [] }));
      const missing: Array<(typeof batch)[number]> = [];
      batch.forEach((b, i) => {
        const kv = read.responses[i]?.response_range?.kvs[0];
        if (kv) b.waiters.forEach((w) => w.resolve({ assignment: assignmentOf(b.tenant, b.user, kv), created: false }));
        else missing.push(b);
      });
      if (missing.length === 0) return;
      const ring = this.activeRing();
      // Each choice counts in the loads the next one sees (in this batch and in the others in
      // flight), as one-by-one assignments would, until the cache has seen it.
      const chosen: Array<{ b: (typeof batch)[number]; node: string; leaseId: string }> = [];
      const release = (): void => {
        for (const c of chosen) {
          const n = (this.inFlight.get(c.node) ?? 1) - 1;
          if (n <= 0) this.inFlight.delete(c.node);
          else this.inFlight.set(c.node, n);
        }
        this.inFlightTotal -= chosen.length;
        chosen.length = 0;
      };
      try {
        for (const b of missing) {
          const node = chooseNode(ring, `${b.tenant}/${b.user}`, (n) => (this.counts.get(n) ?? 0) + (this.inFlight.get(n) ?? 0), this.total + this.inFlightTotal, this.epsilon);
          if (node === undefined) throw new DomainError('unavailable', 'no active node is registered', { retryable: true });
          this.inFlight.set(node, (this.inFlight.get(node) ?? 0) + 1);
          this.inFlightTotal++;
          chosen.push({ b, node, leaseId: this.lives.get(this.keys.liveNode(node))!.leaseId });
        }
        const nodes = new Map(chosen.map((c) => [c.node, c.leaseId]));
        const at = new Date().toISOString();
        const write = await etcdOp('assigning users', () =>
          this.client.kv.txn({
            compare: [
              ...chosen.flatMap(({ b }) => [
                { key: Buffer.from(this.keys.assignment(b.tenant, b.user)), target: 'Create' as const, result: 'Equal' as const, create_revision: '0' },
                // A move in progress assigns the user itself.
                { key: Buffer.from(this.keys.move(b.tenant, b.user)), target: 'Create' as const, result: 'Equal' as const, create_revision: '0' },
              ]),
              ...[...nodes].map(([node, lease]) => ({ key: Buffer.from(this.keys.liveNode(node)), target: 'Lease' as const, result: 'Equal' as const, lease })),
            ],
            success: chosen.map(({ b, node, leaseId }) => ({ request_put: { key: Buffer.from(this.keys.assignment(b.tenant, b.user)), value: Buffer.from(JSON.stringify({ node, assignedAt: at })), lease: leaseId } })),
            failure: [],
          }),
        );
        if (!write.succeeded) {
          // Lost a guard: each is assigned alone (and counted by the cache as it lands).
          release();
          await Promise.all(missing.map((b) => settle(b, this.assignOne(b.tenant, b.user))));
          return;
        }
        const epoch = Number(write.header.revision);
        await this.assignments.waitFor(epoch, SETTLE_MS);
        for (const { b, node, leaseId } of chosen) b.waiters.forEach((w) => w.resolve({ assignment: { tenant: b.tenant, user: b.user, node, leaseId, epoch }, created: true }));
      } finally {
        release();
      }
    } catch (err) {
      for (const b of batch) b.waiters.forEach((w) => w.reject(err));
    }
  }

  /** One user's assignment, read and written alone (with retries when nodes change under it). */
  private async assignOne(tenant: string, user: string): Promise<LocateResult> {
    const key = this.keys.assignment(tenant, user);
    for (let attempt = 0; attempt < 20; attempt++) {
      // About to write: read etcd itself, not the cache, so a just-expired assignment is never handed out.
      const existing = await this.getAssignment(tenant, user);
      if (existing) return { assignment: existing, created: false };
      const ring = this.activeRing();
      const node = chooseNode(ring, `${tenant}/${user}`, (n) => this.counts.get(n) ?? 0, this.total, this.epsilon);
      if (node === undefined) throw new DomainError('unavailable', 'no active node is registered', { retryable: true });
      const live = this.lives.get(this.keys.liveNode(node))!;
      const res = await etcdOp('assigning a user', () =>
        this.client
          .if(key, 'Create', '==', 0)
          .and(this.keys.liveNode(node), 'Lease', '==', live.leaseId)
          // A move in progress assigns the user itself.
          .and(this.keys.move(tenant, user), 'Create', '==', 0)
          .then(this.client.put(key).value(JSON.stringify({ node, assignedAt: new Date().toISOString() })).lease(live.leaseId))
          .else(this.client.get(key))
          .commit(),
      );
      if (res.succeeded) {
        const epoch = Number(res.header.revision);
        await this.assignments.waitFor(epoch, SETTLE_MS);
        return { assignment: { tenant, user, node, leaseId: live.leaseId, epoch }, created: true };
      }
      // Someone else assigned the user (our cache had not seen it yet): that one stands.
      const kv = res.responses[0]?.response_range?.kvs[0];
      if (kv) {
        await this.assignments.waitFor(Number(kv.mod_revision), SETTLE_MS);
        return { assignment: assignmentOf(tenant, user, kv), created: false };
      }
      // The node's lease changed, or a move is under way: look again.
      await this.clearStaleMove(tenant, user);
      await new Promise((r) => setTimeout(r, Math.min(5 * 2 ** attempt, 200)));
    }
    throw new DomainError('unavailable', 'could not assign the user: nodes are changing too fast; try again', { retryable: true });
  }

  /**
   * Ends the assignment if it is still the one of `epoch`; with `ifUnheld`,
   * only if no node holds the user (one transaction: the holds range must be
   * empty, so a hold written concurrently either prevents the release or
   * comes after it and is fenced like any session of the old epoch).
   */
  async release(tenant: string, user: string, epoch: number, ifUnheld = false, node?: string): Promise<{ released: boolean; held: boolean }> {
    const key = Buffer.from(this.keys.assignment(tenant, user));
    const holdsPrefix = this.keys.holdsPrefix(tenant, user);
    const holds = Buffer.from(holdsPrefix);
    const holdsEnd = Buffer.from(prefixEnd(holdsPrefix));
    const compare: ICompare[] = [{ key, target: 'Create', result: 'Equal', create_revision: String(epoch) }];
    if (node !== undefined) {
      // A node releases only its own users: the assignment must be bound to that node's lease.
      const cached = this.assignments.get(this.keys.assignment(tenant, user));
      if (cached && cached.epoch === epoch && cached.node !== node) {
        throw new DomainError('permission_denied', `user: ${user} is assigned to node ${cached.node}, not ${node}`, { field: 'user' });
      }
      const lease = await this.liveLease(node);
      if (lease === undefined) return { released: false, held: false };
      compare.push({ key, target: 'Lease', result: 'Equal', lease });
    }
    if (ifUnheld) compare.push({ key: holds, range_end: holdsEnd, target: 'Create', result: 'Equal', create_revision: '0' });
    const res = await etcdOp('releasing an assignment', () =>
      this.client.kv.txn({
        compare,
        success: [{ request_delete_range: { key } }],
        failure: ifUnheld ? [{ request_range: { key: holds, range_end: holdsEnd, count_only: true } }] : [],
      }),
    );
    if (res.succeeded) {
      await this.assignments.waitFor(Number(res.header.revision), SETTLE_MS);
      return { released: true, held: false };
    }
    return { released: false, held: Number(res.responses[0]?.response_range?.count ?? 0) > 0 };
  }

  /** A move request's end, in the transaction that ends it: the request and the holders' acknowledgments of it. */
  private endMoveOps(tenant: string, user: string) {
    return [this.client.delete().key(this.keys.move(tenant, user)), this.client.delete().prefix(this.keys.moveAcksPrefix(tenant, user))];
  }

  /** The lease a live node is registered on: this coordinator's cache, or etcd when the cache has none. */
  private async liveLease(node: string): Promise<string | undefined> {
    const cached = this.lives.get(this.keys.liveNode(node))?.leaseId;
    if (cached !== undefined) return cached;
    return (await etcdOp('reading a node', () => this.client.get(this.keys.liveNode(node)).exec())).kvs[0]?.value.toString();
  }

  /**
   * Records that `node` (holding the user) stopped its sessions of the user
   * for the move of assignment `epoch`: a key on the node's lease, written
   * only while that move's request stands. False when it does not.
   */
  async ackMove(tenant: string, user: string, epoch: number, node: string): Promise<boolean> {
    const lease = await this.liveLease(node);
    if (lease === undefined) throw new DomainError('failed_precondition', `node: "${node}" is not live; register first`, { field: 'node' });
    const moveKey = this.keys.move(tenant, user);
    const intent = await etcdOp('reading a move', () => this.client.get(moveKey).exec());
    const kv = intent.kvs[0];
    if (!kv || moveEpoch(kv.value) !== epoch) return false;
    const res = await etcdOp('acknowledging a move', () =>
      this.client
        .if(moveKey, 'Mod', '==', kv.mod_revision)
        .and(this.keys.liveNode(node), 'Value', '==', lease)
        .then(this.client.put(this.keys.moveAck(tenant, user, node)).value(String(epoch)).lease(lease))
        .commit(),
    );
    return res.succeeded;
  }

  /**
   * Waits until every node holding the user (other than `except`, the
   * releasing node) acknowledged the move of `epoch`, or its hold is gone;
   * returns the nodes that did neither. After `timeoutMs` the holders still
   * silent may be cut off from the coordinators, which is why they cannot
   * answer: such a node stops its sessions once it can no longer prove its
   * lease, and the hold (on that lease) goes when the lease runs out. So
   * they are waited for until then: the longest time their leases have
   * left, plus a second, as etcd tells it at that moment (LEASE_WAIT_MAX_S
   * at most).
   */
  async waitMoveAcks(tenant: string, user: string, epoch: number, except: string | undefined, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
    let deadline = Date.now() + timeoutMs;
    let leasesAsked = false;
    const nameOf = (key: string) => key.slice(key.lastIndexOf('/') + 1);
    for (let pause = 5; ; pause = Math.min(pause * 2, 100)) {
      const [holds, acks] = await Promise.all([
        etcdOp('reading holds', () => this.client.getAll().prefix(this.keys.holdsPrefix(tenant, user)).exec()),
        etcdOp('reading move acknowledgments', () => this.client.getAll().prefix(this.keys.moveAcksPrefix(tenant, user)).strings()),
      ]);
      const acked = new Set(Object.entries(acks).filter(([, v]) => Number(v) === epoch).map(([k]) => nameOf(k)));
      const missing = holds.kvs.map((kv) => ({ node: nameOf(kv.key.toString()), lease: kv.lease })).filter((h) => h.node !== except && !acked.has(h.node));
      if (missing.length === 0 || signal?.aborted) return missing.map((h) => h.node);
      if (Date.now() + pause > deadline) {
        if (leasesAsked) return missing.map((h) => h.node);
        leasesAsked = true;
        const left = await Promise.all(missing.map((h) => (h.lease === '0' ? Promise.resolve(undefined) : this.leaseSecondsLeft(h.lease).catch(() => undefined))));
        deadline = Date.now() + Math.min(LEASE_WAIT_MAX_S, Math.max(0, ...left.map((x) => x ?? 0)) + 1) * 1000;
      }
      await new Promise((r) => setTimeout(r, pause));
    }
  }

  /**
   * Records (or ends) that `node` serves sessions of a user: a key on the
   * node's current lease, written only while the node is live on it.
   */
  async hold(tenant: string, user: string, node: string, hold: boolean): Promise<void> {
    const key = this.keys.hold(tenant, user, node);
    if (!hold) {
      await etcdOp('ending a hold', () => this.client.delete().key(key).exec());
      return;
    }
    const liveKey = this.keys.liveNode(node);
    // The node's lease as this coordinator's cache knows it; the write is guarded by it, and only a
    // stale cache costs a read of etcd itself.
    let leaseId = this.lives.get(liveKey)?.leaseId;
    for (let attempt = 0; attempt < 2; attempt++) {
      if (leaseId) {
        const lease = leaseId;
        const res = await etcdOp('holding a user', () => this.client.if(liveKey, 'Value', '==', lease).then(this.client.put(key).value('').lease(lease)).commit());
        if (res.succeeded) return;
      }
      const live = await etcdOp('reading a node', () => this.client.get(liveKey).exec());
      leaseId = live.kvs[0]?.value.toString();
      if (!leaseId) throw new DomainError('failed_precondition', `node: "${node}" is not live`, { field: 'node' });
    }
    throw new DomainError('failed_precondition', `node: "${node}" registered again meanwhile; hold again`, { field: 'node', retryable: true });
  }

  /**
   * Ends the user's assignment gracefully: writes a move request that the
   * holding node sees as an event (it closes the user's sessions and
   * releases), waits for the release up to `timeoutMs`, ends the assignment
   * itself if the node did not, then (for a move) assigns the user to the
   * target with a new, higher epoch, in the same transaction that removes the
   * request. Locate does not assign a user while its move request exists.
   */
  async move(tenant: string, user: string, opts: { to?: string; kick: boolean; timeoutMs: number }): Promise<{ from: string; releasedByNode: boolean; assignment?: Assignment }> {
    const moveKey = this.keys.move(tenant, user);
    const key = this.keys.assignment(tenant, user);
    const cur = await this.getAssignment(tenant, user);
    if (opts.to !== undefined) this.requireLive(opts.to);
    // Choose the target before disturbing anyone: with nowhere to go, fail at once.
    let target = opts.kick ? undefined : (opts.to ?? this.chooseExcept(tenant, user, cur?.node));
    let releasedByNode = true;
    let intentRev = 0;
    if (cur) {
      const intent = JSON.stringify({ epoch: cur.epoch, from: cur.node, to: opts.to ?? '', at: new Date().toISOString(), kick: opts.kick });
      const lease = await this.moveLeaseId();
      const res = await etcdOp('requesting a move', () =>
        this.client.if(moveKey, 'Create', '==', 0).and(key, 'Create', '==', cur.epoch).then(this.client.put(moveKey).value(intent).lease(lease)).commit(),
      ).catch((err: unknown) => {
        // The lease ran out (this coordinator could not renew it for a while): the next move takes a new one.
        const cause = (err as { cause?: unknown }).cause;
        if (/lease not found/i.test(`${String(err)} ${String(cause)}`)) this.dropMoveLease(lease);
        throw err;
      });
      if (!res.succeeded) throw new DomainError('conflict', `user: ${user} is already being moved, or was just reassigned; try again`, { field: 'user', retryable: true });
      intentRev = Number(res.header.revision);
      releasedByNode = await this.waitGone(key, intentRev, opts.timeoutMs);
      if (!releasedByNode) {
        // The node did not answer in time: end the assignment for it. Its
        // epoch is now stale, so anything it still tries is refused.
        await etcdOp('ending an assignment', () => this.client.if(key, 'Create', '==', cur.epoch).then(this.client.delete().key(key)).commit());
      }
    }
    if (opts.kick) {
      if (intentRev) await etcdOp('finishing a kick', () => this.client.if(moveKey, 'Mod', '==', intentRev).then(...this.endMoveOps(tenant, user)).commit());
      if (cur) await this.assignments.waitUntil(() => this.assignments.get(key)?.epoch !== cur.epoch, SETTLE_MS);
      return { from: cur?.node ?? '', releasedByNode };
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      if (attempt > 0 && opts.to === undefined) target = this.chooseExcept(tenant, user, cur?.node);
      const live = this.requireLive(target!);
      const res = await etcdOp('assigning a moved user', () =>
        this.client
          .if(key, 'Create', '==', 0)
          .and(this.keys.liveNode(target!), 'Lease', '==', live.leaseId)
          .and(moveKey, 'Mod', '==', intentRev)
          .then(
            this.client.put(key).value(JSON.stringify({ node: target!, assignedAt: new Date().toISOString() })).lease(live.leaseId),
            ...this.endMoveOps(tenant, user),
          )
          .commit(),
      );
      if (res.succeeded) {
        const epoch = Number(res.header.revision);
        await this.assignments.waitFor(epoch, SETTLE_MS);
        return { from: cur?.node ?? '', releasedByNode, assignment: { tenant, user, node: target!, leaseId: live.leaseId, epoch } };
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    if (intentRev) await this.client.if(moveKey, 'Mod', '==', intentRev).then(...this.endMoveOps(tenant, user)).commit().catch(() => undefined);
    throw new DomainError('unavailable', `user: could not assign ${user} to a new node; it will get one on its next Locate`, { retryable: true });
  }

  /** Where a move would take the user now (the real move's choice, nothing written); `to` must be live. */
  async planMove(tenant: string, user: string, to: string | undefined): Promise<{ from: string; to: string }> {
    const cur = await this.getAssignment(tenant, user);
    if (to !== undefined) this.requireLive(to);
    return { from: cur?.node ?? '', to: to ?? this.chooseExcept(tenant, user, cur?.node) };
  }

  /**
   * Where a drain would put each of the node's users now: one after
   * another by bounded-load hashing over the other active nodes, each
   * choice counted in the loads the next one sees (as the moves would).
   */
  async planDrain(node: string): Promise<Array<{ tenant: string; user: string; to: string }>> {
    if (!(await this.getNode(node))) throw new DomainError('not_found', `name: node "${node}" is not registered`, { field: 'name' });
    const load = new Map(this.counts);
    return this.usersOf(node).map(([tenant, user]) => {
      const to = this.chooseExcept(tenant, user, node, (n) => load.get(n) ?? 0);
      load.set(to, (load.get(to) ?? 0) + 1);
      return { tenant, user, to };
    });
  }

  /** etcd's revision now (everything written before this call is at or below it). */
  async headRevision(): Promise<number> {
    const res = await etcdOp('reading the current revision', () => this.client.get(this.keys.healthProbe).exec());
    return Number(res.header.revision);
  }

  /** The revision this coordinator's copy of the assignments is valid at (every change it waited for is in). */
  revision(): number {
    return this.assignments.revision();
  }

  /** Users the node holds now (from the watch-fed cache). */
  usersOf(node: string): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const [key, a] of this.assignments.entries()) if (a.node === node) out.push(this.keys.assignmentFromKey(key));
    return out;
  }

  private requireLive(node: string): NodeLive {
    const live = this.lives.get(this.keys.liveNode(node));
    if (!live) throw new DomainError('failed_precondition', `to_node: node "${node}" is not live`, { field: 'to_node' });
    return live;
  }

  private chooseExcept(tenant: string, user: string, except: string | undefined, load: (node: string) => number = (n) => this.counts.get(n) ?? 0): string {
    const nodes = [];
    for (const [, c] of this.configs.entries()) {
      if (c.state === 'active' && c.name !== except && this.lives.get(this.keys.liveNode(c.name))) nodes.push({ name: c.name, weight: c.weight });
    }
    const node = chooseNode(buildRing(nodes), `${tenant}/${user}`, load, this.total, this.epsilon);
    if (node === undefined) throw new DomainError('unavailable', 'no other active node to move the user to', { retryable: true });
    return node;
  }

  /** Resolves true when the key is deleted (after revision `from`) within timeoutMs. */
  private async waitGone(key: string, from: number, timeoutMs: number): Promise<boolean> {
    const w = await this.client.watch().key(key).startRevision(String(from)).create();
    try {
      const gone = new Promise<boolean>((resolve) => {
        w.on('delete', () => resolve(true));
        w.on('error', () => resolve(false));
      });
      const exists = await this.client.get(key).exec();
      if (exists.kvs.length === 0) return true;
      return await Promise.race([gone, new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs))]);
    } finally {
      await w.cancel().catch(() => undefined);
    }
  }

  private moveLeaseId(): Promise<string> {
    this.moveLease ??= (async () => {
      const grant = await etcdOp('granting a lease', () => this.client.leaseClient.leaseGrant({ TTL: this.moveLeaseTtl }));
      const id = grant.ID;
      const timer = setInterval(() => {
        this.renewer.renew(id).then(
          (ttl) => {
            if (ttl === 0) this.dropMoveLease(id);
          },
          () => undefined,
        );
      }, (this.moveLeaseTtl * 1000) / 3);
      timer.unref();
      return { id, timer };
    })();
    const pending = this.moveLease;
    return pending.then(
      (l) => l.id,
      (err: unknown) => {
        if (this.moveLease === pending) this.moveLease = undefined;
        throw err;
      },
    );
  }

  private dropMoveLease(id: string): void {
    const pending = this.moveLease;
    void pending?.then((l) => {
      if (l.id !== id || this.moveLease !== pending) return;
      clearInterval(l.timer);
      this.moveLease = undefined;
    }, () => undefined);
  }

  /**
   * A move request without a lease (written before requests were bound to
   * their coordinator's lease) that outlived its coordinator blocks Locate;
   * clear it after a minute.
   */
  private async clearStaleMove(tenant: string, user: string): Promise<void> {
    const res = await this.client.get(this.keys.move(tenant, user)).exec().catch(() => undefined);
    const kv = res?.kvs[0];
    if (!kv) return;
    try {
      const at = Date.parse((JSON.parse(kv.value.toString()) as { at: string }).at);
      if (Date.now() - at > 60_000) {
        await this.client.if(this.keys.move(tenant, user), 'Mod', '==', kv.mod_revision).then(this.client.delete().key(this.keys.move(tenant, user))).commit();
      }
    } catch {
      // unreadable request: leave it to its mover
    }
  }

  /** Whether a move of the user is in progress (by this coordinator's copy). */
  isMoving(tenant: string, user: string): boolean {
    return this.moves.get(this.keys.move(tenant, user)) !== undefined;
  }

  /** Whether the node holds a live lease (by this coordinator's copy). */
  isLive(node: string): boolean {
    return this.lives.get(this.keys.liveNode(node)) !== undefined;
  }

  /** The node's server for a protocol ("imap", or one it registered), from the cache. */
  addressOf(node: string, protocol: string): string | undefined {
    const c = this.configs.get(this.keys.node(node));
    if (!c) return undefined;
    return (protocol === 'imap' ? c.imapAddress : c.addresses[protocol]) || undefined;
  }

  imapAddressOf(node: string): string {
    return this.configs.get(this.keys.node(node))?.imapAddress ?? '';
  }

  /** The ring of nodes that are live and active, rebuilt only when that set changes. */
  private activeRing(): Ring {
    const nodes = [];
    for (const [, c] of this.configs.entries()) {
      if (c.state === 'active' && this.lives.get(this.keys.liveNode(c.name))) nodes.push({ name: c.name, weight: c.weight });
    }
    nodes.sort((a, b) => (a.name < b.name ? -1 : 1));
    const sig = nodes.map((n) => `${n.name}:${n.weight}`).join(',');
    if (this.ringMemo?.sig !== sig) this.ringMemo = { sig, ring: buildRing(nodes) };
    return this.ringMemo.ring;
  }
}

export function decodeConfig(name: string, value: Buffer, revision: number): NodeConfig | undefined {
  try {
    const s = JSON.parse(value.toString()) as { imapAddress: string; addresses?: Record<string, string>; weight: number; zone: string; state: NodeState; registeredAt: string; downReason?: string };
    const addresses = s.addresses !== null && typeof s.addresses === 'object' ? s.addresses : {};
    return { name, imapAddress: s.imapAddress, addresses, weight: s.weight, zone: s.zone ?? '', state: s.state === 'draining' ? 'draining' : 'active', registeredAt: new Date(s.registeredAt), revision, downReason: typeof s.downReason === 'string' ? s.downReason : '' };
  } catch {
    return undefined;
  }
}

/** The epoch a move request ends (its JSON value's `epoch`), 0 when unreadable. */
function moveEpoch(value: Buffer): number {
  try {
    const epoch = (JSON.parse(value.toString()) as { epoch?: unknown }).epoch;
    return typeof epoch === 'number' ? epoch : 0;
  } catch {
    return 0;
  }
}

export function decodeAssignmentNode(value: Buffer): string | undefined {
  try {
    const node = (JSON.parse(value.toString()) as { node?: unknown }).node;
    return typeof node === 'string' ? node : undefined;
  } catch {
    return undefined;
  }
}
