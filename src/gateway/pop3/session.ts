import type net from 'node:net';
import { LineSplitter } from '../core/lines.js';
import { pop3Capabilities } from './prelogin.js';

/** Longest command line after login (RFC 2449 §4: 255 octets; some slack). */
const LINE_LIMIT = 1024;
/** Commands sent upstream whose responses have not come back, at most (reading pauses beyond). */
const MAX_PENDING = 256;
/** Longest status line accepted from the server. */
const STATUS_LIMIT = 64 * 1024;

type Expect = { readonly kind: 'single' | 'multi' } | { readonly kind: 'local'; readonly text: string };

/**
 * The TRANSACTION state's commands (RFC 1939 §5, RFC 2449 CAPA) and how
 * each is answered: multi-line (+OK, lines, ".") or one line. A command's
 * arguments are message numbers; `multiWithout` is multi-line only
 * without one.
 */
const COMMANDS: Record<string, { args: [number, number]; multi: boolean; multiWithout?: boolean }> = {
  STAT: { args: [0, 0], multi: false },
  LIST: { args: [0, 1], multi: false, multiWithout: true },
  UIDL: { args: [0, 1], multi: false, multiWithout: true },
  RETR: { args: [1, 1], multi: true },
  TOP: { args: [2, 2], multi: true },
  DELE: { args: [1, 1], multi: false },
  NOOP: { args: [0, 0], multi: false },
  RSET: { args: [0, 0], multi: false },
  QUIT: { args: [0, 0], multi: false },
};

/**
 * A logged-in POP3 session relayed to the user's home Dovecot. Every
 * command is parsed and rebuilt (keyword and numeric arguments checked);
 * anything else is answered here, in order with the server's responses,
 * which are read to know where each ends. POP3 has no shared namespace:
 * the session is the user's own maildrop. `bye` ends it (a move, lease
 * loss): the server connection is closed first, so nothing more reaches
 * that node, and deletions not yet committed by QUIT are not applied.
 */
export class Pop3Session {
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private readonly lines = new LineSplitter(LINE_LIMIT);
  private readonly expect: Expect[] = [];
  private readonly queued: Array<string | 'too-long'> = [];
  private quitting = false;
  private ended = false;
  // Reading the server's responses: the status line so far, or the multi-line body's last bytes.
  private status = '';
  private statusLen = 0;
  private inBody = false;
  private tail = Buffer.alloc(0);

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: net.Socket,
    rest: Buffer,
    idleTimeoutMs: number,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
    client.on('data', (chunk: Buffer) => this.fromClient(chunk));
    client.once('close', () => this.finish());
    client.on('drain', () => upstream.resume());
    upstream.on('data', (chunk: Buffer) => this.fromServer(chunk));
    upstream.on('drain', () => this.pump());
    upstream.once('close', () => {
      // After QUIT (or when the server ends the session) the client is let go once it has what came.
      if (!client.destroyed) client.end();
      this.finish();
    });
    upstream.on('error', () => upstream.destroy());
    client.setTimeout(idleTimeoutMs, () => this.bye('Disconnected for inactivity.'));
    upstream.resume();
    client.resume();
    if (rest.length > 0) this.fromClient(rest);
  }

  /** Ends the session at once: the server connection first. */
  bye(reason: string): void {
    if (this.ended) return;
    this.upstream.destroy();
    if (!this.client.destroyed) this.client.end(`-ERR [SYS/TEMP] ${reason.replace(/[^\x20-\x7e]/g, '')}\r\n`);
    this.finish();
  }

  /** Owners' moves concern shared folders, which POP3 does not have. */
  ownerMoved(): void {}

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.upstream.destroy();
    this.resolveDone();
  }

  private fromClient(chunk: Buffer): void {
    if (this.quitting || this.ended) return;
    this.lines.feed(chunk, this.queued);
    this.pump();
  }

  /** Runs queued commands while the server keeps up. */
  private pump(): void {
    while (this.queued.length > 0 && !this.ended && !this.quitting) {
      if (this.pendingUpstream() >= MAX_PENDING || this.upstream.writableNeedDrain) {
        this.client.pause();
        return;
      }
      const line = this.queued.shift()!;
      if (line === 'too-long') {
        this.local('-ERR Input line too long.\r\n');
        continue;
      }
      this.command(line);
    }
    if (!this.ended && !this.quitting) this.client.resume();
  }

  private command(line: string): void {
    const words = line.split(' ');
    const keyword = words[0]!.toUpperCase();
    const args = words.slice(1);
    if (keyword === 'CAPA' && args.length === 0) {
      this.local(`+OK\r\n${pop3Capabilities({ stls: false, loggedIn: true }).join('\r\n')}\r\n.\r\n`);
      return;
    }
    const spec = COMMANDS[keyword];
    if (!spec) {
      this.local('-ERR Unknown command.\r\n');
      return;
    }
    if (args.length < spec.args[0] || args.length > spec.args[1] || !args.every((a) => /^\d{1,10}$/.test(a))) {
      this.local(`-ERR Invalid arguments for ${keyword}.\r\n`);
      return;
    }
    // Rebuilt from the parsed values: the keyword in capitals, numbers without leading zeros.
    const rebuilt = [keyword, ...args.map((a) => String(Number(a)))].join(' ');
    const multi = spec.multi || (spec.multiWithout === true && args.length === 0);
    this.expect.push({ kind: multi ? 'multi' : 'single' });
    this.upstream.write(`${rebuilt}\r\n`, 'latin1');
    if (keyword === 'QUIT') {
      // Nothing after QUIT is read: the server enters its UPDATE state and closes.
      this.quitting = true;
      this.client.pause();
    }
  }

  private pendingUpstream(): number {
    let n = 0;
    for (const e of this.expect) if (e.kind !== 'local') n++;
    return n;
  }

  /** An answer of the gateway's own: at once, or after the server's responses still due. */
  private local(text: string): void {
    if (this.expect.length === 0) this.send(Buffer.from(text, 'latin1'));
    else this.expect.push({ kind: 'local', text });
  }

  private send(data: Buffer): void {
    if (this.client.destroyed) return;
    if (!this.client.write(data)) this.upstream.pause();
  }

  /** The server's bytes, relayed as they are; scanned for where each response ends. */
  private fromServer(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const head = this.expect[0];
      if (!head || head.kind === 'local') {
        // Nothing due (a server's own words before it closes): relayed.
        this.send(chunk.subarray(pos));
        return;
      }
      if (!this.inBody) {
        const eol = chunk.indexOf(10, pos);
        const end = eol < 0 ? chunk.length : eol + 1;
        if (this.status.length < 3) this.status += chunk.toString('latin1', pos, Math.min(end, pos + 3 - this.status.length));
        this.statusLen += end - pos;
        if (this.statusLen > STATUS_LIMIT) return this.bye('the server sent a malformed response');
        this.send(chunk.subarray(pos, end));
        pos = end;
        if (eol < 0) continue;
        const ok = this.status === '+OK';
        this.status = '';
        this.statusLen = 0;
        if (head.kind === 'multi' && ok) {
          this.inBody = true;
          // The status line's CRLF counts: ".\r\n" right after it ends an empty listing.
          this.tail = Buffer.from('\r\n');
        } else this.responseDone();
        continue;
      }
      // In a multi-line body: it ends at CRLF "." CRLF, perhaps split between chunks.
      const joined = Buffer.concat([this.tail, chunk.subarray(pos, Math.min(chunk.length, pos + 5))]);
      const early = joined.indexOf('\r\n.\r\n');
      let endAt: number;
      if (early >= 0) endAt = pos + early + 5 - this.tail.length;
      else {
        const at = chunk.indexOf('\r\n.\r\n', pos);
        endAt = at < 0 ? -1 : at + 5;
      }
      if (endAt < 0) {
        this.send(chunk.subarray(pos));
        const rest = chunk.length - pos;
        this.tail = rest >= 4 ? Buffer.from(chunk.subarray(chunk.length - 4)) : Buffer.concat([this.tail, chunk.subarray(pos)]).subarray(-4);
        return;
      }
      this.send(chunk.subarray(pos, endAt));
      pos = endAt;
      this.inBody = false;
      this.responseDone();
    }
  }

  private responseDone(): void {
    this.expect.shift();
    while (this.expect[0]?.kind === 'local') this.send(Buffer.from((this.expect.shift() as { text: string }).text, 'latin1'));
    this.pump();
  }
}
