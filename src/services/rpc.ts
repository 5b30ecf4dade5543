import type { Metadata, ServerUnaryCall, sendUnaryData, handleUnaryCall } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DomainError } from '../domain/errors.js';
import { type RoleKind, authorize } from '../domain/role.js';
import type { Authenticator, Principal } from './auth.js';
import { toGrpcError } from './status.js';

export interface CallContext {
  readonly principal: Principal;
  /** Aborts when the client cancels or the call's deadline passes. */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

export interface RpcDeps {
  readonly auth: Authenticator;
  readonly log: Logger;
  /** Aborts when the coordinator starts shutting down: long-lived streams end so clients move on. */
  readonly stopping?: AbortSignal;
}

/** Ends a long-lived stream with UNAVAILABLE when the coordinator shuts down. */
export function endOnShutdown(deps: RpcDeps, call: { emit(ev: 'error', err: unknown): boolean; on(ev: 'cancelled', fn: () => void): unknown }, onEnd?: () => void): void {
  const signal = deps.stopping;
  if (!signal) return;
  const stop = (): void => {
    onEnd?.();
    call.emit('error', { code: 14, details: 'coordinator shutting down; reconnect to another one' });
  };
  if (signal.aborted) return stop();
  signal.addEventListener('abort', stop, { once: true });
  call.on('cancelled', () => signal.removeEventListener('abort', stop));
}

/** Every role; a method open to any authenticated caller. */
export const ANY_ROLE: readonly RoleKind[] = ['admin', 'tenant-admin', 'node'];

/**
 * Wraps a unary handler: authenticates the bearer token, checks the role
 * kind (finer checks, such as the tenant of a tenant-admin, are the
 * handler's), passes down a cancellation signal, and maps every failure
 * through the one status table.
 */
export function unary<Req, Res>(
  deps: RpcDeps,
  method: string,
  roles: readonly RoleKind[],
  fn: (req: Req, ctx: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  // One child logger per method, not per call (unary calls are the hot path).
  const log = deps.log.child({ method });
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const controller = new AbortController();
    // grpc-js says 'cancelled' whenever the stream closes, answered or not: only a call still running is.
    let answered = false;
    call.on('cancelled', () => {
      if (!answered) controller.abort(new DomainError('cancelled', 'call cancelled'));
    });
    const started = performance.now();
    deps.auth
      .authenticate(call.metadata)
      .then((principal) => {
        authorize(principal.role, { roles });
        return fn(call.request, { principal, signal: controller.signal, log });
      })
      .then(
        (res) => {
          answered = true;
          log.debug({ ms: +(performance.now() - started).toFixed(2) }, 'ok');
          callback(null, res);
        },
        (err: unknown) => {
          answered = true;
          const e = toGrpcError(err, log);
          log.debug({ code: e.code, ms: +(performance.now() - started).toFixed(2) }, e.details);
          callback(e);
        },
      );
  };
}

/** Authenticates a streaming call before handing it to the wrapped handler. */
export function authenticated<C extends { metadata: Metadata; emit(ev: 'error', err: unknown): boolean }>(
  deps: RpcDeps,
  method: string,
  roles: readonly RoleKind[],
  handler: (call: C, principal: Principal) => void,
): (call: C) => void {
  return (call: C) => {
    deps.auth
      .authenticate(call.metadata)
      .then((principal) => {
        authorize(principal.role, { roles });
        return principal;
      })
      .then(
        (principal) => handler(call, principal),
        (err: unknown) => call.emit('error', toGrpcError(err, deps.log.child({ method }))),
      );
  };
}
