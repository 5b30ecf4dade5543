import type http from 'node:http';
import { Metadata } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import { EVENT_KINDS } from '../domain/event-kinds.js';
import { parseDomain, parseTenantId, parseUserId } from '../domain/ids.js';
import type { HttpAnswer, HttpRoute } from '../metrics/http-listener.js';
import type { DirectoryStore } from '../store/directory-store.js';
import type { EventStore } from '../store/event-store.js';
import type { MailboxStore } from '../store/mailbox-store.js';
import type { PlacementStore } from '../store/placement-store.js';
import { requireTenantRole } from './access.js';
import { explainAccess } from './explain.js';
import type { Authenticator, Principal } from './auth.js';
import { STATUS_CSS, STATUS_HTML, STATUS_JS } from './status-assets.js';

export interface StatusPageDeps {
  readonly auth: Authenticator;
  readonly placement: PlacementStore;
  readonly directory: DirectoryStore;
  readonly mailboxes: MailboxStore;
  readonly events: EventStore;
  readonly log: { warn(obj: object, msg: string): void };
  /** Event streams open at most at once (each holds an etcd watch); default 64. */
  readonly maxEventStreams?: number;
}

const HTTP_STATUS: Record<string, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  failed_precondition: 409,
  resource_exhausted: 429,
  unavailable: 503,
  deadline_exceeded: 503,
};

/** The page may load only what it serves itself; no inline script, no framing. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const json = (status: number, value: unknown): HttpAnswer => ({ status, headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(value) });

function failure(err: unknown, log: StatusPageDeps['log']): HttpAnswer {
  if (err instanceof DomainError) return json(HTTP_STATUS[err.code] ?? 500, { error: err.message, ...(err.field ? { field: err.field } : {}) });
  log.warn({ err: String(err) }, 'status page request failed');
  return json(500, { error: 'internal error' });
}

/**
 * The coordinator's status page at `/` of its HTTP listener, and the JSON
 * it reads: the nodes (state, zone, weight, users against the bounded-load
 * capacity, lease left), tenants with their counts, a lookup of one user
 * (node, shares, rights and why, by the rule chain of `acl rights`), and
 * the event stream as Server-Sent Events. Every /api call takes the same
 * bearer tokens as gRPC, in the Authorization header (never the URL); a
 * tenant admin sees their tenant only, node tokens nothing.
 */
export function statusRoutes(deps: StatusPageDeps): HttpRoute[] {
  const leaseCache = new Map<string, { at: number; left: number | undefined }>();
  let streams = 0;

  const principalOf = async (req: http.IncomingMessage): Promise<Principal & { role: { kind: 'admin' } | { kind: 'tenant-admin'; tenant: string } }> => {
    const md = new Metadata();
    const header = req.headers.authorization;
    if (typeof header === 'string') md.set('authorization', header);
    const p = await deps.auth.authenticate(md);
    if (p.role.kind !== 'admin' && p.role.kind !== 'tenant-admin') throw new DomainError('permission_denied', `token: ${p.role.kind} tokens cannot read the status page; use an admin or tenant-admin token`, { field: 'token' });
    return p as never;
  };
  const api = (path: string, fn: (req: http.IncomingMessage, p: Awaited<ReturnType<typeof principalOf>>) => Promise<HttpAnswer>): HttpRoute => ({
    method: 'GET',
    path,
    handle: async (req) => {
      try {
        return await fn(req, await principalOf(req));
      } catch (err) {
        return failure(err, deps.log);
      }
    },
  });
  const leaseLeft = async (leaseId: string): Promise<number | undefined> => {
    const hit = leaseCache.get(leaseId);
    if (hit && Date.now() - hit.at < 1000) return hit.left;
    const left = await deps.placement.leaseSecondsLeft(leaseId).catch(() => undefined);
    leaseCache.set(leaseId, { at: Date.now(), left });
    if (leaseCache.size > 10_000) leaseCache.clear();
    return left;
  };

  return [
    { method: 'GET', path: '/', handle: () => ({ status: 200, headers: { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8' }, body: STATUS_HTML }) },
    { method: 'GET', path: '/status.js', handle: () => ({ status: 200, headers: { 'content-type': 'text/javascript; charset=utf-8' }, body: STATUS_JS }) },
    { method: 'GET', path: '/status.css', handle: () => ({ status: 200, headers: { 'content-type': 'text/css; charset=utf-8' }, body: STATUS_CSS }) },

    api('/api/overview', async (_req, p) => {
      const own = p.role.kind === 'tenant-admin' ? p.role.tenant : undefined;
      const records = own !== undefined ? [await deps.directory.requireTenant(own)] : (await deps.directory.listTenants(200, undefined)).tenants;
      const tenants = await Promise.all(
        records.map(async (t) => ({
          id: t.id,
          domains: t.domains,
          mailboxes: await deps.mailboxes.count(t.id),
          groups: await deps.directory.groupCount(t.id),
          users: deps.placement.assignedIn(t.id),
        })),
      );
      let nodes: unknown[] | undefined;
      if (own === undefined) {
        const report = new Map(deps.placement.loadReport().nodes.map((n) => [n.name, n]));
        nodes = await Promise.all(
          deps.placement.listNodes().map(async (n) => ({
            name: n.name,
            state: n.live ? n.state : 'down',
            zone: n.zone,
            weight: n.weight,
            users: n.users,
            capacity: report.get(n.name)?.capacity ?? 0,
            leaseSeconds: n.live ? ((await leaseLeft(n.live.leaseId)) ?? null) : null,
            imap: n.imapAddress,
            addresses: n.addresses,
            downReason: n.live ? '' : n.downReason,
          })),
        );
      }
      return json(200, { role: p.role.kind, ...(own !== undefined ? { tenant: own } : {}), nodes, tenants });
    }),

    api('/api/lookup', async (req, p) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      const raw = (q.get('user') ?? '').trim();
      if (raw === '') throw new DomainError('invalid_argument', 'user: give a user (alice@acme.test, or alice with a tenant)', { field: 'user' });
      let tenant: string;
      let local = raw;
      const at = raw.lastIndexOf('@');
      if (at > 0) {
        local = raw.slice(0, at);
        const domain = parseDomain(raw.slice(at + 1), 'user');
        const owner = await deps.directory.domainOwner(domain);
        // A tenant admin learns nothing about domains of other tenants.
        if (owner === undefined || (p.role.kind === 'tenant-admin' && owner !== p.role.tenant)) throw new DomainError('not_found', `user: no tenant of yours has the domain ${domain}`, { field: 'user' });
        tenant = owner;
      } else {
        const given = q.get('tenant') ?? (p.role.kind === 'tenant-admin' ? p.role.tenant : '');
        if (given === '') throw new DomainError('invalid_argument', 'tenant: give the tenant, or the user as user@domain', { field: 'tenant' });
        tenant = parseTenantId(given, 'tenant');
      }
      requireTenantRole(p.role, tenant, ['admin', 'tenant-admin']);
      const { settings } = await deps.directory.requireTenant(tenant);
      const user = parseUserId(local, 'user');
      const { groups } = await deps.directory.groupsOf(tenant, user);
      const shared = await deps.mailboxes.sharedWith(tenant, user, 200, undefined);
      const assignment = deps.placement.cachedAssignment(tenant, user);
      return json(200, {
        tenant,
        user,
        node: assignment ? { name: assignment.node, epoch: assignment.epoch, imap: deps.placement.imapAddressOf(assignment.node) } : null,
        groups: [...groups].sort(),
        shares: shared.items.map(({ record }) => {
          // The explanation `acl explain` gives (ExplainRights): the same code.
          const e = explainAccess(record, { user, groups, settings, placement: deps.placement });
          return {
            mailbox: `${record.owner}/${record.name}`,
            owner: record.owner,
            ownerNode: e.ownerNode || null,
            rights: e.rights,
            granted: e.granted,
            denied: e.denied,
            because: e.entries.filter((x) => x.applies).map((x) => ({ identifier: x.identifier, rights: x.rights, negative: x.negative, reason: x.reason })),
          };
        }),
        more: shared.lastRef !== undefined,
        revision: shared.revision,
      });
    }),

    api('/api/events', async (_req, p) => {
      const max = deps.maxEventStreams ?? 64;
      if (streams >= max) throw new DomainError('resource_exhausted', `events: ${max} event streams are open already; try again later`, { field: 'events' });
      const tenants = p.role.kind === 'tenant-admin' ? [p.role.tenant] : undefined;
      return {
        status: 200,
        headers: { 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' },
        stream: (res, req) => {
          streams++;
          let closed = false;
          let watch: { cancel(): Promise<void> } | undefined;
          const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
          const end = (): void => {
            if (closed) return;
            closed = true;
            streams--;
            clearInterval(ping);
            void watch?.cancel().catch(() => undefined);
            res.end();
          };
          req.on('close', end);
          res.write(': mailshare events\n\n');
          deps.events
            .watch(
              0,
              { kinds: new Set(EVENT_KINDS), tenants },
              (events, revision) => {
                if (closed) return;
                for (const e of events) {
                  res.write(`id: ${e.revision}\nevent: change\ndata: ${JSON.stringify({ revision: e.revision, kind: e.kind, tenant: e.tenant, id: e.id, deleted: e.deleted })}\n\n`);
                }
                if (events.length === 0) res.write(`: progress ${revision}\n\n`);
              },
              (err) => {
                if (!closed) res.write(`event: failed\ndata: ${JSON.stringify({ error: err.message })}\n\n`);
                end();
              },
            )
            .then(
              (w) => {
                watch = w;
                if (closed) void w.cancel().catch(() => undefined);
              },
              () => end(),
            );
        },
      };
    }),
  ];
}
