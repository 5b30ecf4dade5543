import { ResponseStream } from '../../src/gateway/response-stream.js';
import { startTcpProxy } from './tcp-proxy.js';

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
  /** What was sent to the server, with when (Date.now()), in order. */
  readonly sent: Array<{ at: number; text: string }>;
  /**
   * Holds the next data to the server that matches `pattern` (and what
   * follows it on that connection) until release(); `reached` settles when
   * it is held.
   */
  hold(pattern: RegExp): { reached: Promise<void>; release(): void };
  close(): Promise<void>;
}

export async function startImapTap(target: string): Promise<ImapTap> {
  const tags: string[] = [];
  const sent: Array<{ at: number; text: string }> = [];
  let held: { pattern: RegExp; reached: () => void; released: Promise<void> } | undefined;
  const gate = (chunk: Buffer): Promise<void> | undefined => {
    sent.push({ at: Date.now(), text: chunk.toString('latin1') });
    if (!held || !held.pattern.test(chunk.toString('latin1'))) return undefined;
    const h = held;
    held = undefined;
    h.reached();
    return h.released;
  };
  const proxy = await startTcpProxy(target, () => {
    const parser = new ResponseStream({
      classify: (line) => (line.startsWith('* ') || line.startsWith('+') ? 'drop' : 'buffer'),
      forward: () => undefined,
      response: (pieces) => {
        const first = pieces[0] && 'text' in pieces[0] ? pieces[0].text : '';
        tags.push(first.slice(0, first.indexOf(' ')));
      },
    });
    return (chunk) => parser.push(chunk);
  }, gate);
  const hold = (pattern: RegExp) => {
    let reached!: () => void;
    let release!: () => void;
    const r = new Promise<void>((res) => (reached = res));
    const released = new Promise<void>((res) => (release = res));
    held = { pattern, reached, released };
    return { reached: r, release };
  };
  return { address: proxy.address, tags, sent, hold, close: () => proxy.close() };
}
