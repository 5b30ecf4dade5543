import type { Command } from 'commander';
import { type Mailbox, MailboxServiceClient } from '../gen/mailshare/v1/mailbox.js';
import type { ConnectionFlags } from './connection.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { allPages, parseRevisionOption, withService } from './run.js';
import { type WaitFlags, appliedLine, requireApplied, waitApplied, waitAppliedOption } from './wait-applied.js';

type Flags = ConnectionFlags & WaitFlags & { output: OutputFormat; expectedRevision?: number; dryRun?: boolean };

/** `mailshare mailbox create|get|list|rename|delete` and `mailshare share list`. */
export function registerMailbox(program: Command, io: CliIo): void {
  const mailbox = program.command('mailbox').description('register shared mailboxes (addressed as OWNER/NAME)');
  const svc = (flags: Flags, fn: Parameters<typeof withService<MailboxServiceClient>>[3]) => withService(io, flags, MailboxServiceClient, fn);
  const show = (flags: Flags, m: Mailbox): void => {
    if (flags.output === 'json') printJson(io, m);
    else io.out(renderMailbox(m));
  };

  addConnectionOptions(
    mailbox
      .command('create')
      .description('register a mailbox; its ACL starts as the owner with all rights')
      .argument('<tenant>', 'tenant id')
      .argument('<owner>', 'owner user id')
      .argument('<name>', 'mailbox name, "/" between levels')
      .option('--dry-run', 'check exactly as the real call, write nothing')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, owner: string, name: string, flags: Flags) =>
    svc(flags, async (api) => {
      const m = await api.createMailbox({ tenant, owner, name, actor: '', dryRun: flags.dryRun === true });
      if (flags.dryRun) return flags.output === 'json' ? printJson(io, { ...m, dryRun: true }) : io.out(`would create ${m.mailbox}; nothing written\n`);
      const applied = await waitApplied(io, flags, m.revision);
      if (flags.output === 'json' && applied) printJson(io, { ...m, applied });
      else show(flags, m);
      if (applied && flags.output !== 'json') io.out(appliedLine(applied));
      requireApplied(applied);
    }),
  );

  addConnectionOptions(
    mailbox.command('get').description('show a mailbox and its ACL').argument('<tenant>', 'tenant id').argument('<mailbox>', 'OWNER/NAME').addOption(outputOption()),
  ).action(async (tenant: string, ref: string, flags: Flags) => svc(flags, async (api) => show(flags, await api.getMailbox({ tenant, mailbox: ref, actor: '' }))));

  addConnectionOptions(
    mailbox
      .command('list')
      .description("list registered mailboxes of a tenant, or of one owner")
      .argument('<tenant>', 'tenant id')
      .argument('[owner]', 'owner user id')
      .addOption(outputOption()),
  ).action(async (tenant: string, owner: string | undefined, flags: Flags) =>
    svc(flags, async (api) => {
      const all = await allPages(async (pageToken) => {
        const r = await api.listMailboxes({ tenant, owner: owner ?? '', pageSize: 1000, pageToken });
        return { items: r.mailboxes, next: r.nextPageToken };
      });
      if (flags.output === 'json') printJson(io, { mailboxes: all });
      else io.out(table(['MAILBOX', 'ID', 'ACL'], all.map((m) => [m.mailbox, m.id, m.acl.map((e) => `${e.identifier}=${e.rights}`).join(' ')])));
    }),
  );

  addConnectionOptions(
    mailbox
      .command('rename')
      .description('rename a mailbox and the registered mailboxes below it, keeping ACLs')
      .argument('<tenant>', 'tenant id')
      .argument('<mailbox>', 'OWNER/NAME')
      .argument('<new-name>', 'new NAME (same owner)')
      .option('--expected-revision <rev>', 'apply only at this revision', parseRevisionOption)
      .option('--dry-run', 'check exactly as the real call, write nothing: every mailbox it would rename')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, ref: string, newName: string, flags: Flags) =>
    svc(flags, async (api) => {
      const r = await api.renameMailbox({ tenant, mailbox: ref, newName, expectedRevision: flags.expectedRevision ?? 0, actor: '', dryRun: flags.dryRun === true });
      if (flags.dryRun) return flags.output === 'json' ? printJson(io, { ...r, dryRun: true }) : io.out(`${r.mailboxes.map((m) => `would rename to ${m.mailbox}\n`).join('')}nothing written\n`);
      const applied = await waitApplied(io, flags, Math.max(0, ...r.mailboxes.map((m) => m.revision)));
      if (flags.output === 'json') printJson(io, { ...r, ...(applied ? { applied } : {}) });
      else io.out(r.mailboxes.map((m) => `renamed to ${m.mailbox}\n`).join('') + (applied ? appliedLine(applied) : ''));
      requireApplied(applied);
    }),
  );

  addConnectionOptions(
    mailbox
      .command('delete')
      .description('delete a mailbox with its ACL and index entries')
      .argument('<tenant>', 'tenant id')
      .argument('<mailbox>', 'OWNER/NAME')
      .option('--expected-revision <rev>', 'apply only at this revision', parseRevisionOption)
      .option('--dry-run', 'check exactly as the real call, write nothing: whose access would end')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, ref: string, flags: Flags) =>
    svc(flags, async (api) => {
      const r = await api.deleteMailbox({ tenant, mailbox: ref, expectedRevision: flags.expectedRevision ?? 0, actor: '', dryRun: flags.dryRun === true });
      if (flags.dryRun) {
        if (flags.output === 'json') return printJson(io, { mailbox: ref, dryRun: true, ...r });
        return io.out(`would delete ${ref}; nothing written\n${r.changes.length ? `access that would end:\n${r.changes.map((c) => `  ${c.who}: ${c.before}\n`).join('')}` : ''}`);
      }
      const applied = await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, { deleted: ref, revision: r.revision, ...(applied ? { applied } : {}) });
      else io.out(`deleted ${ref}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  const share = program.command('share').description('what is shared with whom');
  addConnectionOptions(
    share
      .command('list')
      .description("other users' mailboxes a user can see (has \"l\" on), with the user's rights")
      .argument('<tenant>', 'tenant id')
      .argument('<user>', 'user id')
      .addOption(outputOption()),
  ).action(async (tenant: string, user: string, flags: Flags) =>
    svc(flags, async (api) => {
      const all = await allPages(async (pageToken) => {
        const r = await api.listSharedWith({ tenant, user, pageSize: 1000, pageToken });
        return { items: r.mailboxes, next: r.nextPageToken };
      });
      if (flags.output === 'json') printJson(io, { mailboxes: all });
      else io.out(table(['MAILBOX', 'RIGHTS'], all.map((m) => [m.mailbox, m.rights])));
    }),
  );
}

function renderMailbox(m: Mailbox): string {
  return (
    [`mailbox:   ${m.mailbox}`, `tenant:    ${m.tenant}`, `id:        ${m.id}`, `created:   ${m.createdAt?.toISOString() ?? '-'}`, `revision:  ${m.revision}`, 'acl:'].join('\n') +
    '\n' +
    m.acl.map((e) => `  ${e.identifier} ${e.rights}\n`).join('')
  );
}
