import net from 'node:net';
import { ResponseStream } from '../../src/gateway/response-stream.js';

/**
 * A TCP proxy in front of an IMAP server that counts the tagged responses
 * the server sends (RFC 3501 §7.1: one per command it read, BAD ones
 * included): how many commands reached the server, whatever bytes carried
 * them. Registered as a node's backend address, it sees every connection
 * the gateways open to that node.
 */
export interface ImapTap {
  readonly address: string;
  /** Tags of the tagged responses seen so far, in order. */
  readonly tags: string[];
  close(): Promise<void>;
}

export async function startImapTap(target: string): Promise<ImapTap> {
  const at = target.lastIndexOf(':');
  const tags: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.slice(at + 1)), target.slice(0, at));
    sockets.add(client).add(upstream);
    const parser = new ResponseStream({
      classify: (line) => (line.startsWith('* ') || line.startsWith('+') ? 'drop' : 'buffer'),
      forward: () => undefined,
      response: (pieces) => {
        const first = pieces[0] && 'text' in pieces[0] ? pieces[0].text : '';
        tags.push(first.slice(0, first.indexOf(' ')));
      },
    });
    client.on('data', (c: Buffer) => upstream.write(c));
    upstream.on('data', (c: Buffer) => {
      parser.push(c);
      client.write(c);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    tags,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
