import { describe, expect, it } from 'vitest';
import { packMailbox, packedChunks, readPackedMailboxes } from '../../src/domain/mailbox-pack.js';
import { ALL_RIGHTS, parseRights, type Rights } from '../../src/domain/rights.js';

type Read = { key: string; tenant: string; owner: string; name: string; id: string; acl: Array<[string, Rights]> };

function readAll(chunk: Uint8Array): Read[] {
  const out: Read[] = [];
  readPackedMailboxes(chunk, (key, tl, ol, id, acl) => {
    const pairs: Array<[string, Rights]> = [];
    for (let i = 0; i < acl.length; i += 2) pairs.push([acl[i] as string, acl[i + 1] as Rights]);
    out.push({ key, tenant: key.slice(0, tl), owner: key.slice(tl + 1, tl + 1 + ol), name: key.slice(tl + 2 + ol), id, acl: pairs });
  });
  return out;
}

describe('compact mailbox records', () => {
  it('read back what was packed: names with slashes and non-ASCII letters, every right, negative and group entries', () => {
    const acl: Array<[string, Rights]> = [
      ['alice', ALL_RIGHTS],
      ['group:Équipe', parseRights('lr')],
      ['-bob', parseRights('w')],
      ['anyone', parseRights('l')],
    ];
    const recs = [packMailbox('acme', 'alice', 'Projets/Été 2026', 'id-1', acl), packMailbox('globex', 'zoë', 'INBOX', 'id-2', []), packMailbox('t', 'o', 'n', '', [['o', ALL_RIGHTS]])];
    const read = readAll(Buffer.from(recs.join(''), 'latin1'));
    expect(read).toEqual([
      { key: 'acme/alice/Projets/Été 2026', tenant: 'acme', owner: 'alice', name: 'Projets/Été 2026', id: 'id-1', acl },
      { key: 'globex/zoë/INBOX', tenant: 'globex', owner: 'zoë', name: 'INBOX', id: 'id-2', acl: [] },
      { key: 't/o/n', tenant: 't', owner: 'o', name: 'n', id: '', acl: [['o', ALL_RIGHTS]] },
    ]);
  });

  it('long strings and many entries take multi-byte lengths', () => {
    const name = 'x'.repeat(20_000);
    const acl: Array<[string, Rights]> = Array.from({ length: 300 }, (_, i) => [`user${i}`, parseRights(i % 2 ? 'lr' : 'lrswipkxtea')]);
    const [r] = readAll(Buffer.from(packMailbox('acme', 'alice', name, 'id', acl), 'latin1'));
    expect(r!.name).toBe(name);
    expect(r!.acl).toEqual(acl);
  });

  it('chunks hold whole records, about the size asked for, all of them once', () => {
    const recs = Array.from({ length: 1000 }, (_, i) => packMailbox('acme', `u${i}`, `Box${i}`, `id${i}`, [[`u${i}`, ALL_RIGHTS], ['bob', parseRights('lr')]]));
    const chunks = [...packedChunks(recs, 2000)].map((c) => Buffer.from(c, 'latin1'));
    expect(chunks.length).toBeGreaterThan(10);
    for (const c of chunks.slice(0, -1)) expect(c.length).toBeGreaterThanOrEqual(2000);
    const keys = chunks.flatMap((c) => readAll(c).map((r) => r.key));
    expect(keys).toEqual(recs.map((_, i) => `acme/u${i}/Box${i}`));
    expect([...packedChunks([])]).toEqual([]);
  });

  it('refuses a truncated or malformed chunk instead of reading part of a record', () => {
    const rec = Buffer.from(packMailbox('acme', 'alice', 'Box', 'id', [['bob', parseRights('lr')]]), 'latin1');
    for (let cut = 1; cut < rec.length; cut++) expect(() => readAll(rec.subarray(0, cut)), `cut at ${cut}`).toThrow(/packed mailboxes/);
    // Tenant and owner lengths longer than the key.
    const bad = Buffer.from([3, 0x61, 0x2f, 0x62, 5, 5, 0, 0]);
    expect(() => readAll(bad)).toThrow(/key lengths out of range/);
    // A number that never ends.
    expect(() => readAll(Buffer.alloc(12, 0xff))).toThrow(/packed mailboxes/);
  });
});
