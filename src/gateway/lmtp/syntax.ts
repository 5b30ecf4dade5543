/**
 * The SMTP/LMTP command grammar the gateway accepts (RFC 5321 §4.1, RFC
 * 2033, RFC 3030 BDAT, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
 * SMTPUTF8): each command is parsed into values, and what goes upstream is
 * rebuilt from them.
 */

/** An ESMTP parameter (RFC 5321 §4.1.2 esmtp-param): KEYWORD or KEYWORD=value. */
export interface Param {
  readonly key: string;
  readonly value?: string;
}

export type LmtpCommand =
  | { readonly verb: 'LHLO'; readonly domain: string }
  | { readonly verb: 'MAIL'; readonly from: string; readonly params: readonly Param[] }
  | { readonly verb: 'RCPT'; readonly to: string; readonly params: readonly Param[] }
  | { readonly verb: 'DATA' | 'RSET' | 'NOOP' | 'QUIT' }
  | { readonly verb: 'BDAT'; readonly size: number; readonly last: boolean }
  | { readonly verb: 'VRFY' | 'EXPN' | 'HELP' | 'STARTTLS' | 'HELO' | 'EHLO' }
  | { readonly verb: 'bad'; readonly reply: string };

const bad = (reply: string): LmtpCommand => ({ verb: 'bad', reply });

/** Dot-atom or quoted-string local part @ domain (or an address literal); `null` path <> allowed for MAIL only. */
const LOCAL_DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\xff-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\xff-]+)*$/;
const LOCAL_QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\x20-\x7e])*"$/;
const DOMAIN = /^(?:[A-Za-z0-9\x80-\xff](?:[A-Za-z0-9\x80-\xff-]{0,61}[A-Za-z0-9\x80-\xff])?)(?:\.[A-Za-z0-9\x80-\xff](?:[A-Za-z0-9\x80-\xff-]{0,61}[A-Za-z0-9\x80-\xff])?)*$/;
const ADDRESS_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]{1,64}\]$/;

/** A mailbox (RFC 5321 §4.1.2 Mailbox), or a bare local part where LMTP allows one (Dovecot does). */
export function parseMailbox(text: string, opts: { domainOptional?: boolean } = {}): string | undefined {
  if (text.length === 0 || text.length > 320) return undefined;
  const at = text.lastIndexOf('@');
  if (at < 0) return opts.domainOptional && (LOCAL_DOT_ATOM.test(text) || LOCAL_QUOTED.test(text)) ? text : undefined;
  const local = text.slice(0, at);
  const domain = text.slice(at + 1);
  if (local.length === 0 || local.length > 64) return undefined;
  if (!LOCAL_DOT_ATOM.test(local) && !LOCAL_QUOTED.test(local)) return undefined;
  if (!DOMAIN.test(domain) && !ADDRESS_LITERAL.test(domain)) return undefined;
  return text;
}

/** `<path> params…` after "FROM:" or "TO:"; source routes (`<@a,@b:x@y>`) are dropped, as RFC 5321 §4.1.1.3 allows. */
function pathAndParams(rest: string, opts: { nullPath: boolean; domainOptional: boolean }): { path: string; params: Param[] } | string {
  // A space before the path: a common client slip that servers tolerate (Dovecot's whitespace_before_path).
  const text = rest.replace(/^ /, '');
  if (!text.startsWith('<')) return 'path must be in angle brackets';
  const close = text.indexOf('>');
  if (close < 0) return 'unterminated path';
  let path = text.slice(1, close);
  if (path.startsWith('@')) {
    const colon = path.indexOf(':');
    if (colon < 0) return 'invalid source route';
    path = path.slice(colon + 1);
  }
  if (path === '') {
    if (!opts.nullPath) return 'empty path';
  } else if (parseMailbox(path, { domainOptional: opts.domainOptional }) === undefined) return 'invalid address';
  const params: Param[] = [];
  const after = text.slice(close + 1);
  if (after !== '' && !after.startsWith(' ')) return 'junk after path';
  for (const word of after.split(' ').filter((w) => w !== '')) {
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$/.exec(word);
    if (!m) return `invalid parameter ${word.slice(0, 40)}`;
    const key = m[1]!.toUpperCase();
    if (params.some((p) => p.key === key)) return `duplicate parameter ${key}`;
    params.push(m[2] === undefined ? { key } : { key, value: m[2] });
  }
  return { path, params };
}

/** One command line (without its CRLF). */
export function parseLmtpCommand(line: string): LmtpCommand {
  const sp = line.indexOf(' ');
  const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
  const rest = sp < 0 ? '' : line.slice(sp + 1);
  switch (verb) {
    case 'LHLO': {
      const domain = rest.trim();
      if (domain === '' || /\s/.test(domain) || !/^[\x21-\x7e]{1,255}$/.test(domain)) return bad('501 5.5.4 LHLO needs a domain');
      return { verb, domain };
    }
    case 'MAIL': {
      if (!/^FROM:/i.test(rest)) return bad('501 5.5.4 Syntax: MAIL FROM:<address>');
      const r = pathAndParams(rest.slice(5), { nullPath: true, domainOptional: false });
      if (typeof r === 'string') return bad(`501 5.5.4 MAIL FROM: ${r}`);
      return { verb, from: r.path, params: r.params };
    }
    case 'RCPT': {
      if (!/^TO:/i.test(rest)) return bad('501 5.5.4 Syntax: RCPT TO:<address>');
      const r = pathAndParams(rest.slice(3), { nullPath: false, domainOptional: true });
      if (typeof r === 'string') return bad(`501 5.5.4 RCPT TO: ${r}`);
      return { verb, to: r.path, params: r.params };
    }
    case 'BDAT': {
      const m = /^(\d{1,15})( LAST)?$/i.exec(rest);
      if (!m) return bad('501 5.5.4 Syntax: BDAT size [LAST]');
      return { verb, size: Number(m[1]), last: m[2] !== undefined };
    }
    case 'DATA':
    case 'RSET':
    case 'NOOP':
    case 'QUIT':
      // NOOP may carry a string (RFC 5321 §4.1.1.9); the others take none.
      if (rest !== '' && verb !== 'NOOP') return bad(`501 5.5.4 ${verb} takes no arguments`);
      return { verb };
    case 'VRFY':
    case 'EXPN':
    case 'HELP':
    case 'STARTTLS':
    case 'HELO':
    case 'EHLO':
      return { verb };
    default:
      return bad('500 5.5.2 Unknown command');
  }
}

/** Rebuilds parameters: KEY or KEY=value, as parsed. */
export function formatParams(params: readonly Param[]): string {
  return params.map((p) => (p.value === undefined ? ` ${p.key}` : ` ${p.key}=${p.value}`)).join('');
}

/** An SMTP reply: the code, the enhanced status code when there is one, and the text (lines joined). */
export interface Reply {
  readonly code: number;
  readonly enhanced?: string;
  readonly text: string;
}

/** One reply line (or the joined lines of a multi-line reply) made safe to send on: printable text, our CRLF. */
export function formatReply(r: Reply): string {
  const text = r.text.replace(/[^\x20-\x7e]/g, '?').slice(0, 400);
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''}${text ? ` ${text}` : ''}\r\n`;
}

/** A reply's class for a recipient: 2 delivered/accepted, 4 try later, 5 failed for good. */
export function replyClass(r: Reply): 2 | 4 | 5 {
  return r.code >= 200 && r.code < 300 ? 2 : r.code >= 500 ? 5 : 4;
}
