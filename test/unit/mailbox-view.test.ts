import { describe, expect, it } from 'vitest';
import { MailboxView, reconcile, uidSet } from '../../src/gateway/imap/mailbox-view.js';

/** Every UID of a view, ascending. */
function uids(v: MailboxView): number[] {
  const out: number[] = [];
  for (const [first, count] of v.runs()) for (let i = 0; i < count; i++) out.push(first + i);
  return out;
}

describe('MailboxView', () => {
  it('reads an ESEARCH ALL set as runs and numbers them', () => {
    const v = MailboxView.fromUidSet('1:3,5,7:9');
    expect(uids(v)).toEqual([1, 2, 3, 5, 7, 8, 9]);
    expect(v.length).toBe(7);
    expect(v.uidAt(4)).toBe(5);
    expect(v.seqOf(8)).toBe(6);
    expect(v.seqOf(4)).toBeUndefined();
    expect([...v.runs()]).toEqual([[1, 3], [5, 1], [7, 3]]);
    expect(MailboxView.fromUidSet('').length).toBe(0);
    expect(() => MailboxView.fromUidSet('1:x')).toThrow(/not a UID set/);
  });

  it('follows EXPUNGE, VANISHED, EXISTS and the UIDs FETCH responses show', () => {
    const v = MailboxView.fromUidSet('10:14');
    v.expunge(3); // UID 12
    expect(uids(v)).toEqual([10, 11, 13, 14]);
    v.vanish([10, 99]);
    expect(uids(v)).toEqual([11, 13, 14]);
    v.exists(5);
    expect(v.unknown).toBe(2);
    v.learn(4, 20);
    expect(v.unknown).toBe(1);
    expect(v.uidAt(4)).toBe(20);
    // Not the next unknown one: nothing learnt (a gap cannot be filled).
    v.exists(6);
    v.learn(6, 30);
    expect(v.known).toBe(4);
    v.learn(5, 21);
    v.learn(6, 30);
    expect(v.unknown).toBe(0);
    expect(uids(v)).toEqual([11, 13, 14, 20, 21, 30]);
    expect(v.broken).toBeUndefined();
    v.learn(2, 13);
    expect(v.broken).toBeUndefined();
    v.learn(2, 12);
    expect(v.broken).toMatch(/FETCH 2 has UID 12/);
  });

  it('expunges a message of unknown UID by count, and calls a shrinking EXISTS broken', () => {
    const v = MailboxView.fromUidSet('1:2');
    v.exists(4);
    v.expunge(4);
    expect(v.length).toBe(3);
    expect(v.unknown).toBe(1);
    v.vanish([50]);
    expect(v.broken).toMatch(/VANISHED 50/);
    const w = MailboxView.fromUidSet('1:2');
    w.exists(1);
    expect(w.broken).toMatch(/EXISTS 1 below 2/);
  });
});

describe('reconcile', () => {
  it('lists what is gone highest first and how many exist after', () => {
    const client = MailboxView.fromUidSet('1:6');
    const now = MailboxView.fromUidSet('1,3,5:6,9:10');
    const r = reconcile(client, now);
    if (typeof r === 'string') throw new Error(r);
    expect(r.gone).toEqual([2, 4]);
    expect(r.expungeSeqs).toEqual([4, 2]);
    expect(r.exists).toBe(6);
    expect(r.added).toBe(2);
    expect(uidSet(r.gone)).toBe('2,4');
  });

  it('applying its EXPUNGEs to the client view gives the new view', () => {
    for (let round = 0; round < 200; round++) {
      const all: number[] = [];
      for (let u = 1; u <= 40; u++) if (Math.random() < 0.7) all.push(u);
      const client = MailboxView.fromUidSet(uidSet(all));
      const kept = all.filter(() => Math.random() < 0.6);
      const added = [41, 42, 43].slice(0, Math.floor(Math.random() * 4));
      const now = MailboxView.fromUidSet(uidSet([...kept, ...added]));
      const r = reconcile(client, now);
      if (typeof r === 'string') throw new Error(r);
      for (const seq of r.expungeSeqs) client.expunge(seq);
      expect(uids(client)).toEqual(kept);
      client.exists(r.exists);
      expect(client.length).toBe(kept.length + added.length);
    }
  });

  it('refuses what cannot be told apart', () => {
    const partial = MailboxView.fromUidSet('1:2');
    partial.exists(3);
    expect(reconcile(partial, MailboxView.fromUidSet('1:3'))).toMatch(/never saw/);
    // A message below the client's highest UID that the client never had: not the same mailbox.
    expect(reconcile(MailboxView.fromUidSet('1,5'), MailboxView.fromUidSet('1,3,5'))).toMatch(/does not know/);
  });
});
