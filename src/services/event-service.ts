import type { WatchRegistry, WatchTracker } from './coordinator-metrics.js';
import type { SnapshotCopy } from './snapshot-copy.js';
import { Metadata, type ServerWritableStream } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import { parseTenantId } from '../domain/ids.js';
import { type Event, type EventServiceServer, EventServiceService, type SnapshotRequest, type SnapshotResponse, type WatchRequest, type WatchResponse } from '../gen/mailshare/v1/events.js';
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
}

/**
 * The event service's wire definition, with Watch responses encoded once
 * however many streams they are written to (the streams of one filter share
 * each response object, see watch()); grpc-js copies the bytes into each
 * stream's own frame.
 */
const encodedResponses = new WeakMap<WatchResponse, Buffer>();
export const EventServiceDefinition = {
  ...EventServiceService,
  watch: {
    ...EventServiceService.watch,
    responseSerialize: (value: WatchResponse): Buffer => {
      let bytes = encodedResponses.get(value);
      if (bytes === undefined) {
        bytes = EventServiceService.watch.responseSerialize(value);
        encodedResponses.set(value, bytes);
      }
      return bytes;
    },
  },
} as const;

/** Identifies what a stream is sent: streams with equal keys are sent the same responses. */
function filterKey(filter: EventFilter, hideLeases: boolean): string {
  return `${[...filter.kinds].sort().join(',')}|${filter.tenants?.join(',') ?? '*'}|${hideLeases ? 'hidden' : 'leases'}`;
}

const EMPTY = Buffer.alloc(0);

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
      let v: { epoch?: number; from?: string; to?: string; kick?: boolean } = {};
      try {
        v = e.value ? (JSON.parse(e.value.toString()) as typeof v) : {};
      } catch {
        v = {};
      }
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

export function createEventService(deps: EventServiceDeps): EventServiceServer {
  const maxBufferedBytes = deps.maxBufferedBytes ?? 8 * 1024 * 1024;
  return {
    watch: authenticated(deps, 'Watch', ['admin', 'tenant-admin', 'node'], (call: ServerWritableStream<WatchRequest, WatchResponse>, principal) => {
      const log = deps.log.child({ method: 'Watch' });
      void (async () => {
        const req = call.request;
        if (!Number.isSafeInteger(req.fromRevision) || req.fromRevision < 0) {
          throw new DomainError('invalid_argument', 'from_revision: must be 0 or a revision', { field: 'from_revision' });
        }
        const filter = parseFilter(req.kinds, req.tenant, principal);
        const hide = principal.role.kind === 'node';
        let done = false;
        let wrote = false;
        const held: { watcher?: WatchHandle; heartbeat?: NodeJS.Timeout; tracker?: WatchTracker } = {};
        const stop = (): void => {
          done = true;
          held.tracker?.close();
          clearInterval(held.heartbeat);
          void held.watcher?.cancel().catch(() => undefined);
        };
        const fail = (err: unknown): void => {
          if (done) return;
          stop();
          call.emit('error', toGrpcError(err, log));
        };
        call.on('cancelled', stop);
        endOnShutdown(deps, call, stop);
        const send = (msg: WatchResponse, revision: number): void => {
          if (done) return;
          held.tracker?.delivered(revision);
          call.write(msg);
          wrote = true;
          // A consumer that cannot keep up must not grow our memory: cut it
          // off; it resumes from the last revision it processed.
          if (queuedBytes(call) > maxBufferedBytes) {
            fail(new DomainError('resource_exhausted', `watcher too slow (more than ${maxBufferedBytes} bytes queued); resume from your last revision`));
          }
        };
        const response = (events: readonly StoreEvent[], revision: number): WatchResponse =>
          events.length > 0 ? { events: events.map((e) => eventToPb(e, hide)), progressRevision: 0 } : { events: [], progressRevision: revision };
        // From the coordinator's shared watch: the streams of one filter share each response.
        const key = filterKey(filter, hide);
        const fromHub = (batch: HubBatch): void => {
          let msg = batch.memo.get(key) as WatchResponse | undefined;
          if (msg === undefined) {
            msg = response(batch.events.filter((e) => matches(e, filter)), batch.revision);
            batch.memo.set(key, msg);
          }
          send(msg, batch.revision);
        };
        held.watcher =
          deps.hub?.subscribe(req.fromRevision, fromHub, fail) ??
          (await deps.events.watch(req.fromRevision, filter, (events, revision) => send(response(events, revision), revision), fail));
        if (done) {
          void held.watcher.cancel().catch(() => undefined);
          return;
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
          if (!wrote && deps.healthy?.() !== false) call.write({ events: [], progressRevision: 0 });
          wrote = false;
        }, deps.heartbeatMs ?? 1000);
      })().catch((err: unknown) => call.emit('error', toGrpcError(err, log)));
    }),

    snapshot: authenticated(deps, 'Snapshot', ['admin', 'tenant-admin', 'node'], (call: ServerWritableStream<SnapshotRequest, SnapshotResponse>, principal) => {
      const log = deps.log.child({ method: 'Snapshot' });
      void (async () => {
        const filter = parseFilter(call.request.kinds, call.request.tenant, principal);
        const hide = principal.role.kind === 'node';
        const write = async (msg: SnapshotResponse): Promise<void> => {
          if (!call.write(msg)) await new Promise<void>((resolve) => call.once('drain', resolve));
        };
        // From this coordinator's copy when the client reads compact mailboxes; else (or while the
        // copy loads, or cannot catch up) from etcd at its current revision.
        let revision = call.request.compact && deps.copy ? await deps.copy.serve(filter, hide, write) : undefined;
        revision ??= await deps.events.snapshot(filter, (events) => write({ events: events.map((e) => eventToPb(e, hide)), revision: 0, mailboxes: EMPTY }));
        call.write({ events: [], revision, mailboxes: EMPTY });
        call.end();
      })().catch((err: unknown) => call.emit('error', toGrpcError(err, log)));
    }),
  };
}
