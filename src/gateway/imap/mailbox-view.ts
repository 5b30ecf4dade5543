/**
 * The client's view of its selected mailbox: message sequence number ↔ UID
 * (RFC 3501 §2.3.1), kept from the responses the client was sent. A
 * migrated session compares it with the new node's and tells the client
 * what changed in between with ordinary untagged responses.
 *
 * Kept as runs of consecutive UIDs (a mailbox's UIDs are mostly runs, so a
 * 100,000-message INBOX is a few numbers), then `unknown` messages at the
 * end whose UIDs the client was not shown yet (an EXISTS it has not
 * fetched): they are higher than every known UID.
 */
export class MailboxView {
  /** First UID of each run, ascending; `counts[i]` UIDs from `starts[i]` on. */
  private readonly starts: number[] = [];
  private readonly counts: number[] = [];
  private knownCount = 0;
  /** Messages at the end whose UIDs are not known. */
  unknown = 0;
  /** Something arrived that does not fit the view (the view can no longer be trusted). */
  broken: string | undefined;

  /** A view from an IMAP sequence set of UIDs (ESEARCH ALL, e.g. "1:3,5,7:9"), ascending; "" for none. */
  static fromUidSet(set: string): MailboxView {
    const v = new MailboxView();
    const ranges = uidRanges(set).sort((x, y) => x[0] - y[0]);
    for (const [lo, hi] of ranges) {
      const last = v.lastUid;
      if (lo! <= last) {
        if (hi! > last) v.append(last + 1, hi! - last);
      } else v.append(lo!, hi! - lo! + 1);
    }
    return v;
  }

  /** Messages the client knows of (sequence numbers 1…length). */
  get length(): number {
    return this.knownCount + this.unknown;
  }

  get known(): number {
    return this.knownCount;
  }

  /** The highest known UID, 0 for none. */
  get lastUid(): number {
    const i = this.starts.length - 1;
    return i < 0 ? 0 : this.starts[i]! + this.counts[i]! - 1;
  }

  /** The UID at a sequence number, or undefined (beyond the end, or not known). */
  uidAt(seq: number): number | undefined {
    if (seq < 1 || seq > this.knownCount) return undefined;
    let left = seq;
    for (let i = 0; i < this.starts.length; i++) {
      if (left <= this.counts[i]!) return this.starts[i]! + left - 1;
      left -= this.counts[i]!;
    }
    return undefined;
  }

  /** The sequence number of a known UID, or undefined. */
  seqOf(uid: number): number | undefined {
    let seq = 0;
    for (let i = 0; i < this.starts.length; i++) {
      const s = this.starts[i]!;
      const n = this.counts[i]!;
      if (uid >= s && uid < s + n) return seq + uid - s + 1;
      seq += n;
    }
    return undefined;
  }

  /** Known UIDs as runs [first, count], ascending. */
  *runs(): IterableIterator<[number, number]> {
    for (let i = 0; i < this.starts.length; i++) yield [this.starts[i]!, this.counts[i]!];
  }

  /** `* n EXISTS`: n messages now. */
  exists(n: number): void {
    if (n > this.length) this.unknown += n - this.length;
    else if (n < this.length) this.broken ??= `EXISTS ${n} below ${this.length} without EXPUNGE`;
  }

  /** `* n EXPUNGE`: the message at n is gone, the ones after it move down. */
  expunge(seq: number): void {
    if (seq < 1 || seq > this.length) {
      this.broken ??= `EXPUNGE ${seq} beyond ${this.length}`;
      return;
    }
    if (seq > this.knownCount) {
      this.unknown--;
      return;
    }
    let left = seq;
    for (let i = 0; i < this.starts.length; i++) {
      const n = this.counts[i]!;
      if (left > n) {
        left -= n;
        continue;
      }
      this.removeAt(i, left - 1);
      return;
    }
  }

  /** `* VANISHED uids` (RFC 7162 §3.2.10, without EARLIER): those messages are gone. */
  vanish(uids: Iterable<number>): void {
    for (const uid of uids) {
      const seq = this.seqOf(uid);
      if (seq !== undefined) this.expunge(seq);
      // Perhaps one of the messages whose UIDs the view does not know: which one cannot be told.
      else if (uid > this.lastUid && this.unknown > 0) this.broken ??= `VANISHED ${uid} among messages of unknown UID`;
    }
  }

  /** `* n FETCH (… UID u …)`: fills in the next unknown UID, or checks a known one. */
  learn(seq: number, uid: number): void {
    if (seq <= this.knownCount) {
      if (this.uidAt(seq) !== uid) this.broken ??= `FETCH ${seq} has UID ${uid}, the view ${this.uidAt(seq)}`;
      return;
    }
    if (seq === this.knownCount + 1 && this.unknown > 0 && uid > this.lastUid) {
      this.append(uid, 1);
      this.unknown--;
    }
  }

  private append(first: number, count: number): void {
    const i = this.starts.length - 1;
    if (i >= 0 && this.starts[i]! + this.counts[i]! === first) this.counts[i]! += count;
    else {
      this.starts.push(first);
      this.counts.push(count);
    }
    this.knownCount += count;
  }

  /** Removes the `offset`-th UID of run `i`. */
  private removeAt(i: number, offset: number): void {
    const s = this.starts[i]!;
    const n = this.counts[i]!;
    this.knownCount--;
    if (n === 1) {
      this.starts.splice(i, 1);
      this.counts.splice(i, 1);
    } else if (offset === 0) {
      this.starts[i] = s + 1;
      this.counts[i] = n - 1;
    } else if (offset === n - 1) {
      this.counts[i] = n - 1;
    } else {
      this.counts[i] = offset;
      this.starts.splice(i + 1, 0, s + offset + 1);
      this.counts.splice(i + 1, 0, n - offset - 1);
    }
  }
}

/** What turns the client's view into the new node's: the UIDs gone, then how many messages exist. */
export interface Reconciliation {
  /** UIDs of the client's view the mailbox no longer has, ascending. */
  readonly gone: number[];
  /** Their sequence numbers in the client's view, each as the client numbers it when told (highest first). */
  readonly expungeSeqs: number[];
  /** Messages after the expunges (the client hears EXISTS when this is above what remains). */
  readonly exists: number;
  /** Messages the client has not seen (UIDs above all it knows). */
  readonly added: number;
}

/**
 * Compares the client's view with the mailbox as the new node has it. Any
 * message of the client's view must be there or gone; a message the
 * client does not know must have a UID above every one it knows (UIDs
 * only grow, RFC 3501 §2.3.1.1). Returns why not otherwise.
 */
export function reconcile(client: MailboxView, now: MailboxView): Reconciliation | string {
  if (client.broken) return `the client's view is unknown (${client.broken})`;
  if (now.unknown > 0) return 'the new view is incomplete';
  if (client.unknown > 0) return `${client.unknown} message(s) the client was told of have UIDs the gateway never saw`;
  const gone: number[] = [];
  const mine = [...client.runs()];
  const theirs = [...now.runs()];
  // Walk both ascending run lists: what is in the client's and not in the new.
  let j = 0;
  for (const [first, count] of mine) {
    let uid = first;
    const end = first + count;
    while (uid < end) {
      while (j < theirs.length && theirs[j]![0] + theirs[j]![1] <= uid) j++;
      const t = theirs[j];
      if (!t || t[0] >= end) {
        for (; uid < end; uid++) gone.push(uid);
        break;
      }
      if (uid < t[0]) {
        for (; uid < t[0]; uid++) gone.push(uid);
        continue;
      }
      uid = Math.min(end, t[0] + t[1]);
    }
  }
  const kept = client.known - gone.length;
  // Every message the client knows that is still there, is there in the same order (UIDs ascend);
  // what else the new view holds must come after all of them.
  const lastKnown = client.lastUid;
  let newBelow = 0;
  for (const [first, count] of theirs) {
    const below = Math.min(first + count, lastKnown + 1) - first;
    if (below > 0) newBelow += below;
  }
  if (newBelow !== kept) return 'the mailbox has messages the client does not know below UIDs it knows';
  const expungeSeqs: number[] = [];
  // Highest first: each EXPUNGE leaves the lower numbers as they were (RFC 3501 §7.4.1).
  for (let k = gone.length - 1; k >= 0; k--) expungeSeqs.push(client.seqOf(gone[k]!)!);
  return { gone, expungeSeqs, exists: now.length, added: now.length - kept };
}

/** The ranges [low, high] of an IMAP sequence set of numbers ("1:3,7", either end first); "" has none. */
export function uidRanges(set: string): Array<[number, number]> {
  if (set === '') return [];
  return set.split(',').map((part) => {
    const [a, b] = part.split(':');
    const lo = Number(a);
    const hi = b === undefined ? lo : Number(b);
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || lo < 1 || hi < 1) throw new Error(`not a UID set: ${set}`);
    return lo <= hi ? [lo, hi] : [hi, lo];
  });
}

/** "1:3,5" from ascending UIDs. */
export function uidSet(uids: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < uids.length; ) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j]! + 1) j++;
    out.push(i === j ? `${uids[i]}` : `${uids[i]}:${uids[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
