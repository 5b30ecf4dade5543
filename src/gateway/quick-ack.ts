import { createRequire } from 'node:module';
import type net from 'node:net';

/**
 * TCP_QUICKACK for client sockets (see src/native/tcp-quickack.c for why):
 * without it, a client that leaves Nagle on waits ~40 ms per APPEND literal.
 * The helper is built by `npm run build` into build/native/; where it could
 * not be built (no C compiler), `available` is false and the gateway logs it.
 */
interface Helper {
  setQuickAck(fd: number): boolean;
}

function load(): Helper | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    // The same path from src/gateway (tests) and dist/gateway (the binary).
    return createRequire(import.meta.url)('../../build/native/tcp-quickack.node') as Helper;
  } catch {
    return undefined;
  }
}

const helper = load();

export const quickAckAvailable = helper !== undefined;

/**
 * Returns a function that asks the kernel to ACK this socket's input at
 * once; call it after each write. It returns whether the flag was set (not
 * on a socket that is not TCP, e.g. a Unix socket: it stops trying there).
 */
export function quickAcker(socket: net.Socket): () => boolean {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!helper || typeof fd !== 'number' || fd < 0) return () => false;
  let working = true;
  return () => {
    if (working && !socket.destroyed) working = helper.setQuickAck(fd);
    return working && !socket.destroyed;
  };
}
