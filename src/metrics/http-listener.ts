import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { DomainError } from '../domain/errors.js';
import type { Registry } from './registry.js';

/**
 * What a route answers: status, headers, and a body (a string is sent as
 * UTF-8), or `stream`, which is handed the response once the head is out
 * (Server-Sent Events) and ends it itself.
 */
export type HttpAnswer =
  | { status: number; headers?: Record<string, string>; body: string | Buffer }
  | { status: number; headers?: Record<string, string>; stream: (res: http.ServerResponse, req: http.IncomingMessage) => void };

export interface HttpRoute {
  method: 'GET' | 'POST';
  path: string;
  /** `body` is the request body (POST only, at most `maxBodyBytes`). */
  handle(req: http.IncomingMessage, body: Buffer): Promise<HttpAnswer> | HttpAnswer;
}

export interface HttpListenerOptions {
  /** host:port; port 0 picks a free port. */
  listen: string;
  /** HTTPS with this certificate and key; with `clientCa`, client certificates are required. */
  tls?: { cert: string; key: string; clientCa?: string | undefined } | undefined;
  routes: readonly HttpRoute[];
  /** Request bodies larger than this are refused with 413; default 64 KiB. */
  maxBodyBytes?: number;
  /** Where a handler that threw is reported (the client sees a generic 500). */
  onError?: (err: unknown, path: string) => void;
}

/**
 * A small HTTP/1.1 listener for what is not gRPC: `/metrics` for
 * Prometheus, and the coordinator's other pages. Exact paths only, bounded
 * bodies and header times, keep-alive; closing drops open connections.
 */
export class HttpListener {
  private readonly server: http.Server;
  private readonly routes = new Map<string, HttpRoute>();
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: HttpListenerOptions) {
    for (const r of opts.routes) this.routes.set(`${r.method} ${r.path}`, r);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.serve(req, res);
    if (opts.tls) {
      const read = (file: string, field: string): Buffer => {
        try {
          return readFileSync(file);
        } catch (err) {
          throw new DomainError('invalid_argument', `${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { field });
        }
      };
      const ca = opts.tls.clientCa ? read(opts.tls.clientCa, 'tls.clientCa') : undefined;
      this.server = https.createServer({ cert: read(opts.tls.cert, 'tls.cert'), key: read(opts.tls.key, 'tls.key'), minVersion: 'TLSv1.2', ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) }, handler);
    } else {
      this.server = http.createServer(handler);
    }
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    this.server.keepAliveTimeout = 60_000;
    this.server.on(opts.tls ? 'secureConnection' : 'connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  /** Binds; returns host:port as bound. */
  async start(): Promise<string> {
    const at = this.opts.listen;
    const colon = at.lastIndexOf(':');
    const host = at.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => reject(new DomainError('unavailable', `http-listen: cannot listen on ${at}: ${err.message}`, { field: 'http-listen' }));
      this.server.once('error', fail);
      this.server.listen(Number(at.slice(colon + 1)), host, () => {
        this.server.off('error', fail);
        resolve();
      });
    });
    return this.address();
  }

  get listening(): boolean {
    return this.server.listening;
  }

  address(): string {
    const a = this.server.address() as net.AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const route = this.routes.get(`${req.method} ${url.pathname}`);
    if (!route) {
      const known = [...this.routes.values()].some((r) => r.path === url.pathname);
      req.resume();
      return send(res, known ? { status: 405, body: 'method not allowed\n' } : { status: 404, body: 'not found\n' });
    }
    const max = this.opts.maxBodyBytes ?? 64 * 1024;
    const body = await readBody(req, max);
    if (body === 'aborted') return void res.destroy();
    if (body === 'too large') {
      res.setHeader('connection', 'close');
      return send(res, { status: 413, body: `request body larger than ${max} bytes\n` });
    }
    let answer: HttpAnswer;
    try {
      answer = await route.handle(req, body);
    } catch (err) {
      this.opts.onError?.(err, url.pathname);
      answer = { status: 500, body: 'internal error\n' };
    }
    if ('stream' in answer) {
      if (res.destroyed) return;
      res.writeHead(answer.status, { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...answer.headers });
      answer.stream(res, req);
      return;
    }
    send(res, answer);
  }
}

/**
 * The request body, at most `max` bytes, read with events (a route is called for every proxy
 * login: an async iterator per request costs more than the rest of the request's reading).
 */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer | 'too large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (v: Buffer | 'too large' | 'aborted'): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onError);
      resolve(v);
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > max) {
        // The rest is not read: the connection closes after the answer.
        req.pause();
        done('too large');
      } else chunks.push(c);
    };
    const onEnd = (): void => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    const onError = (): void => done('aborted');
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onError);
  });
}

function send(res: http.ServerResponse, a: { status: number; headers?: Record<string, string>; body: string | Buffer }): void {
  if (res.destroyed) return;
  const body = typeof a.body === 'string' ? Buffer.from(a.body, 'utf8') : a.body;
  res.writeHead(a.status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...a.headers, 'content-length': String(body.length) });
  res.end(body);
}

/** The Prometheus scrape route of a registry (text exposition format 0.0.4). */
export function metricsRoute(registry: Registry): HttpRoute {
  return {
    method: 'GET',
    path: '/metrics',
    handle: async () => ({ status: 200, headers: { 'content-type': registry.contentType }, body: await registry.metrics() }),
  };
}
