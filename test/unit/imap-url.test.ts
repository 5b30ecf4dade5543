import { describe, expect, it } from 'vitest';
import { parseMessageUrl } from '../../src/gateway/imap/imap-url.js';

describe('CATENATE URLs (RFC 5092 relative form)', () => {
  it('reads mailbox (with its hierarchy), UIDVALIDITY, UID, SECTION and PARTIAL', () => {
    expect(parseMessageUrl('/Shared/alice/Team;UIDVALIDITY=42/;UID=7/;SECTION=1.TEXT/;PARTIAL=10.20')).toEqual({
      mailbox: 'Shared/alice/Team',
      uidvalidity: 42,
      uid: 7,
      section: '1.TEXT',
      partial: { offset: 10, length: 20 },
    });
    expect(parseMessageUrl('/INBOX/;uid=3')).toEqual({ mailbox: 'INBOX', uid: 3, section: '' });
    expect(parseMessageUrl('/Caf%C3%A9/;UID=1/;section=header')).toEqual({ mailbox: 'Café', uid: 1, section: 'HEADER' });
  });

  it('refuses what it cannot read exactly', () => {
    for (const bad of ['', 'INBOX/;UID=1', '//host/INBOX/;UID=1', '/;UID=1', '/INBOX', '/INBOX/;UID=0', '/INBOX/;UID=x', '/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(FROM)', '/INBOX;UIDVALIDITY=/;UID=1', '/INBOX/;UID=1/;UID=2', '/INBOX/;UID=1/;PARTIAL=1.0', '/%E0%A4/;UID=1', '/INBOX/;UID=1/;EXPIRE=2026']) {
      expect(parseMessageUrl(bad), bad).toBeUndefined();
    }
  });
});
