import type { WatchRegistry, WatchTracker } from './coordinator-metrics.js';
import type { SnapshotCopy } from './snapshot-copy.js';
import { Metadata, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DomainError } from '../domain/errors.js';
import { parseTenantId } from '../domain/ids.js';
import { type Event, type EventServiceServer, EventServiceService, type FollowRequest, type SnapshotRequest, type SnapshotResponse, type UserRef, type WatchRequest, type WatchResponse } from '../gen/mailshare/v1/events.js';
import type { PlacementStore } from '../store/placement-store.js';
import { decodeGroup, decodeTenant } from '../store/directory-store.js';
import { EVENT_KINDS, type EventFilter, type EventKind, type EventStore, type StoreEvent, type WatchHandle, matches } from '../store/event-store.js';
import type { HubBatch, WatchHub } from '../store/watch-hub.js';
import { decodeMailbox } from '../store/mailbox-store.js';
import { decodeAssignmentNode, decodeConfig } from '../store/placement-store.js';
import type { Principal } from './auth.js';
import { groupToPb, mailboxToPb, tenantToPb } from './convert.js';
import { hideLease, nodeToPb } from './placement-service.js';
import { type RpcDeps, authenticated, endOnShutdown } from './rpc.js';
import { toGrpcError } from './status.js';
import { requireTenantRole } from './access.js';

export interface EventServiceDeps extends RpcDeps {
  readonly events: EventStore;
  /** Bytes a watcher may have queued (unsent to a client that does not read) before it is cut off. */
  readonly maxBufferedBytes?: number;
  /** Whether this coordinator reaches etcd: heartbeats are sent only then. */
  readonly healthy?: () => boolean;
  /** A quiet watch stream gets a heartbeat this often (ms); default 1000. */
  readonly heartbeatMs?: number;
  /** Told of every stream served and the revisions it delivers (the lag metric). */
  readonly watchers?: WatchRegistry;
  /** This coordinator's copy of the entities, for snapshots with compact mailboxes. */
  readonly copy?: SnapshotCopy;
  /** The coordinator's one etcd watch, shared by its streams (a stream it cannot serve watches etcd itself). */
  readonly hub?: WatchHub;
  /** The coordinator's assignment cache: a Follow is answered from it. */
  readonly placement?: PlacementStore;
}

/**
 * The event service's wire definition, with Watch responses encoded once
 * however many streams they are written to (the streams of one filter share
 * each response object, see watch()); grpc-js copies the bytes into each
 * stream's own frame.
 */
const encodedResponses = new WeakMap<WatchResponse, Buffer>();
const encodeOnce = (value: WatchResponse): Buffer => {
  let bytes = encodedResponses.get(value);
  if (bytes === undefined) {
    bytes = EventServiceService.watch.responseSerialize(value);
    encodedResponses.set(value, bytes);
  }
  return bytes;
};
export const EventServiceDefinition = {
  ...EventServiceService,
  watch: { ...EventServiceService.watch, responseSerialize: encodeOnce },
  follow: { ...EventServiceService.follow, responseSerialize: encodeOnce },
} as const;

/** Identifies what a stream is sent: streams with equal keys are sent the same responses. */
function filterKey(filter: EventFilter, hideLeases: boolean): string {
  return `${[...filter.kinds].sort().join(',')}|${filter.tenants?.join(',') ?? '*'}|${hideLeases ? 'hidden' : 'leases'}`;
}

const EMPTY = Buffer.alloc(0);

/** A stream is sent progress alone (no events for it) at most this often (ms). */
const PROGRESS_MS = 100;

function parseFilter(kinds: string[], tenantText: string, principal: Principal): EventFilter {
  const set = new Set<EventKind>();
  for (const [i, k] of kinds.entries()) {
    if (!(EVENT_KINDS as readonly string[]).includes(k)) {
      throw new DomainError('invalid_argument', `kinds[${i}]: "${k}" is not one of ${EVENT_KINDS.join(', ')}`, { field: `kinds[${i}]` });
    }
    set.add(k as EventKind);
  }
  const tenant = tenantText === '' ? undefined : parseTenantId(tenantText);
  const role = principal.role;
  if (role.kind === 'tenant-admin' && tenant === undefined) throw new DomainError('permission_denied', 'tenant: a tenant admin must watch its own tenant', { field: 'tenant' });
  if (tenant !== undefined) requireTenantRole(role, tenant, ['admin', 'tenant-admin', 'node']);
  // A node bound to tenants sees theirs only.
  const tenants = tenant !== undefined ? [tenant] : role.kind === 'node' ? role.tenants : undefined;
  return { kinds: set.size > 0 ? set : new Set(EVENT_KINDS), tenants };
}

/** StoreEvent → protobuf Event, decoding the stored value of the entity; `hideLeases` for node callers. */
export function eventToPb(e: StoreEvent, hideLeases = false): Event {
  const out: Event = { revision: e.revision, kind: e.kind, deleted: e.deleted, tenant: e.tenant };
  const slash = e.id.indexOf('/');
  switch (e.kind) {
    case 'tenant': {
      const t = e.value && !e.deleted ? decodeTenant(e.id, e.value, e.revision) : undefined;
      out.tenantRecord = t ? tenantToPb(t) : { id: e.id, revision: e.revision, domains: [] };
      break;
    }
    case 'group':
      out.group = e.value && !e.deleted ? groupToPb(decodeGroup(e.tenant, e.id, e.value, e.revision)) : { tenant: e.tenant, name: e.id, members: [], revision: e.revision, effects: [] };
      break;
    case 'mailbox': {
      const owner = e.id.slice(0, slash);
      const name = e.id.slice(slash + 1);
      const m = e.value ? decodeMailbox(e.tenant, owner, name, e.value, e.revision) : undefined;
      out.mailbox = m && !e.deleted ? mailboxToPb(m) : { tenant: e.tenant, mailbox: e.id, owner, name, id: m?.id ?? '', acl: [], revision: e.revision };
      break;
    }
    case 'assignment':
      out.assignment = { tenant: e.tenant, user: e.id, node: (e.value && decodeAssignmentNode(e.value)) ?? '', epoch: e.epoch };
      break;
    case 'move': {
      const v = moveValue(e.value);
      out.move = { tenant: e.tenant, user: e.id, epoch: v.epoch ?? 0, fromNode: v.from ?? '', toNode: v.to ?? '', kick: v.kick === true };
      break;
    }
    case 'node': {
      if (e.liveness) {
        out.node = { name: e.id, imapAddress: '', weight: 0, zone: '', state: e.deleted ? 'down' : '', leaseId: e.deleted ? '' : (e.value?.toString() ?? ''), users: 0, revision: e.revision, downReason: '', addresses: {} };
      } else {
        const c = e.value && !e.deleted ? decodeConfig(e.id, e.value, e.revision) : undefined;
        out.node = c ? nodeToPb({ ...c, live: undefined, users: 0 }) : { name: e.id, imapAddress: '', weight: 0, zone: '', state: 'removed', leaseId: '', users: 0, revision: e.revision, downReason: '', addresses: {} };
        if (c) out.node.state = c.state;
      }
      if (hideLeases) out.node = hideLease(out.node);
      break;
    }
  }
  return out;
}

/**
 * Bytes queued on the call's HTTP/2 stream that the client has not taken:
 * they pile up only when the client stops reading (flow control closes its
 * window). grpc-js exposes no public measure, so this reads the underlying
 * Http2Stream's bufferSize; the slow-consumer test guards the assumption.
 */
function queuedBytes(call: ServerWritableStream<unknown, unknown>): number {
  // grpc-js internals: the HTTP/2 stream sits under the server interceptors' calls (nextCall).
  type Layer = { stream?: { bufferSize?: number }; nextCall?: Layer };
  let layer = (call as unknown as { call?: Layer }).call;
  for (let i = 0; layer && !layer.stream && i < 8; i++) layer = layer.nextCall;
  return (layer?.stream?.bufferSize ?? 0) + call.writableLength;
}

/** The nodes an assignment or move event concerns (its node; a move's from and to), decoded from its value. */
function nodesOf(e: StoreEvent): readonly string[] {
  if (!e.value) return [];
  if (e.kind === 'assignment') {
    const n = decodeAssignmentNode(e.value);
    return n === undefined ? [] : [n];
  }
  const v = moveValue(e.value);
  return [v.from, v.to].filter((n): n is string => typeof n === 'string' && n !== '');
}

/** A move request's stored value (JSON), {} when unreadable. */
function moveValue(value: Buffer | undefined): { epoch?: number; from?: string; to?: string; kick?: boolean } {
  try {
    return value ? (JSON.parse(value.toString()) as ReturnType<typeof moveValue>) : {};
  } catch {
    return {};
  }
}

const followedKinds = (e: StoreEvent): boolean => e.kind === 'assignment' || e.kind === 'move';

/**
 * What a Follow stream sends of the assignments and moves it sees: its own
 * node's, and those of the users it follows. A user followed at revision Y
 * (the coordinator's assignment cache when the follow was answered) skips
 * its changes up to Y: the answer already has them.
 */
export class Follower {
  readonly users = new Set<string>();
  private readonly skip = new Map<string, number>();
  private skipUntil = 0;
  /** The newest assignment change the stream has passed, sent or not. */
  lastAssignment = 0;

  constructor(readonly node: string | undefined) {}

  follow(key: string, answeredAt: number): void {
    this.users.add(key);
    this.skip.set(key, answeredAt);
    if (answeredAt > this.skipUntil) this.skipUntil = answeredAt;
  }

  unfollow(key: string): void {
    this.users.delete(key);
    this.skip.delete(key);
  }

  /**
   * The events of a batch that pass the stream's filter and are to be sent, or
   * undefined when it has no assignment or move at all (then the stream is
   * sent what a Watch of its filter is). `memo` holds what every stream can
   * share of one batch: each event's nodes, decoded once.
   */
  pick(events: readonly StoreEvent[], filter: EventFilter, revision: number, memo: Map<string, unknown>): StoreEvent[] | undefined {
    let nodes = memo.get('follow:nodes') as Array<readonly string[] | undefined> | null | undefined;
    if (nodes === undefined) {
      nodes = events.some(followedKinds) ? events.map((e) => (followedKinds(e) ? nodesOf(e) : undefined)) : null;
      memo.set('follow:nodes', nodes);
    }
    if (nodes === null) {
      this.passed(revision);
      return undefined;
    }
    const out: StoreEvent[] = [];
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      if (!matches(e, filter)) continue;
      const on = nodes[i];
      if (on === undefined) {
        out.push(e);
        continue;
      }
      if (e.kind === 'assignment' && e.revision > this.lastAssignment) this.lastAssignment = e.revision;
      if (this.node !== undefined && on.includes(this.node)) {
        out.push(e);
        continue;
      }
      if (this.users.size === 0) continue;
      const key = `${e.tenant}/${e.id}`;
      if (!this.users.has(key)) continue;
      const skip = this.skip.get(key);
      if (skip !== undefined && e.revision <= skip) continue;
      out.push(e);
    }
    this.passed(revision);
    return out;
  }

  private passed(revision: number): void {
    if (this.skip.size > 0 && revision >= this.skipUntil) this.skip.clear();
  }
}

interface StreamCall {
  write(msg: WatchResponse): boolean;
  sendMetadata(md: Metadata): void;
  emit(ev: 'error', err: unknown): boolean;
  on(ev: 'cancelled', f: () => void): unknown;
  readonly writableLength: number;
}

interface OpenStream {
  /** Writes a message that claims no revision (a Follow answer). */
  write(msg: WatchResponse): void;
  fail(err: unknown): void;
  readonly done: () => boolean;
}

export function createEventService(deps: EventServiceDeps): EventServiceServer {
  const maxBufferedBytes = deps.maxBufferedBytes ?? 8 * 1024 * 1024;

  /**
   * Serves a Watch (or Follow) stream from `req`: from the shared watch, else
   * an etcd watch of its own; heartbeats, the slow-consumer cut-off, the lag
   * metric. Resolves once the stream delivers (its headers are sent).
   */
  async function open(call: StreamCall, principal: Principal, req: WatchRequest, log: Logger, follower?: Follower): Promise<OpenStream> {
    if (!Number.isSafeInteger(req.fromRevision) || req.fromRevision < 0) {
      throw new DomainError('invalid_argument', 'from_revision: must be 0 or a revision', { field: 'from_revision' });
    }
    const filter = parseFilter(req.kinds, req.tenant, principal);
    const hide = principal.role.kind === 'node';
    let done = false;
    let wrote = false;
    let lastWrite = 0;
    const held: {
      watcher?: WatchHandle;
      heartbeat?: NodeJS.Timeout;
      tracker?: WatchTracker;
      progress?: NodeJS.Timeout;
      pending?: { msg: WatchResponse; revision: number };
    } = {};
    const stop = (): void => {
      done = true;
      held.tracker?.close();
      clearInterval(held.heartbeat);
      clearTimeout(held.progress);
      void held.watcher?.cancel().catch(() => undefined);
    };
    const fail = (err: unknown): void => {
      if (done) return;
      stop();
      call.emit('error', toGrpcError(err, log));
    };
    call.on('cancelled', stop);
    endOnShutdown(deps, call as unknown as ServerWritableStream<unknown, unknown>, stop);
    const write = (msg: WatchResponse): void => {
      if (done) return;
      call.write(msg);
      wrote = true;
      lastWrite = Date.now();
      // A consumer that cannot keep up must not grow our memory: cut it
      // off; it resumes from the last revision it processed.
      if (queuedBytes(call as unknown as ServerWritableStream<unknown, unknown>) > maxBufferedBytes) {
        fail(new DomainError('resource_exhausted', `watcher too slow (more than ${maxBufferedBytes} bytes queued); resume from your last revision`));
      }
    };
    const send = (msg: WatchResponse, revision: number): void => {
      if (done) return;
      if (msg.events.length === 0 && msg.progressRevision > 0) {
        // Progress alone (nothing in these changes for this stream) is sent at most every
        // PROGRESS_MS: a stream that hears little (a Follow) is not sent a message per etcd write.
        const wait = lastWrite + PROGRESS_MS - Date.now();
        if (wait > 0) {
          held.pending = { msg, revision };
          held.progress ??= setTimeout(() => {
            held.progress = undefined;
            const p = held.pending;
            held.pending = undefined;
            if (p) send(p.msg, p.revision);
          }, wait);
          return;
        }
      } else {
        // Events carry their own revisions, past any progress still waiting.
        held.pending = undefined;
      }
      held.tracker?.delivered(revision);
      write(msg);
    };
    const response = (events: readonly StoreEvent[], revision: number): WatchResponse =>
      events.length > 0 ? { events: events.map((e) => eventToPb(e, hide)), progressRevision: 0, followed: [], followedRevision: 0 } : { events: [], progressRevision: revision, followed: [], followedRevision: 0 };
    // From the coordinator's shared watch: the streams of one filter share each response.
    const key = filterKey(filter, hide);
    const fromHub = (batch: HubBatch): void => {
      const picked = follower?.pick(batch.events, filter, batch.revision, batch.memo);
      if (picked !== undefined) {
        send(response(picked, batch.revision), batch.revision);
        return;
      }
      let msg = batch.memo.get(key) as WatchResponse | undefined;
      if (msg === undefined) {
        msg = response(batch.events.filter((e) => matches(e, filter)), batch.revision);
        batch.memo.set(key, msg);
      }
      send(msg, batch.revision);
    };
    const fromEtcd = (events: StoreEvent[], revision: number): void => send(response(follower?.pick(events, filter, revision, new Map()) ?? events, revision), revision);
    // "From now" is from etcd's revision now: the shared watch may not have delivered it yet.
    const from = req.fromRevision === 0 ? (await deps.events.headRevision()) + 1 : req.fromRevision;
    if (done) return { write, fail, done: () => true };
    held.watcher = deps.hub?.subscribe(from, fromHub, fail) ?? (await deps.events.watch(from, filter, fromEtcd, fail));
    if (done) {
      void held.watcher.cancel().catch(() => undefined);
      return { write, fail, done: () => true };
    }
    // Counted from here (a failed start leaves nothing behind); it only ever moves forward.
    const role = principal.role;
    held.tracker = deps.watchers?.watching(role.kind === 'node' ? `node:${role.node}` : `token:${principal.tokenId}`, req.fromRevision);
    // Headers only once the etcd watch exists: a client that waits for
    // them knows no later change can be missed.
    call.sendMetadata(new Metadata());
    // A quiet stream still speaks while this coordinator reaches etcd: a node that hears
    // nothing for a lease TTL knows its view may be stale and stops serving. A heartbeat
    // claims no revision (progress_revision 0).
    held.heartbeat = setInterval(() => {
      if (done) return;
      if (!wrote && deps.healthy?.() !== false) call.write({ events: [], progressRevision: 0, followed: [], followedRevision: 0 });
      wrote = false;
    }, deps.heartbeatMs ?? 1000);
    return { write, fail, done: () => done };
  }

  /** Checks a follow request's users: named, and of a tenant the caller may watch. */
  function userKeys(refs: readonly UserRef[], field: string, principal: Principal): string[] {
    const role = principal.role;
    return refs.map((r, i) => {
      const tenant = parseTenantId(r.tenant, `${field}[${i}].tenant`);
      if (r.user === '') throw new DomainError('invalid_argument', `${field}[${i}].user: give a user`, { field: `${field}[${i}].user` });
      if (role.kind === 'node' && role.tenants !== undefined && !role.tenants.includes(tenant)) {
        throw new DomainError('permission_denied', `${field}[${i}].tenant: this node serves other tenants than ${tenant}`, { field: `${field}[${i}].tenant` });
      }
      return `${tenant}/${r.user}`;
    });
  }

  return {
    watch: authenticated(deps, 'Watch', ['admin', 'tenant-admin', 'node'], (call: ServerWritableStream<WatchRequest, WatchResponse>, principal) => {
      const log = deps.log.child({ method: 'Watch' });
      open(call, principal, call.request, log).catch((err: unknown) => call.emit('error', toGrpcError(err, log)));
    }),

    follow: authenticated(deps, 'Follow', ['node'], (call: ServerDuplexStream<FollowRequest, WatchResponse>, principal) => {
      const log = deps.log.child({ method: 'Follow' });
      const role = principal.role;
      const follower = new Follower(role.kind === 'node' ? role.node : undefined);
      let stream: OpenStream | undefined;
      let failed = false;
      const fail = (err: unknown): void => {
        if (failed) return;
        failed = true;
        if (stream) stream.fail(err);
        else call.emit('error', toGrpcError(err, log));
      };
      // Requests are handled one at a time, in order: a follow and an unfollow of one user stay in order.
      let queue = Promise.resolve();
      const handle = async (r: FollowRequest): Promise<void> => {
        if (failed || stream?.done()) return;
        if (stream === undefined) {
          if (!r.watch) throw new DomainError('invalid_argument', 'watch: the first request says where the stream starts', { field: 'watch' });
          for (const k of userKeys(r.following, 'following', principal)) follower.follow(k, 0);
          stream = await open(call, principal, r.watch, log, follower);
        } else if (r.watch) {
          throw new DomainError('invalid_argument', 'watch: only the first request starts the stream', { field: 'watch' });
        } else if (r.following.length > 0) {
          throw new DomainError('invalid_argument', 'following: only the first request names users already followed', { field: 'following' });
        }
        for (const k of userKeys(r.unfollow, 'unfollow', principal)) follower.unfollow(k);
        const keys = userKeys(r.follow, 'follow', principal);
        if (keys.length === 0) return;
        const placement = deps.placement;
        if (!placement) throw new DomainError('unavailable', 'this coordinator cannot answer follows');
        // The answers come from the coordinator's assignment cache, once it holds every change the
        // stream has passed (those it did not send for these users); later ones it has too are skipped.
        for (;;) {
          const need = follower.lastAssignment;
          if (placement.revision() >= need) break;
          if (!(await placement.assignmentsReached(need, 5000))) throw new DomainError('unavailable', 'the assignment cache is behind the stream; follow again', { retryable: true });
        }
        if (stream.done()) return;
        const at = placement.revision();
        const followed = keys.map((k) => {
          const slash = k.indexOf('/');
          const tenant = k.slice(0, slash);
          const user = k.slice(slash + 1);
          follower.follow(k, at);
          const a = placement.cachedAssignment(tenant, user);
          return { tenant, user, node: a?.node ?? '', epoch: a?.epoch ?? 0 };
        });
        stream.write({ events: [], progressRevision: 0, followed, followedRevision: at });
      };
      call.on('data', (r: FollowRequest) => {
        queue = queue.then(() => handle(r)).catch(fail);
      });
      call.on('end', () => {
        void queue.then(() => {
          if (!failed) call.end();
        });
      });
      call.on('error', () => undefined);
    }),

    snapshot: authenticated(deps, 'Snapshot', ['admin', 'tenant-admin', 'node'], (call: ServerWritableStream<SnapshotRequest, SnapshotResponse>, principal) => {
      const log = deps.log.child({ method: 'Snapshot' });
      void (async () => {
        const role = principal.role;
        if (call.request.ownAssignments && role.kind !== 'node') throw new DomainError('invalid_argument', 'own_assignments: only a node has assignments of its own', { field: 'own_assignments' });
        const filter = { ...parseFilter(call.request.kinds, call.request.tenant, principal), ...(call.request.ownAssignments && role.kind === 'node' ? { node: role.node } : {}) };
        const hide = role.kind === 'node';
        const write = async (msg: SnapshotResponse): Promise<void> => {
          if (!call.write(msg)) await new Promise<void>((resolve) => call.once('drain', resolve));
        };
        // From this coordinator's copy when the client reads compact mailboxes; else (or while the
        // copy loads, or cannot catch up) from etcd at its current revision.
        let revision = call.request.compact && deps.copy ? await deps.copy.serve(filter, hide, write) : undefined;
        const own = (e: StoreEvent): boolean => filter.node === undefined || !followedKinds(e) || nodesOf(e).includes(filter.node);
        revision ??= await deps.events.snapshot(filter, (events) => write({ events: events.filter(own).map((e) => eventToPb(e, hide)), revision: 0, mailboxes: EMPTY }));
        call.write({ events: [], revision, mailboxes: EMPTY });
        call.end();
      })().catch((err: unknown) => call.emit('error', toGrpcError(err, log)));
    }),
  };
}
