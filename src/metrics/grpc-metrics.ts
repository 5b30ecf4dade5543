import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from './registry.js';

/** "/mailshare.v1.AclService/GetAcl" → service "mailshare.v1.AclService", method "GetAcl". */
function splitPath(path: string): { service: string; method: string } {
  const slash = path.lastIndexOf('/');
  return { service: path.slice(1, slash), method: path.slice(slash + 1) };
}

function callType(def: { requestStream: boolean; responseStream: boolean }): string {
  if (def.requestStream) return def.responseStream ? 'bidi_stream' : 'client_stream';
  return def.responseStream ? 'server_stream' : 'unary';
}

const codeName = (code: number): string => grpc.status[code] ?? String(code);

/**
 * A server interceptor that measures every call the coordinator serves:
 * unary durations by service, method and status code, every finished call
 * (streams too) counted, and the streams open now (one watch and one
 * keepalive stream per agent is normal).
 */
export function rpcServerMetrics(registry: Registry): grpc.ServerInterceptor {
  const duration = new Histogram({
    name: 'mailshare_rpc_duration_seconds',
    help: 'Time to answer a unary gRPC call, by service, method and status code.',
    labelNames: ['service', 'method', 'code'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const handled = new Counter({
    name: 'mailshare_rpc_handled_total',
    help: 'gRPC calls finished (unary and streaming), by service, method, call type and status code.',
    labelNames: ['service', 'method', 'type', 'code'],
    registers: [registry],
  });
  const open = new Gauge({
    name: 'mailshare_rpc_streams_open',
    help: 'Streaming gRPC calls open now, by service and method.',
    labelNames: ['service', 'method'],
    registers: [registry],
  });
  return (def, call) => {
    const { service, method } = splitPath(def.path);
    const type = callType(def);
    const started = performance.now();
    let finished = false;
    if (type !== 'unary') open.inc({ service, method });
    const finish = (code: number): void => {
      if (finished) return;
      finished = true;
      const name = codeName(code);
      handled.inc({ service, method, type, code: name });
      if (type === 'unary') duration.observe({ service, method, code: name }, (performance.now() - started) / 1000);
      else open.dec({ service, method });
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => finish(grpc.status.CANCELLED) }),
      sendStatus: (status, next) => {
        finish(status.code);
        next(status);
      },
    });
  };
}

/**
 * A client interceptor for the etcd connection: request durations by
 * method (KV/Range, KV/Txn, Lease/LeaseGrant …) and failed requests by
 * method and code. Streams (Watch, LeaseKeepAlive) count their failures only.
 * `onRevision` hears the revision in the header of every response.
 */
export function etcdClientMetrics(registry: Registry, onRevision?: (revision: number) => void): grpc.Interceptor {
  const duration = new Histogram({
    name: 'mailshare_etcd_request_duration_seconds',
    help: 'Time of a unary etcd request, by etcd method.',
    labelNames: ['method'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const errors = new Counter({
    name: 'mailshare_etcd_request_errors_total',
    help: 'etcd requests and streams that ended in an error, by etcd method and gRPC status code.',
    labelNames: ['method', 'code'],
    registers: [registry],
  });
  return (options, nextCall) => {
    const def = options.method_definition;
    const { service, method: name } = splitPath(def.path);
    const method = `${service.slice(service.lastIndexOf('.') + 1)}/${name}`;
    const unary = !def.requestStream && !def.responseStream;
    const started = performance.now();
    return new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        next(metadata, {
          // Every etcd response carries the store's revision when it was answered: the head as seen here.
          onReceiveMessage: (message: { header?: { revision?: string | number } } | undefined, nextMessage) => {
            const rev = message?.header?.revision;
            if (onRevision && rev !== undefined) onRevision(Number(rev));
            nextMessage(message);
          },
          onReceiveStatus: (status, nextStatus) => {
            if (unary) duration.observe({ method }, (performance.now() - started) / 1000);
            // A stream the client ends itself (a cancelled watch) is not an etcd error.
            if (status.code !== grpc.status.OK && !(status.code === grpc.status.CANCELLED && !unary)) errors.inc({ method, code: codeName(status.code) });
            nextStatus(status);
          },
        });
      },
    });
  };
}
