import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import { type Rights, formatRightsForResponse } from '../domain/rights.js';
import { type Assignment, type Event, EventServiceClient, type FollowRequest, type SnapshotResponse, type UserRef, type WatchResponse } from '../gen/mailshare/v1/events.js';
import { type KeepAliveResponse, type LocateResponse, PlacementServiceClient } from '../gen/mailshare/v1/placement.js';
import { AgentCache, type CachedAssignment, type SharedView } from './cache.js';
import { Backoff, RetryLog } from './retry.js';

/** Anything pino-like; the agent logs little, and nothing by default. */
export interface AgentLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface AgentOptions {
  /** Coordinator addresses (host:port); the agent fails over between them in order. */
  coordinators: string[];
  /** A token with role node. */
  token: string;
  /** `addresses`: the node's servers for other protocols ("lmtp", "pop3"), host:port. */
  node: { name: string; imapAddress: string; addresses?: Readonly<Record<string, string>>; weight?: number; zone?: string };
  /** Lease TTL in seconds; default 5. The lease is renewed every TTL/3. */
  ttlSeconds?: number;
  /** Default insecure (loopback); pass grpc.credentials.createSsl(...) for TLS. */
  credentials?: grpc.ChannelCredentials;
  /** gRPC channel options, e.g. grpc.ssl_target_name_override. */
  channelOptions?: grpc.ClientOptions;
  logger?: AgentLogger;
  /**
   * Awaited when a user is being moved or kicked away from this node, after
   * userLost fired and before the agent releases the assignment: finish and
   * close the user's sessions here. Default: release at once.
   */
  onUserLeaving?: (user: UserEvent) => Promise<void>;
  /**
   * A user of this node with no open session for this long is released, so
   * users spread over the nodes again over time (like Dovecot's
   * director_user_expire). Report sessions with sessionOpened/sessionClosed.
   * Default 15 minutes; 0 disables.
   */
  userExpireMs?: number;
  /**
   * Which assignments the agent keeps. "all" (default): every user's, from
   * every change in the cluster. "followed": its own node's, and those of
   * the users it follows (users with a session here, from sessionOpened
   * until FOLLOW_LINGER_MS after their last sessionClosed, and users it just
   * assigned): what a gateway uses, in memory and change traffic that grow
   * with its own sessions, not with the cluster. locate() then answers only
   * for those; a miss is asked of the coordinator (assign()).
   */
  assignmentView?: 'all' | 'followed';
  /** How long a user stays followed after its last session; default FOLLOW_LINGER_MS. */
  followLingerMs?: number;
}

/** How long lookup() waits for the event stream's answer to a follow before it asks with a unary Locate. */
const LOOKUP_STREAM_MS = 2000;
/**
 * How long a node letting a user go waits for the nodes relaying the user's sessions to stop them
 * (AckMove); a node still silent then is waited for until its lease runs out (the coordinator asks
 * etcd how long that is), so the release's answer may take a lease TTL longer.
 */
const MOVE_ACKS_MS = 3000;
const RELEASE_DEADLINE_MS = MOVE_ACKS_MS + 65_000;

/** How long a followed user stays followed after its last session (a client that reconnects at once). */
export const FOLLOW_LINGER_MS = 60_000;

export interface UserEvent {
  readonly tenant: string;
  readonly user: string;
  readonly epoch: number;
  /** onUserLeaving: the user is kicked (`mailshare user kick`), not moved: sessions end. */
  readonly kick?: boolean;
}

export interface AgentEvents {
  /** A user was assigned to this node (under the current lease). */
  userAssigned: [UserEvent];
  /** A user is no longer this node's: close that user's sessions now. */
  userLost: [UserEvent];
  /** The lease is gone; every user was lost. The agent registers again. */
  leaseLost: [{ reason: string }];
  /** Registered under a (new) lease. */
  registered: [{ leaseId: string; revision: number }];
  /** A mailbox was registered, deleted, renamed or had its ACL changed; the cache already shows it. */
  mailboxChanged: [{ tenant: string; mailbox: string; deleted: boolean; revision: number }];
  /** Any user's assignment changed (any node): gateways close sessions that no longer match. */
  assignmentChanged: [{ tenant: string; user: string; before: CachedAssignment | undefined; after: CachedAssignment | undefined; kicked?: boolean }];
  /** `serving` changed: when false, serve nothing (refuse logins, end sessions); `reason` says why. */
  servingChanged: [{ serving: boolean; reason: string }];
}

const noop: AgentLogger = { info: () => undefined, warn: () => undefined, debug: () => undefined };

/**
 * What an IMAP backend embeds: registers the node, keeps its lease alive,
 * and mirrors assignments, ACLs and groups in memory from the coordinator's
 * event stream (snapshot, then watch from its revision, resuming after
 * reconnects and re-snapshotting after compaction).
 *
 * Lease safety: the agent keeps its own deadline, send time of the last
 * acknowledged renewal + TTL − margin. etcd can only expire the lease after
 * it received that renewal plus TTL, so the agent always gives up first:
 * `signal` aborts (and userLost fires for everyone) before anyone else could
 * be assigned the node's users.
 */
export class Agent extends EventEmitter<AgentEvents> {
  private readonly opts: Required<Pick<AgentOptions, 'ttlSeconds'>> & AgentOptions;
  private readonly log: AgentLogger;
  private cache = new AgentCache();
  private readonly md = new grpc.Metadata();
  private coordinator = 0;
  private placement: PlacementServiceClient;
  private events: EventServiceClient;
  private controller = new AbortController();
  private lease: { id: string; revision: number; ttl: number } | undefined;
  private deadline = 0;
  private keepalive: grpc.ClientDuplexStream<unknown, KeepAliveResponse> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private watch: grpc.ClientReadableStream<WatchResponse> | grpc.ClientDuplexStream<FollowRequest, WatchResponse> | undefined;
  /**
   * assignmentView "followed": the users followed, with how many sessions
   * (and assignments in flight) want them, whether the coordinator answered
   * on the current stream, the newest revision the cache has of them (an
   * answer's or an event's), and the linger after the last.
   */
  private readonly followed = new Map<string, { refs: number; known: boolean; seenAt: number; linger?: NodeJS.Timeout }>();
  /** lookup() calls waiting for the coordinator's answer to a follow, by user. */
  private readonly followWaiters = new Map<string, Array<() => void>>();
  /** Follows and unfollows to send on the open Follow stream (sent together, once per turn). */
  private readonly followOut = new Map<string, boolean>();
  private follows: grpc.ClientDuplexStream<FollowRequest, WatchResponse> | undefined;
  private closed = false;
  private synced = false;
  private readonly waiters: Array<{ revision: number; resolve: () => void }> = [];
  /** "tenant/user@epoch" of users already reported lost through a move. */
  private readonly left = new Set<string>();
  /** "tenant/user@epoch" of other nodes' users whose move this node is acknowledging. */
  private readonly relayed = new Set<string>();
  /** Users being kicked, with the epoch the kick ends (MoveIntent.kick). */
  private readonly kicks = new Map<string, number>();
  /** Open sessions per "tenant/user", and idle-expiry timers of users with none. */
  private readonly sessions = new Map<string, number>();
  private readonly idle = new Map<string, NodeJS.Timeout>();
  /** Other nodes' users with sessions here (HoldUser): whether the hold is in etcd, and its end after the last session. */
  private readonly holds = new Map<string, { written: boolean; linger?: NodeJS.Timeout }>();
  /** Aborted by close()/orphan(): ends retry pauses at once. */
  private readonly life = new AbortController();
  /** When the event stream last spoke (events, progress or the coordinator's heartbeat). */
  private lastHeard = 0;
  /** When the last lease was lost: the view must be heard fresh after it before serving again. */
  private lostAt = 0;
  private servingNow = false;
  private readonly servingTimer: NodeJS.Timeout;
  private readonly retries = { register: new Backoff(), keepalive: new Backoff(), events: new Backoff() };
  /** Set by suspend(): the node claims no users (no lease) until resume(). */
  private suspendedReason: string | undefined;
  /** A registration loop is running (one at a time). */
  private registering = false;
  /** Aborted when a loop reaches a coordinator again: the others end their pauses and retry at once. */
  private retryWake = new AbortController();
  private readonly retryLogs: { register: RetryLog; keepalive: RetryLog; events: RetryLog };
  readonly ready: Promise<void>;

  constructor(opts: AgentOptions) {
    super();
    if (opts.coordinators.length === 0) throw new DomainError('invalid_argument', 'coordinators: give at least one address', { field: 'coordinators' });
    this.opts = { ...opts, ttlSeconds: opts.ttlSeconds ?? 5 };
    this.log = opts.logger ?? noop;
    this.md.set('authorization', `Bearer ${opts.token}`);
    this.retryLogs = { register: new RetryLog('registering the node', this.log), keepalive: new RetryLog('renewing the lease', this.log), events: new RetryLog('the event stream', this.log) };
    [this.placement, this.events] = this.connect();
    this.servingTimer = setInterval(() => this.checkServing(), 50);
    this.servingTimer.unref();
    this.ready = Promise.all([this.registerLoop(), this.eventsReady()]).then(() => this.checkServing());
    this.ready.catch(() => undefined);
  }

  /** Aborts when the current lease is lost. After re-registering, a new signal. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get leaseId(): string | undefined {
    return this.lease?.id;
  }

  /**
   * Whether this node may serve its users now: it holds a lease it can
   * prove (the last acknowledged renewal is within the TTL), and its view of
   * the cluster is fresh (the event stream spoke within the TTL, and after
   * the last lease loss). When false, a gateway refuses logins and ends its
   * sessions: another node may be given its users.
   */
  get serving(): boolean {
    return this.servingState().ok;
  }

  /**
   * Whether this node's view of the cluster is fresh (the event stream spoke
   * within the TTL, and after the last lease loss), lease or not: enough to
   * route users to other nodes.
   */
  get viewFresh(): boolean {
    return this.staleness() === undefined;
  }

  /** Why the view of the cluster is not fresh, or undefined when it is. */
  private staleness(): string | undefined {
    if (Date.now() - this.lastHeard >= this.opts.ttlSeconds * 1000) return 'no word from the coordinators for longer than the lease TTL';
    if (this.lastHeard <= this.lostAt) return 'the view of the cluster is not fresh yet';
    return undefined;
  }

  /** Why the node is suspended (see suspend()), or undefined. */
  get suspended(): string | undefined {
    return this.suspendedReason;
  }

  /**
   * Stops claiming users, saying why (e.g. the node's IMAP server is dead):
   * the lease is revoked with the reason (shown by ListNodes), so the
   * node's users can be assigned elsewhere at once, and no new lease is
   * taken until resume(). The caches stay fed.
   */
  async suspend(reason: string): Promise<void> {
    if (this.suspendedReason !== undefined || this.closed) return;
    this.suspendedReason = reason;
    this.checkServing();
    const lease = this.lease;
    if (!lease) return;
    this.stopKeepalive();
    await this.unary((cb) => this.placement.deregisterNode({ name: this.opts.node.name, leaseId: lease.id, reason: reason.slice(0, 200) }, this.md, { deadline: Date.now() + 5000 }, cb)).catch(
      (err: unknown) => this.log.warn({ err: String(err) }, 'deregister failed; the lease will expire by itself'),
    );
    this.loseLease(`suspended: ${reason}`);
  }

  /** Takes users again after suspend(): registers under a new lease. */
  resume(): void {
    if (this.suspendedReason === undefined || this.closed) return;
    this.suspendedReason = undefined;
    this.log.info({}, 'resuming');
    if (!this.lease) void this.registerLoop().catch(() => undefined);
  }

  private servingState(): { ok: boolean; reason: string } {
    const now = Date.now();
    if (this.closed) return { ok: false, reason: 'the node is shutting down' };
    if (this.suspendedReason !== undefined) return { ok: false, reason: `suspended: ${this.suspendedReason}` };
    if (!this.lease) return { ok: false, reason: 'the node holds no lease' };
    if (now >= this.deadline) return { ok: false, reason: 'the lease could not be renewed in time' };
    const stale = this.staleness();
    return stale ? { ok: false, reason: stale } : { ok: true, reason: 'serving' };
  }

  private retrySignal(): AbortSignal {
    return AbortSignal.any([this.life.signal, this.retryWake.signal]);
  }

  /** One loop got through: a coordinator answers, the other loops need not wait out their pauses. */
  private coordinatorBack(): void {
    this.retryWake.abort();
    this.retryWake = new AbortController();
  }

  private checkServing(): void {
    const s = this.servingState();
    if (s.ok === this.servingNow) return;
    this.servingNow = s.ok;
    if (s.ok) this.log.info({}, 'serving');
    else this.log.warn({ reason: s.reason }, 'not serving');
    this.emit('servingChanged', { serving: s.ok, reason: s.reason });
  }

  /** Milliseconds since the event stream last spoke (an event, a progress mark or a heartbeat). */
  get lastHeardAgoMs(): number {
    return this.lastHeard === 0 ? Number.POSITIVE_INFINITY : Date.now() - this.lastHeard;
  }

  /** The lease TTL in seconds (as granted; the requested one before a lease exists). */
  get leaseTtlSeconds(): number {
    return this.lease?.ttl ?? this.opts.ttlSeconds;
  }

  /** How long the lease is proven for from now (0 without one): it ends unless renewed within this time. */
  get leaseRemainingMs(): number {
    return this.lease ? Math.max(0, this.deadline - Date.now()) : 0;
  }

  /** The etcd revision the caches are valid at. */
  get revision(): number {
    return this.cache.revision;
  }

  /** Where a user is, from memory. */
  locate(tenant: string, user: string): (CachedAssignment & { revision: number }) | undefined {
    const a = this.cache.locate(tenant, user);
    return a ? { ...a, revision: this.cache.revision } : undefined;
  }

  /** The tenant that owns a login domain (lower case), from memory; undefined for a domain nobody owns. */
  tenantOfDomain(domain: string): string | undefined {
    return this.cache.tenantOfDomain(domain);
  }

  /** A tenant's login domains, from memory. */
  domainsOf(tenant: string): readonly string[] {
    return this.cache.domainsOf(tenant);
  }

  /** A registered node's server address for a protocol (default IMAP), from memory. */
  nodeAddress(node: string, protocol = 'imap'): string | undefined {
    return this.cache.nodeAddress(node, protocol);
  }

  /** Nodes live now, with their server addresses for a protocol (default IMAP), from the event stream. */
  liveNodes(protocol = 'imap'): Array<{ node: string; address: string }> {
    return this.cache.liveNodes(protocol);
  }

  /** Assigns a node if the user has none (one RPC); answers from memory when it can. */
  async assign(tenant: string, user: string): Promise<{ node: string; epoch: number; imapAddress: string }> {
    const k = `${tenant}/${user}`;
    // Followed from the question on (for the linger, unless a session keeps it): its changes
    // reach the cache, and until the coordinator's answer does, the cache has this one.
    this.follow(k);
    try {
      const r = await this.unary<LocateResponse>((cb) => this.placement.locate({ tenant, user, mailbox: '', assign: true }, this.md, { deadline: Date.now() + 5000 }, cb));
      this.keepLocated(k, tenant, user, r);
      return { node: r.node, epoch: r.epoch, imapAddress: r.imapAddress };
    } finally {
      this.unfollow(k);
    }
  }

  /**
   * Where a user is, when this agent may not hold the answer in memory: with assignmentView
   * "all" the cache is the answer; with "followed", a user not followed is followed from now on
   * (and lingers), and the coordinator's answer to the follow, on the event stream, is awaited
   * (a unary Locate when the stream does not answer within `streamMs`). Undefined: the user holds
   * no node. A login asks this before it decides where to check the password: a user assigned
   * elsewhere is logged in there once, not first on this node's backend.
   */
  async lookup(tenant: string, user: string, streamMs = LOOKUP_STREAM_MS): Promise<CachedAssignment | undefined> {
    const hit = this.cache.locate(tenant, user);
    if (hit || !this.followsUsers) return hit;
    const k = `${tenant}/${user}`;
    this.follow(k);
    try {
      if (!this.followed.get(k)!.known && !(await this.followAnswered(k, streamMs))) {
        const r = await this.unary<LocateResponse>((cb) => this.placement.locate({ tenant, user, mailbox: '', assign: false }, this.md, { deadline: Date.now() + 5000 }, cb));
        this.keepLocated(k, tenant, user, r);
        if (r.node !== '') return { tenant, user, node: r.node, epoch: r.epoch };
      }
      return this.cache.locate(tenant, user);
    } finally {
      this.unfollow(k);
    }
  }

  /** Whether the coordinator answered the follow of `k` within `ms` (false: it did not, yet). */
  private followAnswered(k: string, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiters = this.followWaiters.get(k) ?? [];
      this.followWaiters.set(k, waiters);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(done), 1);
        if (waiters.length === 0 && this.followWaiters.get(k) === waiters) this.followWaiters.delete(k);
        resolve(false);
      }, ms);
      waiters.push(done);
    });
  }

  /**
   * A Locate's answer for a followed user, kept in the cache until the stream has something as
   * new; not when the cache already has this assignment or a newer one (the stream told it).
   */
  private keepLocated(k: string, tenant: string, user: string, r: LocateResponse): void {
    const f = this.followed.get(k);
    if (f && r.node !== '' && f.seenAt < r.epoch && (this.cache.locate(tenant, user)?.epoch ?? 0) < r.epoch) this.cache.keep({ tenant, user, node: r.node, epoch: r.epoch });
  }

  /** Whether this agent keeps only its own node's and followed users' assignments. */
  get followsUsers(): boolean {
    return this.opts.assignmentView === 'followed';
  }

  /** Assignments in the cache (metrics). */
  get cachedAssignments(): number {
    return this.cache.assignmentCount;
  }

  /** Users followed now (assignmentView "followed"; for tests and metrics). */
  get followedUsers(): number {
    return this.followed.size;
  }

  private follow(k: string): void {
    if (!this.followsUsers) return;
    const f = this.followed.get(k);
    if (f) {
      f.refs++;
      clearTimeout(f.linger);
      f.linger = undefined;
      return;
    }
    this.followed.set(k, { refs: 1, known: false, seenAt: 0 });
    this.sendFollow(k, true);
  }

  private unfollow(k: string): void {
    const f = this.followed.get(k);
    if (!f || --f.refs > 0) return;
    clearTimeout(f.linger);
    f.linger = setTimeout(() => {
      if (f.refs > 0 || this.followed.get(k) !== f) return;
      this.followed.delete(k);
      this.sendFollow(k, false);
      const { tenant, user } = userRef(k);
      const a = this.cache.locate(tenant, user);
      if (a && a.node !== this.opts.node.name) this.cache.forget(tenant, user);
    }, this.opts.followLingerMs ?? FOLLOW_LINGER_MS);
    f.linger.unref();
  }

  /** Queues a follow or unfollow for the open stream; a stream that starts later is told of every followed user itself. */
  private sendFollow(k: string, on: boolean): void {
    if (!this.follows) return;
    const first = this.followOut.size === 0;
    this.followOut.set(k, on);
    if (first) setImmediate(() => this.flushFollows());
  }

  private flushFollows(): void {
    const stream = this.follows;
    if (!stream || this.followOut.size === 0) return;
    const follow: UserRef[] = [];
    const unfollow: UserRef[] = [];
    for (const [k, on] of this.followOut) (on ? follow : unfollow).push(userRef(k));
    this.followOut.clear();
    stream.write({ watch: undefined, follow, unfollow, following: [] });
  }

  /** The coordinator's answers to follows: each user's assignment as of the stream's position. */
  private applyFollowed(answers: readonly Assignment[], at: number): void {
    const answered: Array<() => void> = [];
    for (const a of answers) {
      const k = `${a.tenant}/${a.user}`;
      const f = this.followed.get(k);
      // Unfollowed while the answer was on its way: the unfollow forgot the user.
      if (!f) continue;
      f.known = true;
      if (at > f.seenAt) f.seenAt = at;
      answered.push(...(this.followWaiters.get(k) ?? []));
      this.followWaiters.delete(k);
      const had = this.cache.locate(a.tenant, a.user);
      if (a.node === '' ? had === undefined : had?.node === a.node && had.epoch === a.epoch) continue;
      this.applyEvent({ revision: 0, kind: 'assignment', deleted: a.node === '', tenant: a.tenant, tenantRecord: undefined, group: undefined, mailbox: undefined, node: undefined, move: undefined, assignment: a });
    }
    for (const done of answered) done();
  }

  /** A user's effective rights on OWNER/NAME from memory ("" if none; undefined if not registered). */
  rights(tenant: string, user: string, mailbox: string): { rights: string | undefined; revision: number } {
    const slash = mailbox.indexOf('/');
    const r = this.cache.rights(tenant, user, mailbox.slice(0, slash), mailbox.slice(slash + 1));
    return { rights: r === undefined ? undefined : formatRightsForResponse(r), revision: this.cache.revision };
  }

  /** The same as a bitset: what the gateway checks commands against (undefined if not registered). */
  access(tenant: string, user: string, owner: string, name: string): Rights | undefined {
    return this.cache.rights(tenant, user, owner, name);
  }

  /** Other users' mailboxes the user holds "l" on, from memory. */
  sharedWith(tenant: string, user: string): { mailboxes: SharedView[]; revision: number } {
    return { mailboxes: this.cache.sharedWith(tenant, user), revision: this.cache.revision };
  }

  /**
   * Fencing: may this node do work for the user under `epoch`? True only
   * while the node holds the user's current assignment with exactly that
   * epoch under a live lease. Work carrying an older epoch must be refused.
   */
  isCurrent(tenant: string, user: string, epoch: number): boolean {
    const a = this.cache.locate(tenant, user);
    const lease = this.lease;
    // The deadline itself, not only the timer that aborts the signal: after a stall (GC, SIGSTOP,
    // an overloaded host) pending I/O may run before that timer does.
    return !this.controller.signal.aborted && Date.now() < this.deadline && lease !== undefined && a !== undefined && a.node === this.opts.node.name && a.epoch === epoch && a.epoch > lease.revision;
  }

  /** Whether this node holds the user now (under its current lease, by its view). */
  isHolding(tenant: string, user: string): boolean {
    const a = this.cache.locate(tenant, user);
    const lease = this.lease;
    return lease !== undefined && a !== undefined && a.node === this.opts.node.name && a.epoch > lease.revision;
  }

  /** Users this node holds under its current lease. */
  users(): CachedAssignment[] {
    const lease = this.lease;
    if (!lease) return [];
    return this.cache.assignmentsOf(this.opts.node.name).filter((a) => a.epoch > lease.revision);
  }

  /**
   * The host opened a session for the user (its own user, or one assigned
   * to another node: clients may connect anywhere): the user is not idle.
   * For another node's user this node holds the user (HoldUser), so that
   * node does not release the user while the session lasts (idle expiry),
   * and waits for this node to stop its sessions when the user moves. `node`: the
   * user's node as the host found it (the cache may not show a fresh
   * assignment yet; with assignmentView "followed" it has none of a user
   * followed only from now on, so give it).
   */
  sessionOpened(tenant: string, user: string, node?: string): void {
    const k = `${tenant}/${user}`;
    this.follow(k);
    this.sessions.set(k, (this.sessions.get(k) ?? 0) + 1);
    clearTimeout(this.idle.get(k));
    this.idle.delete(k);
    const home = node ?? this.cache.locate(tenant, user)?.node;
    // Held even with idle expiry off: a move of the user waits for this node to stop its sessions (AckMove).
    if (home !== undefined && home !== this.opts.node.name) this.hold(tenant, user);
    else clearTimeout(this.holds.get(k)?.linger);
  }

  /**
   * The host closed a session; when the user has none left, the idle clock
   * starts (the user's own node), or the hold ends after userExpireMs
   * (another node's user), so the user expires userExpireMs after the last
   * session anywhere (at most twice that).
   */
  sessionClosed(tenant: string, user: string): void {
    const k = `${tenant}/${user}`;
    this.unfollow(k);
    const n = (this.sessions.get(k) ?? 1) - 1;
    if (n > 0) {
      this.sessions.set(k, n);
      return;
    }
    this.sessions.delete(k);
    const h = this.holds.get(k);
    if (h) {
      clearTimeout(h.linger);
      h.linger = setTimeout(() => {
        if (!this.sessions.has(k)) void this.unhold(tenant, user);
      }, this.expireMs());
      h.linger.unref();
    }
    this.startIdle(tenant, user);
  }

  private expireMs(): number {
    return this.opts.userExpireMs ?? 15 * 60_000;
  }

  private hold(tenant: string, user: string): void {
    const k = `${tenant}/${user}`;
    const h = this.holds.get(k);
    if (h) {
      clearTimeout(h.linger);
      if (h.written) return;
    } else {
      this.holds.set(k, { written: false });
      // Followed while held: a move of the user reaches this node, which must say it stopped (AckMove).
      this.follow(k);
    }
    void this.sendHold(tenant, user, true);
  }

  private async unhold(tenant: string, user: string): Promise<void> {
    const k = `${tenant}/${user}`;
    const h = this.holds.get(k);
    if (!h) return;
    clearTimeout(h.linger);
    this.holds.delete(k);
    this.unfollow(k);
    if (h.written) await this.sendHold(tenant, user, false);
  }

  private async sendHold(tenant: string, user: string, hold: boolean): Promise<void> {
    const k = `${tenant}/${user}`;
    try {
      await this.unary((cb) => this.placement.holdUser({ tenant, user, node: this.opts.node.name, hold }, this.md, { deadline: Date.now() + 5000 }, cb));
      const h = this.holds.get(k);
      if (hold && h) h.written = true;
      // Let go while the hold was on its way: end it now.
      else if (hold && !h) await this.sendHold(tenant, user, false);
    } catch (err) {
      // A hold that did not reach etcd is sent again on the next session or registration.
      this.log.warn({ tenant, user, hold, err: String(err) }, 'hold failed');
    }
  }

  private startIdle(tenant: string, user: string): void {
    const expire = this.expireMs();
    const k = `${tenant}/${user}`;
    if (expire <= 0 || this.sessions.has(k)) return;
    clearTimeout(this.idle.get(k));
    const t = setTimeout(() => {
      this.idle.delete(k);
      const a = this.cache.locate(tenant, user);
      const lease = this.lease;
      if (this.sessions.has(k) || !a || !lease || a.node !== this.opts.node.name || a.epoch <= lease.revision) return;
      void (async () => {
        // A hold of this node's own (from before the user came here) must not keep the user.
        await this.unhold(tenant, user);
        const res = await this.unary<{ released: boolean; held: boolean }>((cb) =>
          this.placement.release({ tenant, user, epoch: a.epoch, ifUnheld: true, waitAcksMs: 0 }, this.md, { deadline: Date.now() + 5000 }, cb),
        );
        if (res.released) this.log.debug({ tenant, user }, 'idle user released');
        // Sessions through other nodes: look again after another period.
        else if (res.held) this.startIdle(tenant, user);
      })().catch((err: unknown) => this.log.warn({ tenant, user, err: String(err) }, 'idle release failed'));
    }, expire);
    t.unref();
    this.idle.set(k, t);
  }

  /** Resolves once the caches have applied everything up to `revision` (read your writes). */
  waitForRevision(revision: number, timeoutMs = 10_000): Promise<void> {
    if (this.cache.revision >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { revision, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new DomainError('deadline_exceeded', `cache did not reach revision ${revision} in ${timeoutMs} ms`));
        }
      }, timeoutMs).unref();
    });
  }

  /**
   * Graceful: every user of this node is let go first (userLost, then the
   * onUserLeaving hook, a few at a time), then the lease is revoked so the
   * users move at once, then the agent stops.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.life.abort();
    clearInterval(this.servingTimer);
    const leaving = this.users();
    for (let i = 0; i < leaving.length; i += 16) {
      await Promise.all(
        leaving.slice(i, i + 16).map(async (u) => {
          this.left.add(`${u.tenant}/${u.user}@${u.epoch}`);
          this.emit('userLost', u);
          await this.opts.onUserLeaving?.(u).catch((err: unknown) => this.log.warn({ err: String(err) }, 'onUserLeaving failed'));
        }),
      );
    }
    for (const t of this.idle.values()) clearTimeout(t);
    this.idle.clear();
    for (const h of this.holds.values()) clearTimeout(h.linger);
    this.holds.clear();
    this.stopKeepalive();
    const lease = this.lease;
    if (lease) {
      await this.unary((cb) => this.placement.deregisterNode({ name: this.opts.node.name, leaseId: lease.id, reason: '' }, this.md, { deadline: Date.now() + 5000 }, cb)).catch(
        (err: unknown) => this.log.warn({ err: String(err) }, 'deregister failed; the lease will expire by itself'),
      );
      this.loseLease('closed');
    }
    this.watch?.cancel();
    this.placement.close();
    this.events.close();
  }

  /** Stops renewing without revoking (like a crash, for tests and fast restarts). */
  orphan(): void {
    this.closed = true;
    this.life.abort();
    clearInterval(this.servingTimer);
    this.stopKeepalive();
    this.watch?.cancel();
    this.placement.close();
    this.events.close();
  }

  // --- lease -----------------------------------------------------------------

  private async registerLoop(): Promise<void> {
    if (this.registering) return;
    this.registering = true;
    try {
      await this.registerUntilDone();
    } finally {
      this.registering = false;
    }
  }

  private async registerUntilDone(): Promise<void> {
    for (;;) {
      if (this.closed) throw new DomainError('cancelled', 'agent closed');
      if (this.suspendedReason !== undefined) return;
      const sentAt = Date.now();
      const at = this.coordinator;
      try {
        const res = await this.unary<{ leaseId: string; ttlSeconds: number; node?: { revision: number } }>((cb) =>
          this.placement.registerNode(
            { name: this.opts.node.name, imapAddress: this.opts.node.imapAddress, weight: this.opts.node.weight ?? 0, zone: this.opts.node.zone ?? '', ttlSeconds: this.opts.ttlSeconds, addresses: { ...(this.opts.node.addresses ?? {}) } },
            this.md,
            { deadline: Date.now() + 5000 },
            cb,
          ),
        );
        this.lease = { id: res.leaseId, revision: res.node?.revision ?? 0, ttl: res.ttlSeconds };
        this.controller = new AbortController();
        this.deadline = sentAt + res.ttlSeconds * 1000 - this.margin();
        this.startKeepalive();
        this.retries.register.reset();
        if (this.retryLogs.register.ok()) this.coordinatorBack();
        this.log.info({ lease: res.leaseId }, 'registered');
        this.emit('registered', { leaseId: res.leaseId, revision: this.lease.revision });
        // Holds lived on the previous lease: write them again.
        for (const [k, h] of this.holds) {
          h.written = false;
          const slash = k.indexOf('/');
          void this.sendHold(k.slice(0, slash), k.slice(slash + 1), true);
        }
        // Users already assigned under this lease (none yet, normally).
        for (const a of this.users()) this.emit('userAssigned', a);
        return;
      } catch (err) {
        if (this.closed) throw err;
        this.retryLogs.register.failed((err as grpc.ServiceError).details ?? String(err));
        this.rotate(at);
        await sleep(this.retries.register.next(), this.retrySignal());
      }
    }
  }

  private margin(): number {
    return Math.min(1000, (this.opts.ttlSeconds * 1000) / 5);
  }

  private startKeepalive(): void {
    const lease = this.lease!;
    const sent: number[] = [];
    const open = (): void => {
      const at = this.coordinator;
      const stream = this.placement.keepAlive(this.md) as grpc.ClientDuplexStream<unknown, KeepAliveResponse>;
      this.keepalive = stream;
      stream.on('data', (r: KeepAliveResponse) => {
        // Not a renewal: an operator waits for every node to apply a revision.
        if (r.barrierId) return this.answerBarrier(r.barrierId, r.barrierRevision);
        const at = sent.shift() ?? Date.now();
        if (r.leaseId !== lease.id || this.lease !== lease) return;
        if (r.ttlSeconds <= 0) return this.loseLease('etcd says the lease is gone');
        this.deadline = Math.max(this.deadline, at + r.ttlSeconds * 1000 - this.margin());
        this.retries.keepalive.reset();
        if (this.retryLogs.keepalive.ok()) this.coordinatorBack();
      });
      stream.on('error', (err: grpc.ServiceError) => {
        if (this.keepalive !== stream || this.closed) return;
        this.retryLogs.keepalive.failed(err.details ?? String(err));
        sent.length = 0;
        this.keepalive = undefined;
        this.rotate(at);
        // Paced: a coordinator that is down is not asked again at once, in a loop.
        void sleep(this.retries.keepalive.next(), this.retrySignal()).then(() => {
          if (this.lease === lease && !this.closed) open();
        });
      });
    };
    open();
    const beat = setInterval(() => {
      if (!this.keepalive) return;
      sent.push(Date.now());
      this.keepalive.write({ node: this.opts.node.name, leaseId: lease.id });
    }, (this.opts.ttlSeconds * 1000) / 3);
    const watchdog = setInterval(() => {
      if (this.lease === lease && Date.now() > this.deadline) this.loseLease('no renewal acknowledged in time');
    }, 50);
    this.timers.push(beat, watchdog);
  }

  /** Once the caches have applied the barrier's revision, says so (AckBarrier). */
  private answerBarrier(id: string, revision: number): void {
    void this.waitForRevision(revision, 60_000)
      .then(() => {
        const lease = this.lease;
        if (!lease) return;
        return new Promise<void>((resolve) =>
          this.placement.ackBarrier({ node: this.opts.node.name, leaseId: lease.id, barrierId: id, revision: this.cache.revision }, this.md, { deadline: Date.now() + 10_000 }, (err) => {
            if (err) this.log.debug({ barrier: id, err: err.details }, 'barrier answer failed');
            resolve();
          }),
        );
      })
      .catch((err: unknown) => this.log.debug({ barrier: id, err: String(err) }, 'barrier not reached'));
  }

  private stopKeepalive(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const k = this.keepalive;
    this.keepalive = undefined;
    k?.cancel();
  }

  private loseLease(reason: string): void {
    const lease = this.lease;
    if (!lease) return;
    const users = this.users();
    this.lease = undefined;
    this.stopKeepalive();
    this.lostAt = Date.now();
    this.controller.abort(new DomainError('unavailable', `lease lost: ${reason}`));
    this.log.warn({ lease: lease.id, reason, users: users.length }, 'lease lost');
    this.emit('leaseLost', { reason });
    for (const u of users) if (!this.left.delete(`${u.tenant}/${u.user}@${u.epoch}`)) this.emit('userLost', u);
    if (!this.closed && this.suspendedReason === undefined) void this.registerLoop().catch(() => undefined);
  }

  // --- events ----------------------------------------------------------------

  private eventsReady(): Promise<void> {
    return new Promise((resolve) => {
      void this.eventLoop(resolve);
    });
  }

  private async eventLoop(onFirstSync: () => void): Promise<void> {
    while (!this.closed) {
      const at = this.coordinator;
      try {
        if (!this.synced) await this.snapshot();
        await this.watchFrom(this.cache.revision + 1, onFirstSync);
      } catch (err) {
        if (this.closed) return;
        const e = err as grpc.ServiceError;
        if (e.code === grpc.status.OUT_OF_RANGE) {
          this.log.warn({}, 'event history compacted; taking a new snapshot');
          this.synced = false;
          continue;
        }
        this.retryLogs.events.failed(e.details ?? String(err));
        this.rotate(at);
        await sleep(this.retries.events.next(), this.retrySignal());
      }
    }
  }

  private async snapshot(): Promise<void> {
    const fresh = new AgentCache();
    // Mailboxes in the compact form where the coordinator serves it (else as events, as before).
    const stream = this.events.snapshot({ kinds: KINDS, tenant: '', compact: true, ownAssignments: this.followsUsers }, this.md);
    let revision = 0;
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (r: SnapshotResponse) => {
        for (const e of r.events) fresh.apply(e);
        if (r.mailboxes.length > 0) {
          try {
            fresh.applyPacked(r.mailboxes);
          } catch (err) {
            stream.cancel();
            reject(err);
            return;
          }
        }
        if (r.revision) revision = r.revision;
      });
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    // Swap in the new state and tell the host what changed for this node.
    const mine = (c: AgentCache) => new Map(this.lease ? c.assignmentsOf(this.opts.node.name).filter((a) => a.epoch > this.lease!.revision).map((a) => [`${a.tenant}/${a.user}`, a]) : []);
    fresh.revision = revision;
    // Followed users are not in a snapshot of this node's own: their assignments stay as they were
    // until the next stream answers for them again.
    for (const [k, f] of this.followed) {
      f.known = false;
      const { tenant, user } = userRef(k);
      const a = this.cache.locate(tenant, user);
      if (a && !fresh.locate(tenant, user)) fresh.keep(a);
    }
    const before = mine(this.cache);
    this.cache = fresh;
    const after = mine(this.cache);
    for (const [k, a] of before) if (after.get(k)?.epoch !== a.epoch) this.emit('userLost', a);
    for (const [k, a] of after) if (before.get(k)?.epoch !== a.epoch) this.emit('userAssigned', a);
    this.synced = true;
    this.releaseWaiters();
  }

  private watchFrom(from: number, onStarted: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const watch = { fromRevision: from, kinds: KINDS, tenant: '' };
      let stream: grpc.ClientReadableStream<WatchResponse> | grpc.ClientDuplexStream<FollowRequest, WatchResponse>;
      if (this.followsUsers) {
        const follows = this.events.follow(this.md);
        // Users whose answers the cache holds up to where this stream starts go on from there;
        // the others (not answered yet, or answered past that point) are answered afresh.
        const following: UserRef[] = [];
        const follow: UserRef[] = [];
        for (const [k, f] of this.followed) {
          f.known &&= f.seenAt < from;
          (f.known ? following : follow).push(userRef(k));
        }
        this.followOut.clear();
        follows.write({ watch, follow, unfollow: [], following });
        this.follows = follows;
        stream = follows;
        const done = (): void => {
          if (this.follows === follows) this.follows = undefined;
        };
        follows.on('end', done);
        follows.on('error', done);
      } else {
        stream = this.events.watch(watch, this.md);
      }
      this.watch = stream;
      stream.on('metadata', () => {
        this.lastHeard = Date.now();
        this.retries.events.reset();
        if (this.retryLogs.events.ok()) this.coordinatorBack();
        onStarted();
      });
      stream.on('data', (r: WatchResponse) => {
        this.lastHeard = Date.now();
        for (const e of r.events) this.applyEvent(e);
        if (r.followed.length > 0) this.applyFollowed(r.followed, r.followedRevision);
        if (r.progressRevision > this.cache.revision) this.cache.revision = r.progressRevision;
        this.releaseWaiters();
      });
      stream.on('end', resolve);
      stream.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED && this.closed ? resolve() : reject(err)));
    });
  }

  private applyEvent(e: Event): void {
    if (e.kind === 'move') {
      if (!e.deleted && e.move) {
        // The assignment a kick ends: its end is told as a kick (sessions end, not carried over).
        if (e.move.kick) this.kicks.set(`${e.move.tenant}/${e.move.user}`, e.move.epoch);
        if (e.move.fromNode === this.opts.node.name) this.leave(e.move.tenant, e.move.user, e.move.epoch);
        else this.relayLeaving(e.move.tenant, e.move.user, e.move.epoch, e.move.kick);
      }
      return;
    }
    const change = this.cache.apply(e);
    if (e.assignment && e.revision > 0 && this.followed.size > 0) {
      const f = this.followed.get(`${e.assignment.tenant}/${e.assignment.user}`);
      if (f && e.revision > f.seenAt) f.seenAt = e.revision;
    }
    if (e.kind === 'mailbox' && e.mailbox) this.emit('mailboxChanged', { tenant: e.tenant, mailbox: `${e.mailbox.owner}/${e.mailbox.name}`, deleted: e.deleted, revision: e.revision });
    if (change && e.assignment) {
      const k = `${e.assignment.tenant}/${e.assignment.user}`;
      const kicked = change.before !== undefined && this.kicks.get(k) === change.before.epoch;
      if (change.before) this.kicks.delete(k);
      this.emit('assignmentChanged', { tenant: e.assignment.tenant, user: e.assignment.user, ...change, ...(kicked ? { kicked: true } : {}) });
    }
    if (!change || !this.lease) return;
    const self = this.opts.node.name;
    const lease = this.lease;
    const ours = (a: CachedAssignment | undefined) => a !== undefined && a.node === self && a.epoch > lease.revision;
    if (ours(change.before) && (!ours(change.after) || change.after!.epoch !== change.before!.epoch)) {
      const b = change.before!;
      if (!this.left.delete(`${b.tenant}/${b.user}@${b.epoch}`)) this.emit('userLost', b);
    }
    if (ours(change.after) && change.after!.epoch !== change.before?.epoch) {
      this.emit('userAssigned', change.after!);
      this.startIdle(change.after!.tenant, change.after!.user);
    }
  }

  /**
   * Another node is asked to let a user go whom this node holds (sessions
   * relayed from here): they stop there (onUserLeaving), then this node says
   * so (AckMove), and the old node, which waits for that, releases.
   */
  private relayLeaving(tenant: string, user: string, epoch: number, kick: boolean): void {
    const k = `${tenant}/${user}`;
    if (!this.holds.has(k) || this.relayed.has(`${k}@${epoch}`)) return;
    this.relayed.add(`${k}@${epoch}`);
    void (async () => {
      try {
        await this.opts.onUserLeaving?.({ tenant, user, epoch, ...(kick ? { kick: true } : {}) });
      } catch (err) {
        this.log.warn({ tenant, user, err: String(err) }, 'onUserLeaving failed; acknowledging the move anyway');
      }
      await this.unary((cb) => this.placement.ackMove({ tenant, user, epoch, node: this.opts.node.name }, this.md, { deadline: Date.now() + 5000 }, cb)).catch((err: unknown) =>
        this.log.warn({ tenant, user, err: String(err) }, 'move acknowledgment failed; the old node releases after its wait'),
      );
      this.relayed.delete(`${k}@${epoch}`);
    })();
  }

  /** A move or kick asks this node to let a user go: close, then release. */
  private leave(tenant: string, user: string, epoch: number): void {
    const a = this.cache.locate(tenant, user);
    const lease = this.lease;
    if (!a || !lease || a.node !== this.opts.node.name || a.epoch !== epoch || a.epoch <= lease.revision) return;
    const u = { tenant, user, epoch, ...(this.kicks.get(`${tenant}/${user}`) === epoch ? { kick: true } : {}) };
    this.left.add(`${tenant}/${user}@${epoch}`);
    this.emit('userLost', u);
    void (async () => {
      try {
        await this.opts.onUserLeaving?.(u);
      } catch (err) {
        this.log.warn({ tenant, user, err: String(err) }, 'onUserLeaving failed; releasing anyway');
      }
      // The nodes relaying the user's sessions stop them too (AckMove) before the release, or 3 s pass and their leases run out.
      await this.unary((cb) => this.placement.release({ tenant, user, epoch, ifUnheld: false, waitAcksMs: MOVE_ACKS_MS }, this.md, { deadline: Date.now() + RELEASE_DEADLINE_MS }, cb)).catch((err: unknown) =>
        this.log.warn({ tenant, user, err: String(err) }, 'release failed; the mover will end the assignment'),
      );
    })();
  }

  private releaseWaiters(): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i]!.revision <= this.cache.revision) this.waiters.splice(i, 1)[0]!.resolve();
    }
  }

  // --- plumbing ----------------------------------------------------------------

  private connect(): [PlacementServiceClient, EventServiceClient] {
    const addr = this.opts.coordinators[this.coordinator % this.opts.coordinators.length]!;
    const creds = this.opts.credentials ?? grpc.credentials.createInsecure();
    // Pings find half-open connections that would otherwise hide a dead coordinator.
    const options = {
      ...this.opts.channelOptions,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      // The agent paces its own retries; grpc-js's reconnect backoff (up to 2 min by default) must not
      // keep a channel from trying a coordinator that is back.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
      // A snapshot streams megabytes: HTTP/2's default 64 KiB window would make the coordinator
      // wait for a window update every message or so (a cold start of 1 M mailboxes is mostly that).
      'grpc-node.flow_control_window': 8 * 1024 * 1024,
    };
    return [new PlacementServiceClient(addr, creds, options), new EventServiceClient(addr, creds, options)];
  }

  /**
   * Moves on from coordinator `from` to the next one, unless another loop
   * (register, keepalive, events) already did: two loops failing on the same
   * coordinator must not rotate twice, back onto it.
   */
  private rotate(from: number): void {
    if (this.opts.coordinators.length < 2 || from !== this.coordinator) return;
    this.coordinator++;
    const [p, e] = this.connect();
    const oldP = this.placement;
    const oldE = this.events;
    this.placement = p;
    this.events = e;
    // Let in-flight calls on the old channels finish or fail on their own.
    setTimeout(() => {
      oldP.close();
      oldE.close();
    }, 10_000).unref();
  }

  private unary<T>(call: (cb: (err: grpc.ServiceError | null, res: T) => void) => unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      call((err, res) => (err ? reject(err) : resolve(res)));
    });
  }
}

export function createAgent(opts: AgentOptions): Agent {
  return new Agent(opts);
}

/**
 * A retry pause. It keeps the process alive (a gateway still connecting to
 * its coordinators has nothing else to), and ends early when the agent closes.
 */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

const KINDS = ['tenant', 'mailbox', 'group', 'assignment', 'move', 'node'];

function userRef(k: string): UserRef {
  const slash = k.indexOf('/');
  return { tenant: k.slice(0, slash), user: k.slice(slash + 1) };
}
