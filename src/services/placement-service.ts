import { type ServerDuplexStream, type ServerWritableStream, status as grpcStatus } from '@grpc/grpc-js';
import { type AllowEntry, addressAllowed } from '../domain/address-allowlist.js';
import { DomainError } from '../domain/errors.js';
import { authorize } from '../domain/role.js';
import { TENANT_ID_PATTERN, parseTenantId, parseUserId, printable } from '../domain/ids.js';
import { parseMailboxRef } from '../domain/mailbox-name.js';
import { DEFAULT_WEIGHT, NODE_PROTOCOLS, parseWeight } from '../domain/placement.js';
import type { Logger } from 'pino';
import type {
  DrainProgress,
  DrainRequest,
  KeepAliveRequest,
  KeepAliveResponse,
  LocateAnswers,
  LocateBatch,
  LocateRequest,
  LocateResponse,
  LocateStreamRequest,
  LocateStreamResponse,
  Node,
  PlacementServiceServer,
} from '../gen/mailshare/v1/placement.js';
import type { NodeView, PlacementStore } from '../store/placement-store.js';
import type { BarrierStore } from '../store/barrier-store.js';
import type { DirectoryStore } from '../store/directory-store.js';
import { requireTenantRole } from './access.js';
import type { Principal } from './auth.js';
import { type RpcDeps, authenticated, endOnShutdown, unary } from './rpc.js';
import { toGrpcError } from './status.js';
import { requireDomainlessUsers } from './user-names.js';

export interface PlacementServiceDeps extends RpcDeps {
  readonly placement: PlacementStore;
  /** For the user-name rule of tenants with login domains (read only for ids with an "@"). */
  readonly directory: DirectoryStore;
  /** Addresses a node may register (gateways send users' and the master password there). */
  readonly allowedAddresses: readonly AllowEntry[];
  /** "Wait until applied" barriers (WaitApplied, AckBarrier, and their push down keepalive streams). */
  readonly barriers?: BarrierStore;
}

export const DEFAULT_TTL_SECONDS = 5;
export const MIN_TTL_SECONDS = 2;
export const MAX_TTL_SECONDS = 300;
/** Lookups per LocateMany message. */
const MAX_BATCH = 1000;

function parseNodeName(value: string, field = 'name'): string {
  if (!TENANT_ID_PATTERN.test(value)) {
    throw new DomainError('invalid_argument', `${field}: "${printable(value)}" is not a node name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`, { field });
  }
  return value;
}

function parseHostPort(value: string, field: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/.exec(value);
  if (!m || Number(m[2]) === 0 || Number(m[2]) > 65535) throw new DomainError('invalid_argument', `${field}: "${printable(value)}" is not host:port`, { field });
  return value;
}

function parseLeaseId(value: string, field = 'lease_id'): string {
  if (!/^[1-9]\d{0,19}$/.test(value)) throw new DomainError('invalid_argument', `${field}: is not a lease id`, { field });
  return value;
}

function parseTimeout(ms: number, field = 'timeout_ms'): number {
  if (ms === 0) return 10_000;
  if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) throw new DomainError('invalid_argument', `${field}: must be between 0 and 600000`, { field });
  return ms;
}

/** Lease ids are for their node alone: other nodes (and events they watch) never see them. */
export function hideLease(node: Node): Node {
  return { ...node, leaseId: '' };
}

export function nodeToPb(n: NodeView): Node {
  return {
    name: n.name,
    imapAddress: n.imapAddress,
    weight: n.weight,
    zone: n.zone,
    state: n.live ? n.state : 'down',
    leaseId: n.live?.leaseId ?? '',
    users: n.users,
    registeredAt: n.registeredAt,
    revision: n.revision,
    downReason: n.live ? '' : n.downReason,
    addresses: { ...n.addresses },
  };
}

export function createPlacementService(deps: PlacementServiceDeps): PlacementServiceServer {
  const { placement } = deps;
  /** One Locate, shared by the unary call and the stream. */
  const locate = async (req: LocateRequest, principal: Principal, log: Logger): Promise<LocateResponse> => {
    const tenant = parseTenantId(req.tenant);
    if ((req.user === '') === (req.mailbox === '')) {
      throw new DomainError('invalid_argument', 'user: give exactly one of user and mailbox', { field: 'user' });
    }
    const user = req.user !== '' ? parseUserId(req.user, 'user') : parseMailboxRef(req.mailbox).owner;
    requireTenantRole(principal.role, tenant, ['admin', 'tenant-admin', 'node']);
    if (req.assign) await requireDomainlessUsers(deps.directory, tenant, [{ id: user, field: req.user !== '' ? 'user' : 'mailbox' }]);
    const { assignment, created } = await placement.locate(tenant, user, req.assign);
    if (created) log.info({ tenant, user, node: assignment!.node, epoch: assignment!.epoch }, 'user assigned');
    return {
      tenant,
      user,
      node: assignment?.node ?? '',
      imapAddress: assignment ? placement.imapAddressOf(assignment.node) : '',
      epoch: assignment?.epoch ?? 0,
      assigned: created,
    };
  };

  // The keepalive streams this coordinator holds: a new barrier is told to every node on them.
  const keepalives = new Set<ServerDuplexStream<KeepAliveRequest, KeepAliveResponse>>();
  deps.barriers?.onBarrier((b) => {
    for (const call of keepalives) if (!call.writableEnded) call.write({ leaseId: '', ttlSeconds: 0, barrierId: b.id, barrierRevision: b.revision });
  });

  return {
    ackBarrier: unary(deps, 'AckBarrier', ['node'], async (req, ctx) => {
      const name = parseNodeName(req.node, 'node');
      authorize(ctx.principal.role, { roles: ['node'], node: name });
      const leaseId = parseLeaseId(req.leaseId);
      if (!/^[0-9a-f]{16}$/.test(req.barrierId)) throw new DomainError('invalid_argument', 'barrier_id: not a barrier id', { field: 'barrier_id' });
      if (!Number.isSafeInteger(req.revision) || req.revision <= 0) throw new DomainError('invalid_argument', 'revision: must be a positive revision', { field: 'revision' });
      if (!(await placement.isLeaseOf(name, leaseId))) throw new DomainError('permission_denied', `lease_id: not the lease of node ${name}`, { field: 'lease_id' });
      if (!deps.barriers || !(await deps.barriers.ack(req.barrierId, name, req.revision))) throw new DomainError('not_found', 'barrier_id: no such barrier (it ended)', { field: 'barrier_id' });
      return {};
    }),

    waitApplied: unary(deps, 'WaitApplied', ['admin', 'tenant-admin'], async (req) => {
      if (!Number.isSafeInteger(req.revision) || req.revision <= 0) throw new DomainError('invalid_argument', 'revision: must be the positive revision a write answered with', { field: 'revision' });
      const timeoutMs = req.timeoutMs === 0 ? 10_000 : req.timeoutMs;
      if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) throw new DomainError('invalid_argument', 'timeout_ms: must be between 1 and 600000', { field: 'timeout_ms' });
      if (!deps.barriers) throw new DomainError('unavailable', 'this coordinator does not serve WaitApplied');
      const nodes = placement.listNodes().filter((n) => n.live !== undefined).map((n) => n.name).sort();
      const { id, leaseId, headRevision } = await deps.barriers.create(req.revision, Math.ceil(timeoutMs / 1000) + 5);
      try {
        const complete = await deps.barriers.waitAll(id, nodes, timeoutMs);
        const answers = deps.barriers.answers(id);
        return { nodes: nodes.map((node) => ({ node, revision: answers.get(node) ?? 0 })), complete, headRevision };
      } finally {
        await deps.barriers.end(leaseId);
      }
    }),

    registerNode: unary(deps, 'RegisterNode', ['node'], async (req, ctx) => {
      const name = parseNodeName(req.name);
      authorize(ctx.principal.role, { roles: ['node'], node: name });
      const imapAddress = parseHostPort(req.imapAddress, 'imap_address');
      if (!addressAllowed(imapAddress, deps.allowedAddresses)) {
        throw new DomainError('permission_denied', `imap_address: ${imapAddress} is not an address nodes may register (placement.allowedAddresses)`, { field: 'imap_address' });
      }
      const addresses: Record<string, string> = {};
      for (const [protocol, value] of Object.entries(req.addresses ?? {})) {
        const field = `addresses[${protocol.slice(0, 20)}]`;
        if (!NODE_PROTOCOLS.includes(protocol)) throw new DomainError('invalid_argument', `${field}: unknown protocol (one of ${NODE_PROTOCOLS.join(', ')})`, { field: 'addresses' });
        const address = parseHostPort(value, field);
        if (!addressAllowed(address, deps.allowedAddresses)) {
          throw new DomainError('permission_denied', `${field}: ${address} is not an address nodes may register (placement.allowedAddresses)`, { field: 'addresses' });
        }
        addresses[protocol] = address;
      }
      const weight = req.weight === 0 ? DEFAULT_WEIGHT : parseWeight(req.weight);
      if (req.zone !== '' && !TENANT_ID_PATTERN.test(req.zone)) {
        throw new DomainError('invalid_argument', 'zone: must be empty or 1-63 of a-z 0-9 . _ -', { field: 'zone' });
      }
      const ttl = req.ttlSeconds === 0 ? DEFAULT_TTL_SECONDS : req.ttlSeconds;
      if (!Number.isInteger(ttl) || ttl < MIN_TTL_SECONDS || ttl > MAX_TTL_SECONDS) {
        throw new DomainError('invalid_argument', `ttl_seconds: must be between ${MIN_TTL_SECONDS} and ${MAX_TTL_SECONDS}`, { field: 'ttl_seconds' });
      }
      const r = await placement.register({ name, imapAddress, addresses, weight, zone: req.zone, ttlSeconds: ttl });
      ctx.log.info({ node: name, lease: r.leaseId, ttl: r.ttl }, 'node registered');
      return { leaseId: r.leaseId, ttlSeconds: r.ttl, node: nodeToPb({ ...r.node, live: { name, leaseId: r.leaseId }, users: 0 }) };
    }),

    keepAlive: authenticated(deps, 'KeepAlive', ['node'], (call: ServerDuplexStream<KeepAliveRequest, KeepAliveResponse>, principal) => {
      endOnShutdown(deps, call);
      keepalives.add(call);
      const forget = (): void => void keepalives.delete(call);
      call.on('cancelled', forget);
      call.on('close', forget);
      call.on('finish', forget);
      let chain = Promise.resolve();
      const node = principal.role.kind === 'node' ? principal.role.node : '';
      call.on('data', (req: KeepAliveRequest) => {
        chain = chain.then(async () => {
          try {
            const leaseId = parseLeaseId(req.leaseId);
            // A node renews only its own lease.
            if (!(await placement.isLeaseOf(node, leaseId))) {
              throw new DomainError('permission_denied', `lease_id: not the lease of node ${node}`, { field: 'lease_id' });
            }
            const ttl = await placement.keepAlive(leaseId);
            call.write({ leaseId, ttlSeconds: ttl, barrierId: '', barrierRevision: 0 });
          } catch (err) {
            call.emit('error', toGrpcError(err, deps.log));
          }
        });
      });
      call.on('end', () => void chain.then(() => call.end()));
    }),

    deregisterNode: unary(deps, 'DeregisterNode', ['node'], async (req, ctx) => {
      const name = parseNodeName(req.name);
      authorize(ctx.principal.role, { roles: ['node'], node: name });
      const leaseId = parseLeaseId(req.leaseId);
      if (req.reason.length > 200 || /[^\x20-\x7e]/.test(req.reason)) throw new DomainError('invalid_argument', 'reason: at most 200 printable ASCII characters', { field: 'reason' });
      if (await placement.deregister(name, leaseId, req.reason)) ctx.log.info({ node: name, lease: leaseId, reason: req.reason || undefined }, 'node deregistered');
      return {};
    }),

    listNodes: unary(deps, 'ListNodes', ['admin', 'node'], async (_req, ctx) => {
      const nodes = placement.listNodes().map(nodeToPb);
      return { nodes: ctx.principal.role.kind === 'node' ? nodes.map(hideLease) : nodes };
    }),

    setNodeState: unary(deps, 'SetNodeState', ['admin'], async (req, ctx) => {
      const name = parseNodeName(req.name);
      if (req.state !== 'active' && req.state !== 'draining') {
        throw new DomainError('invalid_argument', 'state: must be "active" or "draining"', { field: 'state' });
      }
      await placement.setState(name, req.state);
      ctx.log.info({ node: name, state: req.state }, 'node state changed');
      const view = placement.listNodes().find((n) => n.name === name);
      const fresh = await placement.getNode(name);
      return nodeToPb({ ...(view ?? { live: undefined, users: 0 }), ...fresh! });
    }),

    removeNode: unary(deps, 'RemoveNode', ['admin'], async (req, ctx) => {
      const name = parseNodeName(req.name);
      const users = await placement.remove(name, req.force, req.dryRun === true);
      if (!req.dryRun) ctx.log.info({ node: name, force: req.force }, 'node removed');
      return { users, revision: req.dryRun ? 0 : await placement.headRevision() };
    }),

    locate: unary(deps, 'Locate', ['admin', 'tenant-admin', 'node'], (req, ctx) => locate(req, ctx.principal, ctx.log)),

    locateStream: authenticated(deps, 'LocateStream', ['admin', 'tenant-admin', 'node'], (call: ServerDuplexStream<LocateStreamRequest, LocateStreamResponse>, principal) => {
      const log = deps.log.child({ method: 'LocateStream' });
      endOnShutdown(deps, call, () => undefined);
      call.on('data', (msg: LocateStreamRequest) => {
        const id = msg.id;
        locate(msg.request ?? { tenant: '', user: '', mailbox: '', assign: false }, principal, log).then(
          (response) => {
            if (!call.writableEnded) call.write({ id, response, code: 0, message: '' });
          },
          (err: unknown) => {
            const e = toGrpcError(err, log);
            if (!call.writableEnded) call.write({ id, response: undefined, code: e.code, message: e.details });
          },
        );
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    }),

    locateMany: authenticated(deps, 'LocateMany', ['admin', 'tenant-admin', 'node'], (call: ServerDuplexStream<LocateBatch, LocateAnswers>, principal) => {
      const log = deps.log.child({ method: 'LocateMany' });
      endOnShutdown(deps, call, () => undefined);
      // Answers that completed since the last write go out together, once the lookups started by the
      // messages at hand had their chance to finish (most are answered from memory at once).
      let ready: LocateStreamResponse[] = [];
      let scheduled = false;
      const flush = (): void => {
        scheduled = false;
        const answers = ready;
        ready = [];
        if (answers.length > 0 && !call.writableEnded) call.write({ answers });
      };
      const answer = (a: LocateStreamResponse): void => {
        ready.push(a);
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      };
      call.on('data', (batch: LocateBatch) => {
        if (batch.lookups.length > MAX_BATCH) {
          for (const l of batch.lookups) answer({ id: l.id, response: undefined, code: grpcStatus.INVALID_ARGUMENT, message: `lookups: at most ${MAX_BATCH} per message` });
          return;
        }
        for (const l of batch.lookups) {
          const id = l.id;
          locate(l.request ?? { tenant: '', user: '', mailbox: '', assign: false }, principal, log).then(
            (response) => answer({ id, response, code: 0, message: '' }),
            (err: unknown) => {
              const e = toGrpcError(err, log);
              answer({ id, response: undefined, code: e.code, message: e.details });
            },
          );
        }
      });
      call.on('end', () => {
        // Lookups still running answer into a closed stream: dropped.
        setImmediate(() => {
          flush();
          call.end();
        });
      });
      call.on('error', () => undefined);
    }),

    move: unary(deps, 'Move', ['admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      const to = req.toNode === '' ? undefined : parseNodeName(req.toNode, 'to_node');
      const timeoutMs = parseTimeout(req.timeoutMs);
      if (req.dryRun) {
        const plan = await placement.planMove(tenant, user, to);
        return { node: plan.to, epoch: 0, fromNode: plan.from, releasedByNode: false };
      }
      const r = await placement.move(tenant, user, { to, kick: false, timeoutMs });
      ctx.log.info({ tenant, user, from: r.from, node: r.assignment?.node, epoch: r.assignment?.epoch, releasedByNode: r.releasedByNode }, 'user moved');
      return { node: r.assignment!.node, epoch: r.assignment!.epoch, fromNode: r.from, releasedByNode: r.releasedByNode };
    }),

    kick: unary(deps, 'Kick', ['admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      const timeoutMs = parseTimeout(req.timeoutMs);
      if (req.dryRun) return { releasedByNode: false, fromNode: (await placement.getAssignment(tenant, user))?.node ?? '', revision: 0 };
      const r = await placement.move(tenant, user, { kick: true, timeoutMs });
      ctx.log.info({ tenant, user, from: r.from, releasedByNode: r.releasedByNode }, 'user kicked');
      // The move waited until this coordinator's copy no longer shows the old assignment.
      return { releasedByNode: r.releasedByNode, fromNode: r.from, revision: placement.revision() };
    }),

    drain: authenticated(deps, 'Drain', ['admin'], (call: ServerWritableStream<DrainRequest, DrainProgress>) => {
      const log = deps.log.child({ method: 'Drain' });
      void (async () => {
        const name = parseNodeName(call.request.name);
        const parallelism = call.request.parallelism === 0 ? 16 : call.request.parallelism;
        if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > 256) {
          throw new DomainError('invalid_argument', 'parallelism: must be between 1 and 256', { field: 'parallelism' });
        }
        const timeoutMs = parseTimeout(call.request.timeoutMs);
        if (call.request.dryRun) {
          const plan = await placement.planDrain(name);
          call.write({ total: plan.length, moved: 0, failed: 0, done: true, plan: plan.map((p) => ({ tenant: p.tenant, user: p.user, toNode: p.to })), revision: 0 });
          call.end();
          return;
        }
        await placement.setState(name, 'draining');
        const users = placement.usersOf(name);
        const progress = { total: users.length, moved: 0, failed: 0, done: false };
        let lastSent = 0;
        const report = (force = false): void => {
          if (force || Date.now() - lastSent > 100) {
            lastSent = Date.now();
            call.write({ ...progress, plan: [], revision: 0 });
          }
        };
        report(true);
        let next = 0;
        let cancelled = false;
        call.on('cancelled', () => (cancelled = true));
        await Promise.all(
          Array.from({ length: Math.min(parallelism, users.length) }, async () => {
            while (next < users.length && !cancelled) {
              const [tenant, user] = users[next++]!;
              try {
                await placement.move(tenant, user, { kick: false, timeoutMs });
                progress.moved++;
              } catch (err) {
                progress.failed++;
                log.warn({ tenant, user, err: (err as Error).message }, 'drain: move failed');
              }
              report();
            }
          }),
        );
        log.info({ node: name, ...progress }, 'drain finished');
        call.write({ ...progress, done: true, plan: [], revision: placement.revision() });
        call.end();
      })().catch((err: unknown) => call.emit('error', toGrpcError(err, log)));
    }),

    release: unary(deps, 'Release', ['admin', 'node'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      if (!Number.isSafeInteger(req.epoch) || req.epoch <= 0) throw new DomainError('invalid_argument', 'epoch: must be a positive revision', { field: 'epoch' });
      if (!Number.isSafeInteger(req.waitAcksMs) || req.waitAcksMs < 0 || req.waitAcksMs > 10_000) throw new DomainError('invalid_argument', 'wait_acks_ms: must be 0 to 10000', { field: 'wait_acks_ms' });
      const role = ctx.principal.role;
      requireTenantRole(role, tenant, ['admin', 'node']);
      const node = role.kind === 'node' ? role.node : undefined;
      if (req.waitAcksMs > 0) {
        // The nodes relaying the user's sessions stop them first (AckMove), or the wait runs out.
        const missing = await placement.waitMoveAcks(tenant, user, req.epoch, node, req.waitAcksMs, ctx.signal);
        if (missing.length > 0) ctx.log.warn({ tenant, user, epoch: req.epoch, missing }, 'releasing before every node holding the user acknowledged the move');
      }
      // A node releases only its own users' assignments.
      return placement.release(tenant, user, req.epoch, req.ifUnheld, node);
    }),

    ackMove: unary(deps, 'AckMove', ['node'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      const node = parseNodeName(req.node, 'node');
      if (!Number.isSafeInteger(req.epoch) || req.epoch <= 0) throw new DomainError('invalid_argument', 'epoch: must be a positive revision', { field: 'epoch' });
      authorize(ctx.principal.role, { roles: ['node'], node, tenant });
      return { recorded: await placement.ackMove(tenant, user, req.epoch, node) };
    }),

    holdUser: unary(deps, 'HoldUser', ['node'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const user = parseUserId(req.user, 'user');
      const node = parseNodeName(req.node, 'node');
      authorize(ctx.principal.role, { roles: ['node'], node, tenant });
      await placement.hold(tenant, user, node, req.hold);
      ctx.log.debug({ tenant, user, node, hold: req.hold }, 'hold');
      return {};
    }),
  };
}
