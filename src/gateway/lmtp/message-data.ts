import type net from 'node:net';
import type { ClientInput } from './input.js';
import { type Reply, replyClass } from './syntax.js';
import { R, TRY_LATER, type LmtpHost, type Transaction, delivering, expect, failShare, liveShares, openShares, queue, settle } from './transaction.js';
import { DELIVERY_TIMEOUT_MS } from './upstream.js';

/** Message bytes waiting for a node's socket before the client is read again. */
const FORWARD_BACKLOG = 1 << 20;

/**
 * The message transfer of an LMTP transaction (DATA, BDAT, the end of data
 * and the replies per recipient), on the shares its envelope opened: the
 * data streamed to every node (never held whole), and each node's replies
 * in RCPT order.
 */
export interface DataPhaseHost {
  readonly input: ClientInput;
  readonly host: LmtpHost;
  readonly client: net.Socket;
  reply(r: Reply | string): void;
  /** Sends replies held for one write (pipelining). */
  flush(): void;
  fence(tenant: string, user: string, epoch: number | undefined): void;
  fenceAll(why: string): void;
  /** Ends the transaction (`delivered`: its end of data went out and was answered). */
  end(txn: Transaction, delivered: boolean): void;
}

/** DATA: returns false when the client went away. */
export async function receiveData(ph: DataPhaseHost, txn: Transaction | undefined): Promise<boolean> {
  if (!txn) {
    ph.reply(R(503, '5.5.1', 'MAIL needed first'));
    return true;
  }
  if (txn.chunked) {
    ph.reply(R(503, '5.5.1', 'DATA after BDAT'));
    return true;
  }
  if (txn.accepted.length === 0) {
    ph.reply(R(503, '5.5.1', 'No valid recipients'));
    return true;
  }
  // Every node's DATA (behind its RCPTs), and the client's 354 at once: the nodes' verdicts on
  // the recipients and their 354s are awaited before the first bytes go to them (or their failure is
  // their recipients'), which overlaps the two round trips.
  const accepting = Promise.all(
    openShares(txn).map(async (u) => {
      u.dataSent = true;
      const r = await queue(u, () => 'DATA');
      if (r.code !== 354) failShare(u, r);
    }),
  ).then(() => settle(txn));
  ph.reply('354 2.0.0 Start mail input; end with <CRLF>.<CRLF>\r\n');
  ph.flush();
  let accepted = false;
  for (;;) {
    const piece = await ph.input.data();
    if (!accepted) {
      await accepting;
      accepted = true;
    }
    if (!piece) return false;
    if (!txn.tooBig) {
      txn.size += piece.data.length;
      if (txn.size > ph.host.maxSize) {
        txn.tooBig = true;
        for (const u of txn.upstreams.values()) failShare(u, R(552, '5.3.4', 'Message too big'));
      } else if (piece.data.length > 0) {
        // The last stretch and the end of data leave in one write.
        if (piece.end) for (const u of liveShares(txn)) u.up!.cork();
        await forward(txn, piece.data);
      }
    }
    if (piece.end) break;
  }
  await finish(ph, txn, '.\r\n');
  return true;
}

/** BDAT (RFC 3030): the chunk's bytes to every node as a chunk of the same size. */
export async function receiveBdat(ph: DataPhaseHost, txn: Transaction | undefined, size: number, last: boolean): Promise<boolean> {
  const ok = txn !== undefined && txn.accepted.length > 0 && !txn.tooBig;
  if (txn && ok) {
    txn.chunked = true;
    txn.size += size;
    if (txn.size > ph.host.maxSize) {
      txn.tooBig = true;
      for (const u of txn.upstreams.values()) failShare(u, R(552, '5.3.4', 'Message too big'));
    }
  }
  const forwarding = txn !== undefined && ok && !txn.tooBig;
  if (forwarding) {
    // The servers' verdicts on the recipients first (settled after the first chunk): a chunk goes
    // only where a recipient was taken.
    await Promise.all(openShares(txn).map((u) => u.ready));
    await settle(txn);
    for (const u of liveShares(txn)) {
      if (!u.up!.caps.has('CHUNKING')) failShare(u, R(554, '5.5.1', 'the mail server does not take BDAT'));
      else {
        u.dataSent = true;
        u.up!.send(`BDAT ${size}${last ? ' LAST' : ''}\r\n`);
      }
    }
  }
  // The chunk's bytes are read whatever happens: they are not commands.
  let left = size;
  while (left > 0) {
    const b = await ph.input.bytes(left);
    if (!b) return false;
    left -= b.length;
    if (forwarding) await forward(txn, b);
  }
  if (!txn) {
    ph.reply(R(503, '5.5.1', 'MAIL needed first'));
    return true;
  }
  if (txn.accepted.length === 0) {
    ph.reply(R(503, '5.5.1', 'No valid recipients'));
    return true;
  }
  if (last) {
    await finish(ph, txn, undefined);
    return true;
  }
  if (txn.tooBig) {
    ph.reply(R(552, '5.3.4', 'Message too big'));
    return true;
  }
  // Each node confirms the chunk before the client hears it was taken.
  await Promise.all(
    liveShares(txn).map(async (u) => {
      try {
        const r = await expect(u, u.up!);
        if (replyClass(r) !== 2) failShare(u, r);
      } catch {
        failShare(u, TRY_LATER('the mail server went away; try again later'));
      }
    }),
  );
  ph.reply(R(250, '2.0.0', `${size} octets received`));
  return true;
}

/**
 * Message bytes to every live share, at the pace of the slowest: the
 * client is read again once every node's backlog is under 1 MiB (waiting
 * for each write to drain would make every chunk a round trip).
 */
async function forward(txn: Transaction, data: Buffer): Promise<void> {
  const live = liveShares(txn);
  for (const u of live) u.up!.send(data);
  if (live.some((u) => u.up!.backlog > FORWARD_BACKLOG)) {
    // A corked socket never drains: let go of what was held for one write.
    for (const u of live) u.up?.uncork();
    await Promise.all(live.map((u) => u.up?.drained()));
  }
}

/**
 * The end of data (`dot`, or the last BDAT already sent): each share
 * still current gets it and answers per recipient; then one reply per
 * accepted recipient, in RCPT order.
 */
async function finish(ph: DataPhaseHost, txn: Transaction, dot: string | undefined): Promise<void> {
  // The client waits for the deliveries (up to DELIVERY_TIMEOUT_MS): not idle meanwhile.
  ph.client.setTimeout(0);
  await Promise.all(
    liveShares(txn).map(async (u) => {
      // Fencing, last look: a recipient that moved meanwhile fails its node's share before the end goes out.
      for (const r of u.recipients) if (!ph.host.current(r.tenant, r.user, r.epoch)) ph.fence(r.tenant, r.user, undefined);
      if (!ph.host.mayServe()) ph.fenceAll('This server cannot reach the rest of the cluster right now; try again later');
      if (u.failed || !u.up) return;
      u.final = true;
      if (dot) u.up.send(dot);
      u.up.uncork();
      const replies: Reply[] = [];
      const up = u.up;
      try {
        for (let i = delivering(u).length; i > 0; i--) replies.push(await expect(u, up, DELIVERY_TIMEOUT_MS));
        u.replies = replies;
      } catch {
        // Replies that came stand; the rest are unknown: try again (a duplicate at worst, never a loss).
        u.replies = replies;
        u.up = undefined;
      }
    }),
  );
  for (const r of txn.accepted) {
    const u = r.upstream;
    const got = r.refused ?? u.replies?.[delivering(u).indexOf(r)];
    const reply = got ?? u.failed ?? TRY_LATER('the mail server went away before it answered; try again later');
    ph.host.recipientDone?.(reply.code);
    ph.reply({ ...reply, text: got ? reply.text : `<${r.address}> ${reply.text}` });
  }
  ph.client.setTimeout(ph.host.idleTimeoutMs);
  ph.end(txn, true);
}
