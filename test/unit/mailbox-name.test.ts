import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseMailboxName, parseMailboxRef, parentsOf, formatMailboxRef } from '../../src/domain/mailbox-name.js';
import { parseTenantId, parseUserId } from '../../src/domain/ids.js';

describe('mailbox names', () => {
  it('accepts UTF-8 hierarchies and normalises INBOX and NFC', () => {
    expect(parseMailboxName('Projects/2024/Q1')).toBe('Projects/2024/Q1');
    expect(parseMailboxName('inbox')).toBe('INBOX');
    expect(parseMailboxName('InBoX/Receipts')).toBe('INBOX/Receipts');
    expect(parseMailboxName('Archive/inbox')).toBe('Archive/inbox');
    expect(parseMailboxName('Entw\u0075\u0308rfe')).toBe('Entwürfe');
    expect(parseMailboxName('日本語/メール')).toBe('日本語/メール');
    expect(parseMailboxName('a'.repeat(255))).toHaveLength(255);
  });

  it.each([
    ['', /must not be empty/],
    ['/a', /empty level/],
    ['a/', /empty level/],
    ['a//b', /empty level/],
    ['a/./b', /"\." level/],
    ['..', /"\.\." level/],
    ['a\u0000b', /U\+0000/],
    ['tab\there', /U\+0009/],
    ['a\u0085', /U\+0085/],
    ['what*', /wildcards/],
    ['50%', /wildcards/],
    ['x'.repeat(256), /level longer than 255 bytes/],
    ['é'.repeat(128), /level longer than 255 bytes/],
    [Array(17).fill('a').join('/'), /more than 16 levels/],
    [Array(5).fill('b'.repeat(250)).join('/'), /longer than 1000 bytes/],
    ['bad\ud800', /lone surrogate/],
  ])('rejects %j', (name, message) => {
    expect(() => parseMailboxName(name, 'name')).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'name' }));
    expect(() => parseMailboxName(name)).toThrow(message);
  });

  it('is idempotent on everything it accepts', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), (s) => {
        let once: string;
        try {
          once = parseMailboxName(s);
        } catch {
          return;
        }
        expect(parseMailboxName(once)).toBe(once);
      }),
    );
  });

  it('addresses mailboxes as OWNER/NAME', () => {
    expect(parseMailboxRef('alice/Projects/x')).toEqual({ owner: 'alice', name: 'Projects/x' });
    expect(formatMailboxRef(parseMailboxRef('alice/inbox'))).toBe('alice/INBOX');
    for (const bad of ['alice', 'alice/', '/Projects', 'Alice/Projects', 'anyone/x']) expect(() => parseMailboxRef(bad, 'mailbox')).toThrow(expect.objectContaining({ field: 'mailbox' }));
    expect(parentsOf('a/b/c')).toEqual(['a/b', 'a']);
    expect(parentsOf('a')).toEqual([]);
  });
});

describe('tenant and user ids', () => {
  it('follow the documented charsets', () => {
    expect(parseTenantId('acme-corp.eu')).toBe('acme-corp.eu');
    for (const bad of ['', 'Acme', '-acme', 'a/b', 'a:b', 'x'.repeat(64)]) expect(() => parseTenantId(bad)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(parseUserId('john.doe+list@example.com')).toBe('john.doe+list@example.com');
    for (const bad of ['', 'Bob', '-bob', 'anyone', 'authenticated', 'a b', 'x'.repeat(129)]) expect(() => parseUserId(bad, 'user')).toThrow(expect.objectContaining({ field: 'user' }));
  });
});
