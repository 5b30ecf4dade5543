import type { Rights } from './rights.js';

/**
 * The compact form of a mailbox and its ACL that snapshots carry to agents
 * (SnapshotResponse.mailboxes): what an agent's cache holds of a mailbox, in
 * bytes it can read without building an object per field.
 *
 * One record:
 *
 *     varint  key length in bytes, then the key "tenant/owner/name" (UTF-8)
 *     varint  tenant length, varint owner length (in UTF-16 code units of the key)
 *     varint  id length in bytes, then the id (UTF-8)
 *     varint  number of ACL entries, then per entry:
 *             varint identifier length in bytes, the identifier (UTF-8), varint rights (bits, see rights.ts)
 *
 * A chunk is records one after another; records are whole within a chunk.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One mailbox's record, as a one-byte ("latin1") string: compact to keep, and cheap to join into a chunk. */
export function packMailbox(tenant: string, owner: string, name: string, id: string, acl: Iterable<readonly [string, Rights]>): string {
  const out: number[] = [];
  const str = (s: string): void => {
    const b = encoder.encode(s);
    varint(out, b.length);
    for (const x of b) out.push(x);
  };
  str(`${tenant}/${owner}/${name}`);
  varint(out, tenant.length);
  varint(out, owner.length);
  str(id);
  const entries = [...acl];
  varint(out, entries.length);
  for (const [identifier, rights] of entries) {
    str(identifier);
    varint(out, rights);
  }
  let text = '';
  for (let i = 0; i < out.length; i += 8192) text += String.fromCharCode(...out.slice(i, i + 8192));
  return text;
}

function varint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** Records (packMailbox's strings) joined into chunks of about `chunkBytes` each: each chunk's text, one byte per character. */
export function* packedChunks(records: readonly string[], chunkBytes = 256 * 1024): Generator<string> {
  let start = 0;
  let size = 0;
  for (let i = 0; i < records.length; i++) {
    size += records[i]!.length;
    if (size >= chunkBytes) {
      yield records.slice(start, i + 1).join('');
      start = i + 1;
      size = 0;
    }
  }
  if (start < records.length) yield records.slice(start).join('');
}

/** What a reader is handed per record; the ACL as identifier, rights, identifier, rights… */
export interface PackedMailboxVisitor {
  (key: string, tenantLength: number, ownerLength: number, id: string, acl: Array<string | Rights>): void;
}

/**
 * Reads every record of a chunk, calling `visit` for each. `intern` gives
 * identifiers one shared copy (most repeat across mailboxes). Throws on a
 * truncated or malformed chunk (a record never half-applies).
 */
export function readPackedMailboxes(chunk: Uint8Array, visit: PackedMailboxVisitor, intern: (s: string) => string = (s) => s): number {
  const b = chunk;
  const end = b.length;
  let p = 0;
  let count = 0;
  const num = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      if (p >= end) throw new Error('packed mailboxes: truncated number');
      const x = b[p++]!;
      n += (x & 0x7f) * mul;
      if (x < 0x80) return n;
      mul *= 128;
      if (mul > 2 ** 49) throw new Error('packed mailboxes: number too long');
    }
  };
  const text = (): string => {
    const n = num();
    if (p + n > end) throw new Error('packed mailboxes: truncated string');
    const s = decoder.decode(b.subarray(p, p + n));
    p += n;
    return s;
  };
  while (p < end) {
    const key = text();
    const tenantLength = num();
    const ownerLength = num();
    if (tenantLength + ownerLength + 2 > key.length) throw new Error('packed mailboxes: key lengths out of range');
    const id = text();
    const n = num();
    if (n > end - p) throw new Error('packed mailboxes: too many ACL entries');
    const acl = new Array<string | Rights>(n * 2);
    for (let i = 0; i < n; i++) {
      acl[2 * i] = intern(text());
      acl[2 * i + 1] = num() as Rights;
    }
    visit(key, tenantLength, ownerLength, id, acl);
    count++;
  }
  return count;
}
