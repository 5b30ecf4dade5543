import net from 'node:net';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { message } from '../harness/imap.js';

/**
 * COMPRESS=DEFLATE (RFC 4978) through the gateway, with a client that
 * speaks raw deflate both ways after the command's OK: commands, a large
 * APPEND literal, FETCH back, pipelined commands sent right behind COMPRESS,
 * and input that inflates far beyond the command limit.
 */
const USERS = { alice: 'alice-pw' };
let cluster: GatewayCluster;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1'], users: USERS, tenant: true });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

/** A client that turns compression on after login; `send`/`until` speak plain text on top of it. */
async function compressedClient(address: string, pipelined = ''): Promise<{ send(s: string): void; until(re: RegExp, ms?: number): Promise<string>; closed: Promise<void>; raw: net.Socket }> {
  const [host, port] = address.split(':');
  const raw = net.connect(Number(port), host);
  let text = '';
  let wake: (() => void) | undefined;
  let plain = true;
  const inflate = zlib.createInflateRaw();
  const deflate = zlib.createDeflateRaw();
  deflate.on('data', (c: Buffer) => raw.write(c));
  inflate.on('data', (c: Buffer) => {
    text += c.toString('latin1');
    wake?.();
  });
  raw.on('data', (c: Buffer) => {
    if (plain) {
      text += c.toString('latin1');
      wake?.();
    } else {
      inflate.write(c);
    }
  });
  const closed = new Promise<void>((r) => raw.once('close', () => r()));
  const until = async (re: RegExp, ms = 10_000): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(text);
      if (m) {
        const out = text.slice(0, m.index + m[0].length);
        text = text.slice(m.index + m[0].length);
        return out;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; have ${JSON.stringify(text.slice(-300))}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
  };
  await until(/^\* OK[^\r]*\r\n/m);
  raw.write('l LOGIN alice alice-pw\r\n');
  expect(await until(/^l (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^l OK/m);
  raw.write('c COMPRESS DEFLATE\r\n');
  // Commands written right behind COMPRESS, already compressed (a client that does not wait for the OK).
  if (pipelined) {
    const early = zlib.deflateRawSync(Buffer.from(pipelined, 'latin1'), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    raw.write(early);
  }
  const ok = await until(/^c (OK|NO|BAD)[^\r]*\r\n/m);
  expect(ok).toMatch(/^c OK/m);
  plain = false;
  // Whatever arrived after the OK in the same chunk was compressed already.
  const rest = Buffer.from(text, 'latin1');
  text = '';
  if (rest.length > 0) inflate.write(rest);
  const send = (s: string): void => {
    deflate.write(Buffer.from(s, 'latin1'));
    deflate.flush(zlib.constants.Z_SYNC_FLUSH);
  };
  return { send, until, closed, raw };
}

describe('COMPRESS=DEFLATE through the gateway', () => {
  it('is offered after login; commands, a large APPEND and its FETCH go compressed both ways', async () => {
    const c = await compressedClient(cluster.gateways[0]!.address());
    c.send('k CAPABILITY\r\n');
    expect(await c.until(/^k OK[^\r]*\r\n/m)).toMatch(/^\* CAPABILITY .*\bCOMPRESS=DEFLATE\b/m);
    const big = message('big one', `${'0123456789abcdef'.repeat(64)}\r\n`.repeat(200));
    c.send(`a APPEND INBOX {${big.length}+}\r\n${big}\r\n`);
    expect(await c.until(/^a (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^a OK/m);
    c.send('s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n');
    const fetched = await c.until(/^f (OK|NO|BAD)[^\r]*\r\n/m);
    expect(fetched).toContain(`BODY[] {${big.length}}\r\n${big})`);
    // Megabytes asked for at once: output waits for the deflater now and then, and goes on.
    c.send(Array.from({ length: 30 }, (_, i) => `g${i} FETCH 1 BODY.PEEK[]\r\n`).join(''));
    const many = await c.until(/^g29 (OK|NO|BAD)[^\r]*\r\n/m, 20_000);
    expect(many.split(`BODY[] {${big.length}}`).length - 1).toBe(30);
    c.send('d COMPRESS DEFLATE\r\n');
    expect(await c.until(/^d (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^d NO \[COMPRESSIONACTIVE\]/m);
    c.send('z LOGOUT\r\n');
    expect(await c.until(/^z OK[^\r]*\r\n/m)).toMatch(/^\* BYE/m);
    await c.closed;
  });

  it('takes commands the client sent right behind COMPRESS, compressed', async () => {
    const c = await compressedClient(cluster.gateways[0]!.address(), 'p1 NOOP\r\np2 SELECT INBOX\r\n');
    expect(await c.until(/^p2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^p1 OK[^\r]*\r\n[\s\S]*^p2 OK/m);
    c.raw.destroy();
  });

  it('counts inflated bytes against the limits: 20 MB of one line costs a BAD, the session goes on', async () => {
    const c = await compressedClient(cluster.gateways[0]!.address());
    c.send(`x1 NOOP ${'a'.repeat(20 << 20)}\r\n`);
    expect(await c.until(/^x1 (OK|NO|BAD)[^\r]*\r\n/m, 30_000)).toMatch(/^x1 BAD/m);
    c.send('x2 NOOP\r\n');
    expect(await c.until(/^x2 (OK|NO|BAD)[^\r]*\r\n/m)).toMatch(/^x2 OK/m);
    c.raw.destroy();
  }, 60_000);

  it('ends a session whose compressed stream is broken', async () => {
    const c = await compressedClient(cluster.gateways[0]!.address());
    c.raw.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    await c.closed;
  });
});
