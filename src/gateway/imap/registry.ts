import type { Target } from './session-core.js';
import { type SessionCore, callOptions as opts, mailshareName } from './session-core.js';

/**
 * Keeping mailshare's registry of shared mailboxes in step with what the
 * Dovecots did: DELETE, RENAME and CREATE (inside a shared mailbox) done
 * over IMAP update the registered mailbox and its ACL.
 */
export async function registryDelete(s: SessionCore, owner: string, wire: string): Promise<void> {
  const normalized = mailshareName(wire);
  if (normalized === undefined) return;
  if (s.ctx.agent.access(s.ctx.tenant, owner, owner, normalized) === undefined) return;
  await s.ctx.api.call((c, cb) => c.mailboxes.deleteMailbox({ tenant: s.ctx.tenant, mailbox: `${owner}/${normalized}`, expectedRevision: 0, actor: owner }, s.ctx.metadata, opts(), cb)).catch(
    (err: unknown) => s.ctx.log.warn({ tenant: s.ctx.tenant, user: owner, mailbox: normalized, err: String(err) }, 'mailbox deleted in IMAP but its registration remains'),
  );
}

export async function registryRename(s: SessionCore, owner: string, fromWire: string, toWire: string): Promise<void> {
  const a = mailshareName(fromWire);
  const b = mailshareName(toWire);
  if (a === undefined || b === undefined) return;
  if (s.ctx.agent.access(s.ctx.tenant, owner, owner, a) === undefined) return;
  await s.ctx.api.call((c, cb) => c.mailboxes.renameMailbox({ tenant: s.ctx.tenant, mailbox: `${owner}/${a}`, newName: b, expectedRevision: 0, actor: owner }, s.ctx.metadata, opts(), cb))
    .then((res) => s.ctx.agent.waitForRevision((res as { revision?: number }).revision ?? 0).catch(() => undefined))
    .catch((err: unknown) => s.ctx.log.warn({ tenant: s.ctx.tenant, user: owner, mailbox: a, err: String(err) }, 'mailbox renamed in IMAP but its registration was not'));
}

/** A mailbox created inside a shared one is registered with its parent's ACL (RFC 4314 §4 leaves inheritance to the server). */
export async function registryCreate(s: SessionCore, t: Target & { kind: 'shared' }, parent: Target & { kind: 'shared' }): Promise<void> {
  const md = s.ctx.metadata;
  const tenant = s.ctx.tenant;
  try {
    await s.ctx.api.call((c, cb) => c.mailboxes.createMailbox({ tenant, owner: t.owner, name: t.name, actor: t.owner }, md, opts(), cb));
    const acl = await s.ctx.api.call<{ entries: Array<{ identifier: string; rights: string }> }>((c, cb) => c.acl.getAcl({ tenant, mailbox: `${t.owner}/${parent.name}`, actor: t.owner }, md, opts(), cb));
    let revision = 0;
    for (const e of acl.entries) {
      if (e.identifier === t.owner) continue;
      const res = await s.ctx.api.call<{ revision: number }>((c, cb) =>
        c.acl.setAcl({ tenant, mailbox: `${t.owner}/${t.name}`, identifier: e.identifier, rights: e.rights.replace(/[cd]/g, ''), expectedRevision: 0, actor: t.owner }, md, opts(), cb),
      );
      revision = res.revision;
    }
    await s.ctx.agent.waitForRevision(revision).catch(() => undefined);
  } catch (err) {
    s.ctx.log.warn({ tenant, user: t.owner, mailbox: t.name, err: String(err) }, 'mailbox created in IMAP but not registered');
  }
}
