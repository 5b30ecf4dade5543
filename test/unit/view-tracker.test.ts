import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { Conn } from '../../src/gateway/imap/upstream.js';
import { observe } from '../../src/gateway/imap/view-tracker.js';

/** A connection whose responses nobody reads: only what observe() keeps on it matters here. */
function conn(): Conn {
  const sink = { classify: () => 'drop' as const, forward: () => undefined, response: () => undefined };
  return new Conn(sink, 'alice', true, {} as net.Socket, 1);
}

describe('observe', () => {
  it('starts the view at its own UID SEARCH answer and follows EXISTS, EXPUNGE, VANISHED and FETCH UIDs', () => {
    const c = conn();
    observe(c, '* 4 EXISTS');
    expect(c.view).toBeUndefined();
    c.viewTag = 'm7';
    observe(c, '* ESEARCH (TAG "m6") UID ALL 1:2');
    expect(c.view).toBeUndefined();
    observe(c, '* ESEARCH (TAG "m7") UID ALL 1:3,5');
    expect(c.view?.length).toBe(4);
    expect(c.viewTag).toBeUndefined();
    observe(c, '* 2 EXPUNGE');
    observe(c, '* 5 EXISTS');
    expect(c.view!.unknown).toBe(2);
    // A UID inside a string is not the message's.
    observe(c, '* 4 FETCH (ENVELOPE ("x" "UID 99" NIL) UID 8 FLAGS ())');
    expect(c.view!.uidAt(4)).toBe(8);
    observe(c, '* 5 FETCH (FLAGS (\\Seen) UID 9)');
    expect(c.view!.unknown).toBe(0);
    observe(c, '* VANISHED 3:5');
    expect([...c.view!.runs()]).toEqual([[1, 1], [8, 2]]);
    observe(c, '* VANISHED (EARLIER) 1');
    expect(c.view!.length).toBe(3);
    // Numbers no server sends spoil the view rather than the session.
    observe(c, '* VANISHED 0:2');
    expect(c.view!.broken).toMatch(/unreadable VANISHED/);
  });

  it('an empty mailbox answers with no ALL; UIDVALIDITY and MODSEQs are kept', () => {
    const c = conn();
    c.viewTag = 'm1';
    observe(c, '* ESEARCH (TAG "m1") UID');
    expect(c.view?.length).toBe(0);
    observe(c, '* OK [UIDVALIDITY 1764000000] UIDs valid');
    expect(c.uidValidity).toBe('1764000000');
    expect(c.condstore).toBe(false);
    observe(c, '* OK [HIGHESTMODSEQ 12] Highest');
    expect(c.condstore).toBe(true);
    expect(c.modseq).toBe(12n);
    observe(c, '* 1 FETCH (UID 4 MODSEQ (15) FLAGS ())');
    observe(c, 'm3 OK [HIGHESTMODSEQ 14] Done');
    expect(c.modseq).toBe(15n);
  });
});
