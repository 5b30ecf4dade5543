/** The only bridge between protobuf messages and domain/store values. */
import { type Acl, aclEntries } from '../domain/acl.js';
import { DomainError } from '../domain/errors.js';
import { type Rights, formatRightsForResponse } from '../domain/rights.js';
import type { AuditRecord as AuditRecordPb } from '../gen/mailshare/v1/audit.js';
import type { Group, Tenant, TenantSettings as TenantSettingsPb } from '../gen/mailshare/v1/directory.js';
import type { AclEntry, Mailbox } from '../gen/mailshare/v1/mailbox.js';
import type { AuditRecord } from '../store/audit-store.js';
import { type GroupRecord, MAX_SHARES_PER_MAILBOX, type TenantRecord, type TenantSettings } from '../store/directory-store.js';
import type { MailboxRecord } from '../store/mailbox-store.js';

export function rightsToPb(r: Rights): string {
  return formatRightsForResponse(r);
}

export function aclToPb(acl: Acl): AclEntry[] {
  return aclEntries(acl).map(([identifier, r]) => ({ identifier, rights: rightsToPb(r) }));
}

export function tenantToPb(t: TenantRecord): Tenant {
  return {
    id: t.id,
    settings: { allowAnyone: t.settings.allowAnyone, maxSharesPerMailbox: t.settings.maxSharesPerMailbox },
    createdAt: t.createdAt,
    revision: t.revision,
    domains: [...t.domains],
  };
}

/** Validates the settings a client sent; unset fields stay unset. */
export function settingsFromPb(s: TenantSettingsPb | undefined, field = 'settings'): Partial<TenantSettings> {
  const out: { allowAnyone?: boolean; maxSharesPerMailbox?: number } = {};
  if (s?.allowAnyone !== undefined) out.allowAnyone = s.allowAnyone;
  if (s?.maxSharesPerMailbox !== undefined) {
    const n = s.maxSharesPerMailbox;
    if (!Number.isInteger(n) || n < 1 || n > MAX_SHARES_PER_MAILBOX) {
      const f = `${field}.max_shares_per_mailbox`;
      throw new DomainError('invalid_argument', `${f}: must be between 1 and ${MAX_SHARES_PER_MAILBOX}`, { field: f });
    }
    out.maxSharesPerMailbox = n;
  }
  return out;
}

export function groupToPb(g: GroupRecord): Group {
  return { tenant: g.tenant, name: g.name, members: [...g.members], revision: g.revision, effects: [] };
}

export function mailboxToPb(m: MailboxRecord): Mailbox {
  return {
    tenant: m.tenant,
    mailbox: `${m.owner}/${m.name}`,
    owner: m.owner,
    name: m.name,
    id: m.id,
    acl: aclToPb(m.acl),
    createdAt: m.createdAt,
    revision: m.revision,
  };
}

export function auditToPb(r: AuditRecord): AuditRecordPb {
  return {
    time: r.time,
    tenant: r.tenant,
    who: r.who,
    actor: r.actor,
    action: r.action,
    target: r.target,
    identifier: r.identifier,
    before: r.before,
    after: r.after,
    revision: r.revision,
  };
}

/** expected_revision: 0 = unconditional, otherwise a positive revision. */
export function parseExpectedRevision(n: number, field = 'expected_revision'): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new DomainError('invalid_argument', `${field}: must be 0 or a revision`, { field });
  return n;
}
