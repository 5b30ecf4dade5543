import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DovecotEntry, decodeMutf7, dovecotRights, encodeMutf7, folderDirectory, formatDovecotAclFile, maildirFolder, parseDovecotAclFile, parseDovecotAclLine, parseGlobalAclFile } from '../../src/cli/dovecot-acl.js';
import { formatRights, parseRights } from '../../src/domain/rights.js';

describe("Dovecot's dovecot-acl files", () => {
  it('reads every identifier kind, negative entries, quoted identifiers and named rights; says why a line cannot be read', () => {
    const { entries, errors } = parseDovecotAclFile(
      ['owner lrwstipekxa', 'user=bob lr', '-user=bob w', 'group=sales lrs', 'group-override=admins lrwstipekxa', 'authenticated l', 'anonymous l', '"user=a b" lr', 'user=carol lr :x-plugin', '# comment', '', 'user=dave lrz', 'bogus lr', 'anyone'].join('\n'),
    );
    expect(entries.map((e) => [e.negative ? '-' : '', e.kind, e.name ?? '', formatRights(e.rights), e.named.join(',')])).toEqual([
      ['', 'owner', '', 'lrswipkxtea', ''],
      ['', 'user', 'bob', 'lr', ''],
      ['-', 'user', 'bob', 'w', ''],
      ['', 'group', 'sales', 'lrs', ''],
      ['', 'group-override', 'admins', 'lrswipkxtea', ''],
      ['', 'authenticated', '', 'l', ''],
      ['', 'anyone', '', 'l', ''],
      ['', 'user', 'a b', 'lr', ''],
      ['', 'user', 'carol', 'lr', 'x-plugin'],
      ['', 'anyone', '', '', ''],
    ]);
    expect(errors).toEqual([
      { line: 12, why: 'unknown right "z"' },
      { line: 13, why: 'unknown identifier "bogus"' },
    ]);
    expect(parseDovecotAclLine('"user=x')).toBe('unterminated quoted identifier');
  });

  it('writes files as Dovecot orders them, and reads them back to the same entries', () => {
    const kinds = fc.oneof(
      fc.constant({ kind: 'owner' as const }),
      fc.constant({ kind: 'anyone' as const }),
      fc.constant({ kind: 'authenticated' as const }),
      fc.record({ kind: fc.constantFrom('user' as const, 'group' as const, 'group-override' as const), name: fc.stringMatching(/^[a-z][a-z0-9 ]{0,6}$/) }),
    );
    const entry = fc.record({ id: kinds, negative: fc.boolean(), rights: fc.integer({ min: 1, max: 2047 }) });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), (list) => {
        const entries: DovecotEntry[] = list.map((e) => ({ ...e.id, negative: e.negative, rights: e.rights as never, named: [] }));
        const text = formatDovecotAclFile(entries);
        const back = parseDovecotAclFile(text);
        expect(back.errors).toEqual([]);
        expect(formatDovecotAclFile(back.entries)).toBe(text);
      }),
      { numRuns: 300 },
    );
    expect(formatDovecotAclFile([
      { kind: 'user', name: 'bob', negative: false, rights: parseRights('lrsw'), named: [] },
      { kind: 'owner', negative: false, rights: parseRights('lrswipkxtea'), named: [] },
      { kind: 'anyone', negative: true, rights: parseRights('w'), named: [] },
    ])).toBe('-anyone w\nowner lrwstipekxa\nuser=bob lrws\n');
  });

  it("gives the rights Dovecot gives: each kind that applies replaces the rights so far, positive and negative apart; several groups add up", () => {
    const { entries } = parseDovecotAclFile('group=temps lrw\n-group=temps w\ngroup=sales lrsi\nuser=bob lr\nauthenticated l\ngroup-override=locked l\n-group-override=locked r\nuser=erin lrsw\n-user=erin s\n');
    const of = (user: string, groups: string[], owner = false) => formatRights(dovecotRights(entries, { user, groups: new Set(groups), owner }));
    // bob's own entry replaces what his group gave (Dovecot's "remove it from specific users");
    // the group's negative w stays, as bob's entry has no negative part.
    expect(of('bob', ['temps'])).toBe('lr');
    expect(of('carol', ['temps'])).toBe('lr');
    // Two matching groups add up; the negative of one of them still applies.
    expect(of('dave', ['temps', 'sales'])).toBe('lrsi');
    expect(of('frank', [])).toBe('l');
    expect(of('erin', ['temps'])).toBe('lrw');
    // group-override comes last: it replaces even what the user entry gave.
    expect(of('bob', ['temps', 'locked'])).toBe('l');
    // The owner starts from every right and is not held by anyone/authenticated/group entries.
    expect(of('owner1', ['temps'], true)).toBe('lrswipkxtea');
  });

  it('maps Maildir++ folder directories and modified UTF-7 names both ways', () => {
    expect(maildirFolder('.Projects.2026')).toBe('Projects/2026');
    expect(maildirFolder('.Entw&APw-rfe')).toBe('Entwürfe');
    expect(maildirFolder('cur')).toBeUndefined();
    expect(decodeMutf7('A&-B')).toBe('A&B');
    expect(encodeMutf7('日本語 & more')).toBe('&ZeVnLIqe- &- more');
    expect(folderDirectory('Projects/Entwürfe', 'maildir')).toBe('.Projects.Entw&APw-rfe');
    expect(folderDirectory('Projects/2026', 'fs')).toBe('Projects/2026');
    expect(folderDirectory('INBOX', 'maildir')).toBe('');
    fc.assert(fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((s) => !s.includes('.') && !s.includes('/') && !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)), (s) => {
      expect(decodeMutf7(encodeMutf7(s))).toBe(s);
    }), { numRuns: 200 });
  });

  it('reads the global ACL file: a mailbox pattern with * and ?, then an entry', () => {
    const g = parseGlobalAclFile('Public* anyone l\n"Team ?" group=staff lrs\nINBOX\n');
    expect(g.rules.map((r) => [r.source, r.entry.kind, formatRights(r.entry.rights)])).toEqual([
      ['Public*', 'anyone', 'l'],
      ['Team ?', 'group', 'lrs'],
    ]);
    expect(g.rules[0]!.pattern.test('Public/Docs')).toBe(true);
    expect(g.rules[1]!.pattern.test('Team A')).toBe(true);
    expect(g.rules[1]!.pattern.test('Team AB')).toBe(false);
    expect(g.errors).toEqual([{ line: 3, why: 'expected MAILBOX-PATTERN IDENTIFIER RIGHTS' }]);
  });
});
