import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodePageToken, encodePageToken, parsePageSize } from '../../src/domain/paging.js';
import { formatToken, parseToken, parseTokenDescription, parseTokenId } from '../../src/domain/token.js';
import { hashSecret, mintToken } from '../../src/services/auth.js';

describe('bearer tokens', () => {
  it('mints tokens that parse back to their id and secret hash', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const t = mintToken();
      const parsed = parseToken(t.token);
      expect(parsed.id).toBe(t.id);
      expect(hashSecret(parsed.secret)).toBe(t.secretHash);
      expect(formatToken(parsed.id, parsed.secret)).toBe(t.token);
      seen.add(t.id);
    }
    expect(seen.size).toBe(200);
  });

  it.each(['', 'mst_', 'Bearer x', 'mst_0123456789abcdef', 'mst_0123456789ABCDEF_' + 'a'.repeat(43), 'mst_0123456789abcdef_' + 'a'.repeat(42), 'xst_0123456789abcdef_' + 'a'.repeat(43)])(
    'rejects malformed token %j as unauthenticated',
    (bad) => {
      expect(() => parseToken(bad)).toThrow(expect.objectContaining({ code: 'unauthenticated' }));
    },
  );

  it('validates ids and descriptions', () => {
    expect(parseTokenId('0123456789abcdef')).toBe('0123456789abcdef');
    expect(() => parseTokenId('0123')).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'id' }));
    expect(parseTokenDescription('ci runner')).toBe('ci runner');
    expect(() => parseTokenDescription('a\nb')).toThrow(expect.objectContaining({ field: 'description' }));
    expect(() => parseTokenDescription('x'.repeat(201))).toThrow(/at most 200/);
  });
});

describe('paging', () => {
  it('round-trips any key through a page token', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, unit: 'grapheme' }), (key) => {
        const token = encodePageToken(key);
        expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
        expect(decodePageToken(token)).toBe(key);
      }),
    );
  });

  it('treats empty as the first page and rejects garbage', () => {
    expect(decodePageToken('')).toBeUndefined();
    expect(() => decodePageToken('!!')).toThrow(expect.objectContaining({ field: 'page_token' }));
    expect(() => decodePageToken('_w')).toThrow(/previous page/);
  });

  it('bounds page sizes', () => {
    expect(parsePageSize(0)).toBe(100);
    expect(parsePageSize(1)).toBe(1);
    expect(parsePageSize(1000)).toBe(1000);
    expect(() => parsePageSize(1001)).toThrow(expect.objectContaining({ field: 'page_size' }));
    expect(() => parsePageSize(-1)).toThrow(/between 0 and 1000/);
  });
});
