import { describe, expect, it } from 'vitest';
import { DEFAULT_ALLOWED_ADDRESSES, addressAllowed, parseAllowList } from '../../src/domain/address-allowlist.js';
import { DomainError } from '../../src/domain/errors.js';

describe('node address allowlist', () => {
  it('matches IPv4 and IPv6 CIDRs and exact host names', () => {
    const list = parseAllowList(['10.1.0.0/16', '2001:db8::/32', 'imap1.example.net', '192.0.2.7', '::ffff:0:0/96']);
    expect(addressAllowed('10.1.2.3:143', list)).toBe(true);
    expect(addressAllowed('10.2.0.1:143', list)).toBe(false);
    expect(addressAllowed('[2001:db8:1::5]:143', list)).toBe(true);
    expect(addressAllowed('[2001:db9::5]:143', list)).toBe(false);
    expect(addressAllowed('IMAP1.example.net:143', list)).toBe(true);
    expect(addressAllowed('imap2.example.net:143', list)).toBe(false);
    expect(addressAllowed('192.0.2.7:143', list)).toBe(true);
    expect(addressAllowed('192.0.2.8:143', list)).toBe(false);
    expect(addressAllowed('[::ffff:10.9.8.7]:143', list)).toBe(true);
  });

  it('allows loopback and private ranges by default, nothing else', () => {
    const list = parseAllowList(DEFAULT_ALLOWED_ADDRESSES);
    for (const ok of ['127.0.0.1:1', '10.0.0.1:1', '172.31.255.1:1', '192.168.1.1:1', '[::1]:1', '[fd00::1]:1']) expect(addressAllowed(ok, list), ok).toBe(true);
    for (const no of ['8.8.8.8:1', '172.32.0.1:1', '[2001:db8::1]:1', 'evil.example.com:1']) expect(addressAllowed(no, list), no).toBe(false);
    expect(parseAllowList(['0.0.0.0/0', '::/0']).length).toBe(2);
    expect(addressAllowed('8.8.8.8:1', parseAllowList(['0.0.0.0/0']))).toBe(true);
  });

  it('refuses entries that are neither, naming the entry', () => {
    for (const bad of ['10.0.0.0/33', '10.0.0/8', 'a b', '::1/129', '1.2.3.4/x']) {
      expect(() => parseAllowList([bad])).toThrow(DomainError);
      try {
        parseAllowList(['127.0.0.0/8', bad]);
      } catch (e) {
        expect((e as DomainError).field).toBe('placement.allowedAddresses[1]');
      }
    }
  });
});
