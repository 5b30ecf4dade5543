import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Acl, EMPTY_ACL, aclEntries, deleteAcl, effectivePackedRights, effectiveRights, explainRights, listRights, packAcl, packedEntries, setAcl, shareGrantees, forEachPackedGrantee } from '../../src/domain/acl.js';
import { formatIdentifier, parseIdentifier } from '../../src/domain/identifier.js';
import { type Rights, formatRights, formatRightsForResponse, parseRights, parseRightsChange } from '../../src/domain/rights.js';

const id = (s: string) => parseIdentifier(s);
const set = (acl: Acl, who: string, change: string) => setAcl(acl, id(who), parseRightsChange(change));
const show = (acl: Acl) => Object.fromEntries(aclEntries(acl).map(([k, r]) => [k, formatRights(r)]));
const eff = (acl: Acl, user: string, groups: string[] = [], owner = 'owner') => formatRights(effectiveRights(acl, { user, groups: new Set(groups) }, owner));

describe('identifiers', () => {
  it.each(['alice', 'bob.smith', 'a+tag@example.com', 'anyone', 'authenticated', 'group:sales', '-alice', '-anyone', '-group:sales'])('round-trips %s', (s) => {
    expect(formatIdentifier(parseIdentifier(s))).toBe(s);
  });
  it.each(['', '-', 'Alice', 'group:', 'group:Sales', 'anonymous', '--bob', '-', 'a b', 'x/y', 'group:a:b', '.bob'])('rejects %j naming the field', (s) => {
    expect(() => parseIdentifier(s, 'identifier')).toThrow(expect.objectContaining({ code: 'invalid_argument', field: 'identifier' }));
  });
});

describe('SETACL / DELETEACL semantics (RFC 4314 §3.1, §3.2)', () => {
  it('replaces, adds and removes; empty rights leave no entry', () => {
    let acl = set(EMPTY_ACL, 'bob', 'lrs');
    expect(show(acl)).toEqual({ bob: 'lrs' });
    acl = set(acl, 'bob', '+w');
    expect(show(acl)).toEqual({ bob: 'lrsw' });
    acl = set(acl, 'bob', '-rs');
    expect(show(acl)).toEqual({ bob: 'lw' });
    acl = set(acl, 'bob', 'i');
    expect(show(acl)).toEqual({ bob: 'i' });
    acl = set(acl, 'bob', '-i');
    expect(show(acl)).toEqual({});
    acl = set(acl, 'bob', '');
    expect(acl.size).toBe(0);
    expect(set(EMPTY_ACL, 'bob', '-lr').size).toBe(0);
  });

  it('§3.2 example: DELETEACL Fred keeps -Fred and the other entries', () => {
    let acl = set(EMPTY_ACL, 'fred', 'rwipslxetad');
    acl = set(acl, '-fred', 'wetd');
    acl = set(acl, 'group:team', 'w');
    acl = deleteAcl(acl, id('fred'));
    expect(show(acl)).toEqual({ '-fred': 'wte', 'group:team': 'w' });
    expect(deleteAcl(acl, id('nobody'))).toBe(acl);
  });

  it('§3.1 example: Chris lrswi, +cda → lrswicdakxet', () => {
    const acl = set(set(EMPTY_ACL, 'chris', 'lrswi'), 'chris', '+cda');
    expect(new Set(formatRightsForResponse(acl.get('chris')!))).toEqual(new Set('lrswicdakxet'));
  });
});

describe('effective rights (RFC 4314 §2: ∪ positive − ∪ negative)', () => {
  it('combines users, groups, anyone, authenticated and negative entries', () => {
    let acl = set(EMPTY_ACL, 'anyone', 'lr');
    acl = set(acl, 'group:sales', 'lrsw');
    acl = set(acl, 'carol', 'i');
    acl = set(acl, '-bob', 'l');
    acl = set(acl, '-group:interns', 'w');
    expect(eff(acl, 'dave')).toBe('lr');
    expect(eff(acl, 'bob')).toBe('r');
    expect(eff(acl, 'carol', ['sales'])).toBe('lrswi');
    expect(eff(acl, 'erin', ['sales', 'interns'])).toBe('lrs');
    expect(eff(set(EMPTY_ACL, 'authenticated', 'l'), 'zed')).toBe('l');
  });

  it('always gives the owner l and a', () => {
    const acl = set(set(EMPTY_ACL, '-owner', 'lrswipkxtea'), '-anyone', 'la');
    expect(eff(acl, 'owner')).toBe('la');
    expect(eff(EMPTY_ACL, 'owner')).toBe('la');
    expect(eff(set(EMPTY_ACL, 'owner', 'lrswipkxtea'), 'owner')).toBe('lrswipkxtea');
  });

  it('equals the definition for random ACLs, also for user names that look like other identifiers', () => {
    const names = ['u1', 'u2', 'any', 'anyone1', 'group', 'g1', 'authenticate'];
    const groups = ['g1', 'g2', 'u1'];
    const ident = fc.constantFrom(...names, ...groups.map((g) => `group:${g}`), 'anyone', 'authenticated');
    const entry = fc.tuple(fc.boolean(), ident, fc.integer({ min: 0, max: 2047 }));
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 12 }), fc.constantFrom(...names), fc.subarray(groups), (entries, user, memberOf) => {
        let acl: Acl = EMPTY_ACL;
        for (const [neg, who, r] of entries) acl = setAcl(acl, id((neg ? '-' : '') + who), { mode: 'replace', rights: r as Rights });
        let pos = 0;
        let negs = 0;
        for (const [key, r] of acl) {
          const bare = key.replace(/^-/, '');
          const matches = bare === user || bare === 'anyone' || bare === 'authenticated' || (bare.startsWith('group:') && memberOf.includes(bare.slice(6)));
          if (!matches) continue;
          if (key.startsWith('-')) negs |= r;
          else pos |= r;
        }
        expect(effectiveRights(acl, { user, groups: new Set(memberOf) }, 'someone-else')).toBe(pos & ~negs);
      }),
    );
  });

  it('gives the same rights from a packed ACL (the agent cache) and from explainRights, for users whose names look like other identifiers too', () => {
    const names = ['u1', 'u2', 'any', 'anyone1', 'group', 'g1', 'authenticate'];
    const groups = ['g1', 'g2', 'u1'];
    const ident = fc.constantFrom(...names, ...groups.map((g) => `group:${g}`), 'anyone', 'authenticated');
    const entry = fc.tuple(fc.boolean(), ident, fc.integer({ min: 0, max: 2047 }));
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 12 }), fc.constantFrom(...names), fc.subarray(groups), fc.constantFrom(...names), (entries, user, memberOf, owner) => {
        let acl: Acl = EMPTY_ACL;
        for (const [neg, who, r] of entries) acl = setAcl(acl, id((neg ? '-' : '') + who), { mode: 'replace', rights: r as Rights });
        const packed = packAcl(acl);
        expect([...packedEntries(packed)]).toEqual([...acl]);
        const subject = { user, groups: new Set(memberOf) };
        expect(effectivePackedRights(packed, subject, owner)).toBe(effectiveRights(acl, subject, owner));
        // The agent indexes a packed ACL under the same grantees as the store's index.
        const grantees: string[] = [];
        forEachPackedGrantee(packed, owner, (g) => grantees.push(g));
        expect(grantees).toEqual([...shareGrantees(acl, owner)]);
        // The explanation (status page, acl explain) comes to the same rights by the same chain.
        expect(explainRights(acl, subject, owner).rights).toBe(effectiveRights(acl, subject, owner));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('explainRights', () => {
  it('names every entry that applies and why, and comes to exactly the effective rights', () => {
    let acl = set(EMPTY_ACL, 'bob', 'lr');
    acl = set(acl, 'group:team', 'lrsw');
    acl = set(acl, 'anyone', 'l');
    acl = set(acl, '-group:temps', 'w');
    acl = set(acl, 'carol', 'lrswi');
    const e = explainRights(acl, { user: 'bob', groups: new Set(['team', 'temps']) }, 'alice');
    expect(e.matched.map((m) => [m.identifier, formatRights(m.rights), m.reason, m.negative])).toEqual([
      ['anyone', 'l', 'anyone', false],
      ['bob', 'lr', 'user', false],
      ['group:team', 'lrsw', 'group', false],
      ['-group:temps', 'w', 'group', true],
    ]);
    expect([formatRights(e.granted), formatRights(e.denied), formatRights(e.rights), e.owner]).toEqual(['lrsw', 'w', 'lrs', false]);
    // Every other entry is there too, with why it does not apply.
    const other = explainRights(set(acl, '-group:others', 'r'), { user: 'bob', groups: new Set(['team']) }, 'alice');
    expect(other.unmatched.map((m) => [m.identifier, m.reason])).toEqual([
      ['carol', 'other-user'],
      ['-group:others', 'not-in-group'],
      ['-group:temps', 'not-in-group'],
    ]);
    expect(other.matched.length + other.unmatched.length).toBe(6);
    const owner = explainRights(set(EMPTY_ACL, '-alice', 'la'), { user: 'alice', groups: new Set() }, 'alice');
    expect([formatRights(owner.rights), owner.owner]).toEqual(['la', true]);
  });

});

describe('LISTRIGHTS (RFC 4314 §3.7, §2.1.1)', () => {
  it('lists every right untied, with c and d, like the anyone example', () => {
    expect(listRights(id('anyone').principal, false, 'alice')).toEqual({
      required: '',
      optional: ['l', 'r', 's', 'w', 'i', 'p', 'k', 'x', 't', 'e', 'a', 'c', 'd'],
    });
  });
  it('gives the owner l and a as required rights', () => {
    const r = listRights(id('alice').principal, false, 'alice');
    expect(r.required).toBe('la');
    expect(r.optional).toEqual(['r', 's', 'w', 'i', 'p', 'k', 'x', 't', 'e', 'c', 'd']);
    expect(listRights(id('alice').principal, true, 'alice').required).toBe('');
  });
  it('honours a narrower grantable set and omits c/d without members', () => {
    expect(listRights(id('bob').principal, false, 'alice', parseRights('lrs'))).toEqual({ required: '', optional: ['l', 'r', 's'] });
    expect(listRights(id('bob').principal, false, 'alice', parseRights('lrk')).optional).toEqual(['l', 'r', 'k', 'c']);
  });
});
