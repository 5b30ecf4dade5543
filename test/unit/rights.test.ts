import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  RIGHT_LETTERS,
  type Rights,
  applyRightsChange,
  difference,
  formatRights,
  formatRightsForResponse,
  parseRights,
  parseRightsChange,
  union,
} from '../../src/domain/rights.js';

const all = Array.from({ length: 1 << 11 }, (_, i) => i as Rights);
const letters = (r: Rights) => new Set(formatRights(r));
const set = (s: string) => new Set(s);

describe('rights bitset (all 2^11 sets)', () => {
  it('formats in canonical order and parses back', () => {
    for (const r of all) {
      const text = formatRights(r);
      expect([...text].every((c, i, a) => i === 0 || RIGHT_LETTERS.indexOf(a[i - 1]!) < RIGHT_LETTERS.indexOf(c))).toBe(true);
      expect(parseRights(text)).toBe(r);
      // Order of input letters does not matter; duplicates are harmless.
      expect(parseRights([...text].reverse().join('') + text)).toBe(r);
    }
  });

  it('union and difference agree with set algebra on the letters, for every pair', () => {
    // Oracle independent of the bit operations: membership per letter of the formatted strings.
    const texts = all.map(formatRights);
    let mismatches = 0;
    for (const a of all) {
      const ta = texts[a]!;
      for (const b of all) {
        const tb = texts[b]!;
        let u = '';
        let d = '';
        for (const c of RIGHT_LETTERS) {
          const inA = ta.includes(c);
          const inB = tb.includes(c);
          if (inA || inB) u += c;
          if (inA && !inB) d += c;
        }
        if (texts[union(a, b)] !== u || texts[difference(a, b)] !== d) mismatches++;
      }
    }
    expect(mismatches).toBe(0);
  });

  it('reports the virtual c and d exactly when a member is present (RFC 4314 §2.1.1)', () => {
    for (const r of all) {
      const out = formatRightsForResponse(r);
      const l = letters(r);
      expect(out.includes('c')).toBe(l.has('k') || l.has('x'));
      expect(out.includes('d')).toBe(l.has('e') || l.has('t'));
      expect(out.replace(/[cd]/g, '')).toBe(formatRights(r));
    }
  });
});

describe('parsing rights', () => {
  it('expands c to k+x and d to e+t', () => {
    expect(formatRights(parseRights('c'))).toBe('kx');
    expect(formatRights(parseRights('d'))).toBe('te');
    expect(parseRights('d')).toBe(parseRights('te'));
    expect(parseRights('cd')).toBe(parseRights('kxte'));
  });

  it('rejects uppercase and unknown rights naming the letter (RFC 4314 §3.1 A035, A036)', () => {
    expect(() => parseRights('lrQswicda', 'rights')).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'rights', message: expect.stringContaining('"Q"') }));
    expect(() => parseRights('lrqswicda')).toThrow(/unknown right "q"/);
    for (const bad of ['0', '9', ' ', '+', 'é', '\u0000', 'L']) expect(() => parseRights(bad)).toThrow(/right/);
    expect(() => parseRights('\u0001')).toThrow(/U\+0001/);
  });

  it('parses SETACL modifications: replace, +add, -remove', () => {
    expect(parseRightsChange('lr')).toEqual({ mode: 'replace', rights: parseRights('lr') });
    expect(parseRightsChange('+w')).toEqual({ mode: 'add', rights: parseRights('w') });
    expect(parseRightsChange('-w')).toEqual({ mode: 'remove', rights: parseRights('w') });
    expect(parseRightsChange('')).toEqual({ mode: 'replace', rights: 0 });
    expect(() => parseRightsChange('+-w')).toThrow(/unknown right "-"/);
  });

  it('applies changes like set operations', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2047 }), fc.integer({ min: 0, max: 2047 }), (a, b) => {
        const cur = a as Rights;
        const r = b as Rights;
        expect(applyRightsChange(cur, { mode: 'add', rights: r })).toBe(union(cur, r));
        expect(applyRightsChange(cur, { mode: 'remove', rights: r })).toBe(difference(cur, r));
        expect(applyRightsChange(cur, { mode: 'replace', rights: r })).toBe(r);
      }),
    );
  });
});

describe('RFC 4314 examples', () => {
  it('§2.1.1: SETACL David lrswida → ACL David lrswideta', () => {
    expect(set(formatRightsForResponse(parseRights('lrswida')))).toEqual(set('lrswideta'));
  });
  it('§2.1.1: SETACL Byron lrswikda → ACL Byron lrswikcdeta', () => {
    expect(set(formatRightsForResponse(parseRights('lrswikda')))).toEqual(set('lrswikcdeta'));
  });
  it('§2.1.1: Fred rwipslxetad is reported as rwipslxcetda', () => {
    expect(set(formatRightsForResponse(parseRights('rwipslxetad')))).toEqual(set('rwipslxcetda'));
  });
  it('§3.1: Chris lrswi, SETACL Chris +cda → lrswicdakxet', () => {
    const after = applyRightsChange(parseRights('lrswi'), parseRightsChange('+cda'));
    expect(set(formatRightsForResponse(after))).toEqual(set('lrswicdakxet'));
  });
  it('§3.5: MYRIGHTS rwiptsldaex carries c and d as well', () => {
    expect(set(formatRightsForResponse(parseRights('rwiptsldaex')))).toEqual(set('rwiptsldaexcd'));
  });
});
