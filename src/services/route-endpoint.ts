import type http from 'node:http';
import { Metadata } from '@grpc/grpc-js';
import { DomainError } from '../domain/errors.js';
import { parseDomain, parseTenantId, parseUserId } from '../domain/ids.js';
import { servesTenant } from '../domain/role.js';
import type { HttpAnswer, HttpRoute } from '../metrics/http-listener.js';
import type { PlacementStore } from '../store/placement-store.js';
import type { TenantCache } from '../store/tenant-cache.js';
import type { Authenticator } from './auth.js';

export const ROUTE_PROTOCOLS = ['imap', 'pop3', 'lmtp', 'sieve', 'submission', 'doveadm'] as const;
export type RouteProtocol = (typeof ROUTE_PROTOCOLS)[number];

export interface RouteDeps {
  readonly auth: Authenticator;
  readonly placement: PlacementStore;
  readonly tenants: TenantCache;
  readonly log: { warn(obj: object, msg: string): void };
  /** Told of every answer: its status and how long it took (the metrics). */
  readonly observe?: (status: number, seconds: number) => void;
}

const STATUS: Record<string, number> = { invalid_argument: 400, unauthenticated: 401, permission_denied: 403, not_found: 404, unavailable: 503 };

function answer(status: number, value: Record<string, unknown>): HttpAnswer {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', ...(status === 503 ? { 'retry-after': '1' } : {}) }, body: JSON.stringify(status === 503 ? { ...value, retry_after: 1 } : value) };
}

/** host:port (or [v6]:port) → its parts. */
function splitAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port: Number(address.slice(colon + 1)) };
}

/**
 * POST /v1/route: where a user lives, for Dovecot's own proxies (the
 * director's job). `{ "user": "alice@acme.test", "protocol": "imap",
 * "assign": true }` → the tenant, the user, the name the backend knows
 * them by (`destuser`: user@primary domain), the node, its server for the
 * protocol and the assignment's epoch. `assign` (only after the proxy's
 * own passdb accepted the password) creates the assignment when there is
 * none, by bounded-load hashing; everything else is answered from the
 * coordinator's watch-fed copies, without an etcd read. Tokens: proxy,
 * node (its tenants), admin.
 */
export function routeEndpoint(deps: RouteDeps): HttpRoute {
  return {
    method: 'POST',
    path: '/v1/route',
    handle: async (req, body) => {
      const started = performance.now();
      let res: HttpAnswer;
      try {
        res = await route(deps, req, body);
      } catch (err) {
        if (err instanceof DomainError) {
          res = answer(STATUS[err.code] ?? 500, { error: err.message, ...(err.field ? { field: err.field } : {}) });
        } else {
          deps.log.warn({ err: String(err) }, 'route failed');
          res = answer(500, { error: 'internal error' });
        }
      }
      deps.observe?.(res.status, (performance.now() - started) / 1000);
      return res;
    },
  };
}

async function route(deps: RouteDeps, req: http.IncomingMessage, body: Buffer): Promise<HttpAnswer> {
  const md = new Metadata();
  if (typeof req.headers.authorization === 'string') md.set('authorization', req.headers.authorization);
  const principal = await deps.auth.authenticate(md);
  const role = principal.role;
  if (role.kind !== 'proxy' && role.kind !== 'node' && role.kind !== 'admin') throw new DomainError('permission_denied', `token: a ${role.kind} token cannot route users; use a proxy token (mailshare token create --role proxy)`, { field: 'token' });
  let q: Record<string, unknown>;
  try {
    q = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new DomainError('invalid_argument', 'body: not JSON', { field: 'body' });
  }
  if (q === null || typeof q !== 'object' || Array.isArray(q)) throw new DomainError('invalid_argument', 'body: must be a JSON object', { field: 'body' });
  const name = q.user;
  if (typeof name !== 'string' || name === '' || name.length > 320) throw new DomainError('invalid_argument', 'user: must be a login name (user@domain)', { field: 'user' });
  const protocol = q.protocol ?? 'imap';
  if (typeof protocol !== 'string' || !(ROUTE_PROTOCOLS as readonly string[]).includes(protocol)) throw new DomainError('invalid_argument', `protocol: must be one of ${ROUTE_PROTOCOLS.join(', ')}`, { field: 'protocol' });
  if (q.assign !== undefined && typeof q.assign !== 'boolean') throw new DomainError('invalid_argument', 'assign: must be true or false', { field: 'assign' });
  if (q.client_ip !== undefined && (typeof q.client_ip !== 'string' || q.client_ip.length > 64)) throw new DomainError('invalid_argument', 'client_ip: must be an address', { field: 'client_ip' });

  // user@domain: the tenant that owns the domain; a bare name: the tenant given (single-tenant proxies).
  const at = name.lastIndexOf('@');
  let tenant: string;
  let local = name;
  if (at > 0) {
    const domain = parseDomain(name.slice(at + 1).toLowerCase(), 'user');
    const owner = deps.tenants.tenantOfDomain(domain);
    if (owner === undefined) throw new DomainError('not_found', `user: no tenant has the domain ${domain}`, { field: 'user' });
    tenant = owner;
    local = name.slice(0, at);
  } else {
    if (typeof q.tenant !== 'string') throw new DomainError('not_found', 'user: has no domain (give user@domain, or "tenant")', { field: 'user' });
    tenant = parseTenantId(q.tenant, 'tenant');
    if (!deps.tenants.tenant(tenant).exists) throw new DomainError('not_found', `tenant: "${tenant}" does not exist`, { field: 'tenant' });
  }
  if (!servesTenant(role, tenant)) throw new DomainError('permission_denied', `token: ${role.kind} token may not route users of tenant ${tenant}`, { field: 'token' });
  const user = parseUserId(local, 'user');
  // Between nodes: the old one is ending the user's sessions; the login waits for the new one.
  if (deps.placement.isMoving(tenant, user)) throw new DomainError('unavailable', `user: ${user} of ${tenant} is moving to another node; try again in a moment`, { field: 'user' });

  let a = deps.placement.cachedAssignment(tenant, user);
  if (a && !deps.placement.isLive(a.node)) a = undefined;
  if (!a) {
    if (q.assign !== true) throw new DomainError('not_found', `user: ${user} of ${tenant} is not assigned to any node`, { field: 'user' });
    const located = (await deps.placement.locate(tenant, user, true)).assignment;
    if (!located) throw new DomainError('unavailable', 'no active node is registered');
    a = { node: located.node, epoch: located.epoch };
  }
  const address = deps.placement.addressOf(a.node, protocol);
  if (!address) throw new DomainError('unavailable', `node ${a.node} has no ${protocol} server registered`);
  const primary = deps.tenants.tenant(tenant).primary;
  return answer(200, { tenant, user, destuser: primary === undefined ? user : `${user}@${primary}`, node: a.node, ...splitAddress(address), epoch: a.epoch });
}
