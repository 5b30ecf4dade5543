import * as grpc from '@grpc/grpc-js';
import { formatRights, formatRightsForResponse, rightsOf } from '../../domain/rights.js';
import { splitArgs } from '../imap-syntax.js';
import { type ImapValue, astring } from './parser.js';
import { ImapNo, type SessionCore, bad, callOptions as opts, mailshareName, nonexistent } from './session-core.js';
import { quote, str } from './wire.js';

/**
 * The ACL commands (RFC 4314 §3), answered from mailshare: the user's own
 * mailboxes and the shared ones the user may see alike.
 */
export async function aclCommand(s: SessionCore, tag: string, name: string, args: ImapValue[]): Promise<void> {
  const counts: Record<string, number> = { GETACL: 1, SETACL: 3, DELETEACL: 2, LISTRIGHTS: 2, MYRIGHTS: 1 };
  const values = args.map(astring);
  if (args.length !== counts[name] || values.some((v) => v === undefined)) throw bad(tag, `${name} takes ${counts[name]} argument(s)`);
  const [wireName, rawSecond, third] = values as string[];
  const second = name === 'SETACL' || name === 'DELETEACL' || name === 'LISTRIGHTS' ? identifierInTenant(s, tag, rawSecond!) : rawSecond;
  const t = s.resolve(wireName!);
  if (t.kind === 'parent' || t.kind === 'invalid') throw nonexistent(tag);
  let owner = s.ctx.user;
  let mbName: string;
  if (t.kind === 'shared') {
    owner = t.owner;
    mbName = t.name;
    s.visible(tag, t);
  } else {
    const own = mailshareName(t.wire);
    if (own === undefined) throw nonexistent(tag);
    mbName = own;
  }
  const mailbox = `${owner}/${mbName}`;
  const registered = s.ctx.agent.access(s.ctx.tenant, s.ctx.user, owner, mbName) !== undefined;
  const base = { tenant: s.ctx.tenant, mailbox, actor: s.ctx.user };
  const out: string[] = [];
  const qName = quote(wireName!);
  await s.quiet();
  if (!registered && owner === s.ctx.user && name !== 'SETACL') {
    // The user's own mailbox, never shared: the owner holds every right (RFC 4314 §2).
    if (!(await homeExists(s, t.kind === 'home' ? t.wire : ''))) throw nonexistent(tag);
    if (name === 'GETACL') out.push(`* ACL ${qName} ${quote(owner)} ${formatRights(rightsOf('lrswipkxtea'))}`);
    if (name === 'MYRIGHTS') out.push(`* MYRIGHTS ${qName} ${formatRightsForResponse(rightsOf('lrswipkxtea'))}`);
    if (name === 'DELETEACL') throw new ImapNo(`${tag} OK DELETEACL completed\r\n`);
    if (name === 'LISTRIGHTS') {
      const id = second!;
      out.push(id === owner ? `* LISTRIGHTS ${qName} ${quote(id)} la r s w i p k x t e` : `* LISTRIGHTS ${qName} ${quote(id)} "" l r s w i p k x t e a`);
    }
  } else {
    try {
      switch (name) {
        case 'GETACL': {
          const res = await s.ctx.api.call<{ entries: Array<{ identifier: string; rights: string }> }>((c, cb) => c.acl.getAcl(base, s.ctx.metadata, opts(), cb));
          out.push(`* ACL ${qName}${res.entries.map((e) => ` ${quote(e.identifier)} ${quote(e.rights)}`).join('')}`);
          break;
        }
        case 'SETACL': {
          if (!registered) {
            if (!(await homeExists(s, t.kind === 'home' ? t.wire : ''))) throw nonexistent(tag);
            await s.ctx.api.call((c, cb) => c.mailboxes.createMailbox({ tenant: s.ctx.tenant, owner, name: mbName, actor: s.ctx.user }, s.ctx.metadata, opts(), cb)).catch((err: unknown) => {
              if ((err as grpc.ServiceError).code !== grpc.status.ALREADY_EXISTS) throw err;
            });
          }
          const res = await s.ctx.api.call<{ revision: number }>((c, cb) =>
            c.acl.setAcl({ ...base, identifier: second!, rights: third!, expectedRevision: 0 }, s.ctx.metadata, opts(), cb),
          );
          await s.ctx.agent.waitForRevision(res.revision);
          break;
        }
        case 'DELETEACL': {
          const res = await s.ctx.api.call<{ revision: number }>((c, cb) => c.acl.deleteAcl({ ...base, identifier: second!, expectedRevision: 0 }, s.ctx.metadata, opts(), cb));
          await s.ctx.agent.waitForRevision(res.revision);
          break;
        }
        case 'LISTRIGHTS': {
          const res = await s.ctx.api.call<{ identifier: string; required: string; optional: string[] }>((c, cb) =>
            c.acl.listRights({ ...base, identifier: second! }, s.ctx.metadata, opts(), cb),
          );
          out.push(`* LISTRIGHTS ${qName} ${quote(res.identifier)} ${quote(res.required)}${res.optional.map((o) => ` ${o}`).join('')}`);
          break;
        }
        case 'MYRIGHTS': {
          const res = await s.ctx.api.call<{ rights: string }>((c, cb) => c.acl.myRights({ tenant: s.ctx.tenant, mailbox, user: s.ctx.user }, s.ctx.metadata, opts(), cb));
          out.push(`* MYRIGHTS ${qName} ${quote(res.rights)}`);
          break;
        }
      }
    } catch (err) {
      if (err instanceof ImapNo) throw err;
      throw new ImapNo(imapError(tag, err));
    }
  }
  for (const l of out) s.write(`${l}\r\n`);
  s.write(`${tag} OK ${name} completed\r\n`);
}

export async function homeExists(s: SessionCore, wire: string): Promise<boolean> {
  if (wire === '') return false;
  const res = await s.internal(s.home, 'LIST', [str(''), str(wire)]);
  return res.status === 'OK' && res.untagged.some((p) => {
    const a = splitArgs(p);
    return a.length >= 5 && a[4]!.value === wire && !/\\Noselect|\\NonExistent/i.test(a[2]!.raw);
  });
}

function imapWords(details: string): string {
  const need = /needs the "([a-z]+)" right/.exec(details);
  if (need) return `You need the "${need[1]}" right on this mailbox for that`;
  // "field: message" → message, with its first letter up.
  const text = details.replace(/[\r\n]/g, ' ').replace(/^[a-z_]+(\[\d+\])?: /, '');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * A coordinator error as the tagged IMAP response (RFC 5530 response
 * codes), in IMAP words: the API's field names and mailshare's internal
 * mailbox names ("actor: bob needs … on alice/Projects") are not shown.
 */
function imapError(tag: string, err: unknown): string {
  const e = err as grpc.ServiceError;
  const msg = imapWords(e.details ?? String(err));
  switch (e.code) {
    case grpc.status.NOT_FOUND:
      return `${tag} NO [NONEXISTENT] ${msg}\r\n`;
    case grpc.status.PERMISSION_DENIED:
      return `${tag} NO [NOPERM] ${msg}\r\n`;
    case grpc.status.INVALID_ARGUMENT:
      return `${tag} BAD ${msg}\r\n`;
    case grpc.status.FAILED_PRECONDITION:
    case grpc.status.ABORTED:
    case grpc.status.ALREADY_EXISTS:
    case grpc.status.RESOURCE_EXHAUSTED:
      return `${tag} NO [CANNOT] ${msg}\r\n`;
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return `${tag} NO [UNAVAILABLE] ${msg}\r\n`;
    default:
      return `${tag} NO [SERVERBUG] ${msg}\r\n`;
  }
}

/**
 * An ACL identifier as the user wrote it, in mailshare's terms: users are
 * named without their domain, so `bob@acme.test` is bob when acme.test is a
 * domain of the user's own tenant. An identifier naming another domain (of
 * another tenant, or nobody's) is refused: a user shares only within their
 * tenant.
 */
function identifierInTenant(s: SessionCore, tag: string, id: string): string {
  const negative = id.startsWith('-') ? '-' : '';
  const bare = id.slice(negative.length);
  const at = bare.lastIndexOf('@');
  if (at < 0) return id;
  const domain = bare.slice(at + 1).toLowerCase();
  if (s.ctx.agent.tenantOfDomain(domain) === s.ctx.tenant) return `${negative}${bare.slice(0, at)}`;
  throw new ImapNo(`${tag} NO [CANNOT] Mailboxes can only be shared with users of your own organisation\r\n`);
}
