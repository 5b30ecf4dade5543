import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fetchItemRenamer, splitArgs } from '../../src/gateway/imap-syntax.js';
import { decodeMutf7, encodeMutf7 } from '../../src/gateway/mutf7.js';
import type { Piece } from '../../src/gateway/imap-syntax.js';
import { ResponseStream } from '../../src/gateway/response-stream.js';
import { SharedNamespace, listPattern } from '../../src/gateway/shared-namespace.js';

describe('modified UTF-7 (RFC 3501 §5.1.3)', () => {
  it('matches the RFC example and common names', () => {
    expect(encodeMutf7('~peter/mail/台北/日本語')).toBe('~peter/mail/&U,BTFw-/&ZeVnLIqe-');
    expect(decodeMutf7('~peter/mail/&U,BTFw-/&ZeVnLIqe-')).toBe('~peter/mail/台北/日本語');
    expect(encodeMutf7('Café & Co')).toBe('Caf&AOk- &- Co');
    expect(decodeMutf7('&Jjo-!')).toBe('☺!');
    expect(encodeMutf7('😀')).toBe('&2D3eAA-');
  });

  it('round-trips any well-formed string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        const wire = encodeMutf7(s);
        expect(wire).toMatch(/^[\x20-\x7e]*$/);
        expect(decodeMutf7(wire)).toBe(s);
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects malformed input', () => {
    for (const bad of ['&', '&AOk', '&A-', '&AGEA-', 'a\u00e9', '&2D0-', '&ZeVnLIqe']) expect(decodeMutf7(bad), bad).toBeUndefined();
  });
});

describe('shared namespace', () => {
  const ns = new SharedNamespace('Shared/');
  const shares = [{ mailbox: 'alice/Projects' }, { mailbox: 'alice/Projects/2024' }, { mailbox: 'bob/Team/Plans' }, { mailbox: 'alice/Café' }];

  it('resolves names', () => {
    expect(ns.resolve('INBOX')).toEqual({ kind: 'home', wire: 'INBOX' });
    expect(ns.resolve('Sharedness')).toEqual({ kind: 'home', wire: 'Sharedness' });
    expect(ns.resolve('Shared')).toEqual({ kind: 'parent' });
    expect(ns.resolve('Shared/alice')).toEqual({ kind: 'parent' });
    expect(ns.resolve('Shared/alice/Projects/2024')).toEqual({ kind: 'shared', owner: 'alice', name: 'Projects/2024', wire: 'Projects/2024' });
    expect(ns.resolve('Shared/alice/Caf&AOk-')).toEqual({ kind: 'shared', owner: 'alice', name: 'Café', wire: 'Caf&AOk-' });
    expect(ns.resolve('Shared/alice/inbox')).toMatchObject({ kind: 'shared', name: 'INBOX' });
    for (const bad of ['Shared/Alice/x', 'Shared/alice/', 'Shared/alice//x', 'Shared/alice/&AOk', 'Shared/alice/a/../b']) expect(ns.resolve(bad).kind, bad).toBe('invalid');
    expect(ns.nameOf('alice', 'Café')).toBe('Shared/alice/Caf&AOk-');
  });

  it('lists mailboxes with their parents and child attributes', () => {
    expect(ns.entries(shares).map((e) => `${e.name} ${e.attributes.join(' ')}`)).toEqual([
      'Shared \\Noselect \\HasChildren',
      'Shared/alice \\Noselect \\HasChildren',
      'Shared/alice/Caf&AOk- \\HasNoChildren',
      'Shared/alice/Projects \\HasChildren',
      'Shared/alice/Projects/2024 \\HasNoChildren',
      'Shared/bob \\Noselect \\HasChildren',
      'Shared/bob/Team \\Noselect \\HasChildren',
      'Shared/bob/Team/Plans \\HasNoChildren',
    ]);
    expect(ns.list(shares, '', '%').map((e) => e.name)).toEqual(['Shared']);
    expect(ns.list(shares, '', 'Shared/%').map((e) => e.name)).toEqual(['Shared/alice', 'Shared/bob']);
    expect(ns.list(shares, 'Shared/', 'alice/%').map((e) => e.name)).toEqual(['Shared/alice/Caf&AOk-', 'Shared/alice/Projects']);
    expect(ns.list(shares, '', '*').length).toBe(8);
    expect(ns.list(shares, '', 'INBOX')).toEqual([]);
    expect(ns.list(shares, '', '*Plans')[0]).toMatchObject({ name: 'Shared/bob/Team/Plans', mailbox: 'bob/Team/Plans' });
  });

  it('matches LIST patterns', () => {
    expect(listPattern('a%').test('ab/c')).toBe(false);
    expect(listPattern('a*').test('ab/c')).toBe(true);
    expect(listPattern('a.b').test('axb')).toBe(false);
    expect(listPattern('(x)').test('(x)')).toBe(true);
  });
});

describe('command arguments', () => {
  it('keeps wire forms and values', () => {
    const args = splitArgs([{ text: 'a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]) "q \\" s" ' }, { literal: 'x y' }, { text: '' }]);
    expect(args.map((a) => a.raw)).toEqual(['a1', 'FETCH', '1:*', '(FLAGS BODY.PEEK[HEADER.FIELDS (From To)])', '"q \\" s"', '{3+}\r\nx y']);
    expect(args.map((a) => a.value).slice(4)).toEqual(['q " s', 'x y']);
    expect(args[3]!.list).toBe(true);
  });
});

describe('response stream', () => {
  const sample = Buffer.from(
    '* 1 FETCH (UID 7 BODY[] {12}\r\nhello\r\nworld)\r\n* LIST (\\HasNoChildren) "/" {5}\r\nInbox\r\n* STATUS "x" (MESSAGES 1)\r\na OK done\r\n',
  );
  const run = (chunks: Buffer[]) => {
    const forwarded: Buffer[] = [];
    const buffered: Array<{ pieces: Piece[]; raw: string }> = [];
    const s = new ResponseStream({
      classify: (line) => (/^\* (LIST|STATUS) /.test(line) || line.startsWith('a ') ? 'buffer' : 'forward'),
      forward: (c) => forwarded.push(Buffer.from(c)),
      response: (pieces, raw) => buffered.push({ pieces, raw: raw.toString('latin1') }),
    });
    for (const c of chunks) s.push(c);
    return { forwarded: Buffer.concat(forwarded).toString('latin1'), buffered };
  };

  it('forwards untouched and buffers what was asked for, however the bytes are split', () => {
    const whole = run([sample]);
    expect(whole.forwarded).toBe('* 1 FETCH (UID 7 BODY[] {12}\r\nhello\r\nworld)\r\n');
    expect(whole.buffered.map((b) => b.raw)).toEqual(['* LIST (\\HasNoChildren) "/" {5}\r\nInbox\r\n', '* STATUS "x" (MESSAGES 1)\r\n', 'a OK done\r\n']);
    expect(whole.buffered[0]!.pieces).toEqual([{ text: '* LIST (\\HasNoChildren) "/" ' }, { literal: 'Inbox' }, { text: '' }]);
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: sample.length - 1 }), { maxLength: 12 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), sample.length];
        const chunks = points.slice(1).map((p, i) => sample.subarray(points[i]!, p));
        expect(run(chunks)).toEqual(whole);
      }),
      { numRuns: 500 },
    );
  });
});

describe('FETCH item renaming (RFC822 fetched as BODY.PEEK[])', () => {
  const names = new Map([
    ['BODY[]', 'RFC822'],
    ['BODY[TEXT]', 'RFC822.TEXT'],
  ]);

  it('renames top-level items once each, across literal continuations, never inside strings or sections', () => {
    const edit = fetchItemRenamer(names);
    expect(edit('* 3 FETCH (ENVELOPE ("d" "BODY[] x" NIL) BODY[HEADER.FIELDS (BODY[])] {5}')).toBe('* 3 FETCH (ENVELOPE ("d" "BODY[] x" NIL) BODY[HEADER.FIELDS (BODY[])] {5}');
    expect(edit(' body[] {12}')).toBe(' RFC822 {12}');
    expect(edit(' BODY[TEXT] NIL BODY[] NIL)')).toBe(' RFC822.TEXT NIL BODY[] NIL)');
  });

  it('passes literals through while editing the lines around them, however the bytes are split', () => {
    const sample = Buffer.from('* 1 FETCH (UID 7 BODY[] {12}\r\nBODY[] hello BODY[TEXT] {3}\r\nabc)\r\n* 2 EXISTS BODY[] \r\n');
    const expected = '* 1 FETCH (UID 7 RFC822 {12}\r\nBODY[] hello RFC822.TEXT {3}\r\nabc)\r\n* 2 EXISTS BODY[] \r\n';
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: sample.length - 1 }), { maxLength: 10 }), (cuts) => {
        const out: Buffer[] = [];
        const s = new ResponseStream({
          classify: (line) => (/^\* \d+ FETCH /.test(line) ? { edit: fetchItemRenamer(names) } : 'forward'),
          forward: (c) => out.push(Buffer.from(c)),
          response: () => undefined,
        });
        const points = [0, ...cuts.sort((a, b) => a - b), sample.length];
        for (let i = 1; i < points.length; i++) s.push(sample.subarray(points[i - 1]!, points[i]!));
        expect(Buffer.concat(out).toString('latin1')).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });
});
