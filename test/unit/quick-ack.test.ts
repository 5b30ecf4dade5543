import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { quickAckAvailable, quickAcker } from '../../src/gateway/quick-ack.js';

/** The native helper behind the gateway's TCP_QUICKACK (src/native/tcp-quickack.c), on real sockets. */
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function pair(listenOn: number | string): Promise<net.Socket> {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  await new Promise<void>((r) => (typeof listenOn === 'number' ? server.listen(listenOn, '127.0.0.1', r) : server.listen(listenOn, r)));
  const a = server.address();
  const client = typeof a === 'string' ? net.connect(a) : net.connect((a as net.AddressInfo).port, '127.0.0.1');
  const s = await accepted;
  cleanups.push(() => {
    client.destroy();
    s.destroy();
    server.close();
  });
  return s;
}

describe('TCP_QUICKACK helper', () => {
  it('is built (npm run build compiles it; without it Nagle-on clients wait 40 ms per APPEND literal)', () => {
    expect(quickAckAvailable).toBe(true);
  });

  it('sets the flag on a TCP socket, every time it is asked', async () => {
    const s = await pair(0);
    const ack = quickAcker(s);
    expect(ack()).toBe(true);
    expect(ack()).toBe(true);
    s.destroy();
    expect(ack()).toBe(false);
  });

  it('gives up on a socket that is not TCP', async () => {
    const s = await pair(path.join(os.tmpdir(), `mailshare-quickack-${process.pid}.sock`));
    const ack = quickAcker(s);
    expect(ack()).toBe(false);
    expect(ack()).toBe(false);
  });
});
