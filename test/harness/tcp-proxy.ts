import net from 'node:net';

/**
 * A TCP proxy on 127.0.0.1:0 in front of `target`, to cut a connection in
 * tests. blackhole() keeps sockets open but stops forwarding anything (a
 * network partition: the peer sees silence, not an error); restore() lets
 * traffic through again; close() ends everything.
 */
export interface TcpProxy {
  readonly address: string;
  blackhole(): void;
  restore(): void;
  /** Destroys every open connection (the peers see a reset); new ones are accepted. */
  reset(): void;
  /** What the target sends reaches the client this much later (ms, in order; 0: at once). */
  delay(ms: number): void;
  close(): Promise<void>;
}

/**
 * `watch`, when given, is called for each connection and sees what the target sends on it;
 * `gate`, when given, sees what is sent to the target and may hold it (in order) until its promise settles.
 */
export async function startTcpProxy(target: string, watch?: () => (fromTarget: Buffer) => void, gate?: (toTarget: Buffer) => Promise<void> | undefined): Promise<TcpProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  let dropping = false;
  let delayMs = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    sockets.add(client);
    sockets.add(upstream);
    const seen = watch?.();
    const forward = (from: net.Socket, to: net.Socket, see?: (chunk: Buffer) => void) =>
      from.on('data', (chunk: Buffer) => {
        if (dropping) return;
        see?.(chunk);
        to.write(chunk);
      });
    if (gate) {
      let chain = Promise.resolve();
      client.on('data', (chunk: Buffer) => {
        chain = chain.then(() => gate(chunk)).then(() => {
          if (!dropping) upstream.write(chunk);
        });
      });
    } else forward(client, upstream);
    // From the target: at once, or each chunk `delayMs` after it came (never reordered).
    let late = Promise.resolve();
    let waiting = 0;
    upstream.on('data', (chunk: Buffer) => {
      if (dropping) return;
      seen?.(chunk);
      if (delayMs === 0 && waiting === 0) {
        client.write(chunk);
        return;
      }
      const due = Date.now() + delayMs;
      waiting++;
      late = late
        .then(() => new Promise<void>((r) => setTimeout(r, Math.max(0, due - Date.now()))))
        .then(() => {
          waiting--;
          client.write(chunk);
        });
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${addr.port}`,
    blackhole: () => {
      dropping = true;
    },
    restore: () => {
      dropping = false;
    },
    reset: () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    delay: (ms) => {
      delayMs = ms;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
