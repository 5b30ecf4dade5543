import type net from 'node:net';
import { command } from './imap/wire.js';

/**
 * Connections logged in as a mailbox owner (through Dovecot's master user)
 * that no session needs at the moment: a reader's session keeps its own
 * connection to an owner only while it has a mailbox of the owner selected,
 * idles or has NOTIFY set there; between commands it gives it back here,
 * and its next command on that owner's mailboxes takes one from here. So
 * 200 readers of a team folder who are not in it hold a handful of
 * connections to the owner's node, not 200.
 *
 * A connection is only reused for the same owner, node address, epoch of
 * the owner's assignment (a move or failover makes the old ones useless:
 * they are never taken, and `dropOwner` closes them), reader's address
 * (the login passed it to Dovecot, whose per-address limits and logs see
 * it) and ENABLEd extensions (they change what the server sends). At most `perKey` are kept per such key; each kept one is closed
 * after `idleMs`. Kept ones count as sessions of the owner (`counted`), so
 * the owner's node does not let the owner go while they exist.
 */
export class OwnerPool {
  private readonly idle = new Map<string, Array<{ socket: net.Socket; timer: NodeJS.Timeout }>>();

  constructor(
    private readonly opts: {
      perKey?: number;
      idleMs?: number;
      /** A kept connection went away: the owner has one session less. */
      released: (key: OwnerKey) => void;
    },
  ) {}

  /** A connection for this key, if one is kept (it is the caller's now, counted as before). */
  take(key: OwnerKey): net.Socket | undefined {
    const list = this.idle.get(keyText(key));
    const entry = list?.pop();
    if (!entry) return undefined;
    if (list!.length === 0) this.idle.delete(keyText(key));
    clearTimeout(entry.timer);
    entry.socket.removeAllListeners('data');
    entry.socket.removeAllListeners('close');
    entry.socket.removeAllListeners('error');
    entry.socket.pause();
    return entry.socket;
  }

  /**
   * Takes back a connection that holds no selected mailbox and has no
   * command outstanding; returns false when there is no room (the caller
   * logs it out).
   */
  give(key: OwnerKey, socket: net.Socket): boolean {
    const k = keyText(key);
    const list = this.idle.get(k) ?? [];
    if (list.length >= (this.opts.perKey ?? 4) || socket.destroyed) return false;
    this.idle.set(k, list);
    const entry = {
      socket,
      timer: setTimeout(() => this.remove(key, entry, true), this.opts.idleMs ?? 60_000),
    };
    entry.timer.unref();
    // Nothing is expected while nothing is selected but a BYE; the connection is then gone.
    socket.on('data', () => undefined);
    socket.on('close', () => this.remove(key, entry, false));
    socket.on('error', () => socket.destroy());
    socket.resume();
    list.push(entry);
    return true;
  }

  /** The owner moved (or failed over): the connections to the old node go. */
  dropOwner(tenant: string, owner: string): void {
    for (const [k, list] of [...this.idle]) {
      const key = list[0] && parseKey(k);
      if (!key || key.tenant !== tenant || key.owner !== owner) continue;
      for (const e of [...list]) this.remove(key, e, true);
    }
  }

  /** Connections kept now (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  close(): void {
    for (const [k, list] of [...this.idle]) for (const e of [...list]) this.remove(parseKey(k), e, true);
  }

  private remove(key: OwnerKey, entry: { socket: net.Socket; timer: NodeJS.Timeout }, logout: boolean): void {
    const k = keyText(key);
    const list = this.idle.get(k);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.idle.delete(k);
    clearTimeout(entry.timer);
    entry.socket.removeAllListeners('close');
    if (logout && !entry.socket.destroyed) entry.socket.end(command('mailshare.bye', 'LOGOUT', []), 'latin1');
    this.opts.released(key);
  }
}

export interface OwnerKey {
  readonly tenant: string;
  readonly owner: string;
  readonly address: string;
  readonly epoch: number;
  readonly clientIp: string;
  /** The extensions ENABLEd on the connection, upper case, sorted, space-separated. */
  readonly enabled: string;
}

const keyText = (k: OwnerKey): string => JSON.stringify([k.tenant, k.owner, k.address, k.epoch, k.clientIp, k.enabled]);
const parseKey = (s: string): OwnerKey => {
  const [tenant, owner, address, epoch, clientIp, enabled] = JSON.parse(s) as [string, string, string, number, string, string];
  return { tenant, owner, address, epoch, clientIp, enabled };
};
