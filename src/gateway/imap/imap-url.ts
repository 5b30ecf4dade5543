/**
 * The IMAP URLs CATENATE takes (RFC 5092 in the relative form RFC 4469 §5
 * uses): `/MAILBOX[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]`,
 * the mailbox name percent-encoded UTF-8. What the gateway needs to read a
 * part from another node itself; anything else is left to the home Dovecot
 * or refused.
 */
export interface MessageUrl {
  /** UTF-8. */
  readonly mailbox: string;
  readonly uidvalidity?: number;
  readonly uid: number;
  /** Upper case, digits, dots and letters only (e.g. "HEADER", "1.TEXT"); "" for the whole message. */
  readonly section: string;
  readonly partial?: { readonly offset: number; readonly length?: number };
}

const NUMBER = /^[1-9]\d{0,9}$/;

export function parseMessageUrl(url: string): MessageUrl | undefined {
  if (!url.startsWith('/') || url.startsWith('//')) return undefined;
  // The mailbox name may hold the hierarchy separator: it runs up to the first "/;".
  const segments = url.slice(1).split('/');
  const first = segments.findIndex((p) => p.startsWith(';'));
  if (first <= 0) return undefined;
  const head = segments.slice(0, first).join('/');
  const parts = segments.slice(first);
  const semi = head.indexOf(';');
  let mailbox: string;
  try {
    mailbox = decodeURIComponent(semi < 0 ? head : head.slice(0, semi));
  } catch {
    return undefined;
  }
  if (mailbox === '') return undefined;
  let uidvalidity: number | undefined;
  if (semi >= 0) {
    const m = /^;UIDVALIDITY=(\d+)$/i.exec(head.slice(semi));
    if (!m || !NUMBER.test(m[1]!)) return undefined;
    uidvalidity = Number(m[1]);
  }
  let uid: number | undefined;
  let section = '';
  let partial: MessageUrl['partial'];
  for (const p of parts) {
    const m = /^;(UID|SECTION|PARTIAL)=(.*)$/i.exec(p);
    if (!m) return undefined;
    const [, key, value] = m as unknown as [string, string, string];
    switch (key.toUpperCase()) {
      case 'UID':
        if (uid !== undefined || !NUMBER.test(value)) return undefined;
        uid = Number(value);
        break;
      case 'SECTION': {
        let s: string;
        try {
          s = decodeURIComponent(value).toUpperCase();
        } catch {
          return undefined;
        }
        if (!/^[0-9A-Z.]*$/.test(s)) return undefined;
        section = s;
        break;
      }
      case 'PARTIAL': {
        const pm = /^(\d{1,10})(?:\.([1-9]\d{0,9}))?$/.exec(value);
        if (!pm) return undefined;
        partial = { offset: Number(pm[1]), ...(pm[2] ? { length: Number(pm[2]) } : {}) };
        break;
      }
    }
  }
  if (uid === undefined) return undefined;
  return { mailbox, ...(uidvalidity !== undefined ? { uidvalidity } : {}), uid, section, ...(partial ? { partial } : {}) };
}
