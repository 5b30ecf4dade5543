import type { BackendTls } from '../backend.js';
import { BackendUnavailable } from '../backend.js';
import { type LineConn, connectLines } from '../core/line-conn.js';
import type { Reply } from './syntax.js';

/** Replies to commands come within this (the final dot's replies get `DELIVERY_TIMEOUT_MS`). */
const COMMAND_TIMEOUT_MS = 30_000;
/** A delivery (quota, Sieve, a big message's fsync) may take a while. */
export const DELIVERY_TIMEOUT_MS = 5 * 60_000;

/**
 * An LMTP connection to one node's Dovecot (RFC 2033), spoken by the
 * gateway itself: every command is its own, every reply is read and
 * parsed. Opened with LHLO; when the server offers XCLIENT (Dovecot does to
 * login_trusted_networks) the client's address is forwarded first, so
 * Dovecot's logs name the MTA, not the gateway.
 */
export class LmtpUpstream {
  /** ESMTP keywords the server offered (upper case), e.g. PIPELINING, CHUNKING, 8BITMIME, SIZE. */
  caps = new Set<string>();
  /** The greeting named Dovecot (its LMTP takes ORCPT without offering DSN). */
  dovecot = false;
  private failedWith: BackendUnavailable | undefined;

  private constructor(
    readonly address: string,
    private readonly conn: LineConn,
  ) {
    conn.socket.on('close', () => (this.failedWith ??= new BackendUnavailable('connection closed')));
  }

  static async open(address: string, opts: { tls?: BackendTls; client?: { ip: string; port: number }; helo: string; timeoutMs?: number }): Promise<LmtpUpstream> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const conn = await connectLines(address, opts.tls, timeoutMs);
    const up = new LmtpUpstream(address, conn);
    try {
      const greeting = await up.reply(timeoutMs);
      if (greeting.code !== 220) throw new BackendUnavailable(`LMTP server refused: ${greeting.code} ${greeting.text.slice(0, 80)}`);
      up.dovecot = /\bDovecot\b/i.test(greeting.text);
      await up.lhlo(opts.helo);
      if (opts.client && up.caps.has('XCLIENT')) {
        const r = await up.command(`XCLIENT ADDR=${opts.client.ip} PORT=${opts.client.port}`);
        // Accepted: the server greets again and wants a new LHLO (Postfix's XCLIENT rules).
        if (r.code === 220) await up.lhlo(opts.helo);
        else if (r.code >= 400) throw new BackendUnavailable(`XCLIENT refused: ${r.code} ${r.text.slice(0, 80)}`);
      }
      return up;
    } catch (err) {
      up.destroy();
      throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
    }
  }

  private async lhlo(helo: string): Promise<void> {
    const r = await this.command(`LHLO ${helo}`);
    if (r.code !== 250) throw new BackendUnavailable(`LHLO refused: ${r.code} ${r.text.slice(0, 80)}`);
    this.caps = new Set(r.lines.slice(1).map((l) => l.split(' ')[0]!.toUpperCase()));
  }

  get usable(): boolean {
    return this.failedWith === undefined && !this.conn.socket.destroyed;
  }

  /** Sends one command line and reads its reply. */
  async command(line: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<Reply & { lines: string[] }> {
    this.send(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  /**
   * Writes bytes (commands, message data); false when the socket's buffer
   * is full (wait for `drained`). What is sent while the gateway handles one
   * batch of the client's input (the commands it pipelined) leaves in one
   * write, once that work is done.
   */
  send(data: string | Buffer): boolean {
    if (!this.usable) return true;
    const s = this.conn.socket;
    if (!this.batching) {
      this.batching = true;
      s.cork();
      process.nextTick(() => {
        this.batching = false;
        s.uncork();
      });
    }
    return s.write(data);
  }

  private batching = false;

  /** Holds writes until the next `send` of the end of data (see `finish`), to leave in one write. */
  cork(): void {
    if (this.corks === 0 && this.usable) {
      this.corks++;
      this.conn.socket.cork();
    }
  }

  private corks = 0;

  /** Sends what cork() held. */
  uncork(): void {
    if (this.corks === 0) return;
    this.corks = 0;
    this.conn.socket.uncork();
  }

  /** Bytes written and not yet taken by the kernel. */
  get backlog(): number {
    return this.conn.socket.writableLength;
  }

  drained(): Promise<void> {
    const s = this.conn.socket;
    if (!s.writableNeedDrain || s.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        s.off('drain', done);
        s.off('close', done);
        resolve();
      };
      s.once('drain', done);
      s.once('close', done);
    });
  }

  /** Reads one (perhaps multi-line) reply. */
  async reply(timeoutMs = COMMAND_TIMEOUT_MS): Promise<Reply & { lines: string[] }> {
    if (this.failedWith && this.conn.unread === 0) throw this.failedWith;
    const lines: string[] = [];
    this.conn.deadline(timeoutMs);
    try {
      for (;;) {
        const line = await this.conn.nextLine();
        const m = /^([2-5]\d\d)([ -]?)(.*)$/.exec(line);
        if (!m) throw new BackendUnavailable(`malformed LMTP reply: ${line.slice(0, 80)}`);
        lines.push(m[3]!);
        if (m[2] !== '-') {
          const first = lines[0]!;
          const enhanced = /^([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(first);
          const text = lines.map((l) => l.replace(/^[245]\.\d{1,3}\.\d{1,3} ?/, '')).join(' ');
          return { code: Number(m[1]), ...(enhanced ? { enhanced: enhanced[1] } : {}), text, lines };
        }
        if (lines.length > 100) throw new BackendUnavailable('LMTP reply too long');
      }
    } catch (err) {
      this.destroy();
      throw err instanceof BackendUnavailable ? err : new BackendUnavailable(String(err));
    } finally {
      this.conn.deadline(0);
    }
  }

  destroy(): void {
    this.failedWith ??= new BackendUnavailable('closed');
    this.conn.socket.destroy();
  }
}

/**
 * Idle LMTP connections per node (and client address, which XCLIENT fixed):
 * a delivery reuses one that finished its last transaction cleanly instead of
 * connecting, greeting and saying LHLO again.
 */
export class LmtpPool {
  private readonly idle = new Map<string, Array<{ up: LmtpUpstream; timer: NodeJS.Timeout }>>();
  private closed = false;

  constructor(
    private readonly opts: { tls?: BackendTls; helo: string; maxIdle?: number; idleMs?: number },
  ) {}

  async take(address: string, client: { ip: string; port: number } | undefined): Promise<LmtpUpstream> {
    const key = `${address}|${client?.ip ?? ''}`;
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const { up, timer } = list.pop()!;
      clearTimeout(timer);
      if (up.usable) return up;
    }
    return LmtpUpstream.open(address, { tls: this.opts.tls, client, helo: this.opts.helo });
  }

  /** Gives a connection back after a transaction that ended cleanly (or was reset). */
  give(up: LmtpUpstream, client: { ip: string; port: number } | undefined): void {
    if (this.closed || !up.usable) return up.destroy();
    const key = `${up.address}|${client?.ip ?? ''}`;
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    if (list.length >= (this.opts.maxIdle ?? 4)) return up.destroy();
    const entry = {
      up,
      timer: setTimeout(() => {
        const i = list.indexOf(entry);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0) this.idle.delete(key);
        up.destroy();
      }, this.opts.idleMs ?? 60_000),
    };
    entry.timer.unref();
    list.push(entry);
  }

  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const { up, timer } of list) {
      clearTimeout(timer);
      up.destroy();
    }
    this.idle.clear();
  }
}
