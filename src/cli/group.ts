import type { Command } from 'commander';
import { DirectoryServiceClient, type Group } from '../gen/mailshare/v1/directory.js';
import type { ConnectionFlags } from './connection.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { allPages, parseRevisionOption, withService } from './run.js';
import { type WaitFlags, appliedLine, requireApplied, waitApplied, waitAppliedOption } from './wait-applied.js';

type Flags = ConnectionFlags & WaitFlags & { output: OutputFormat; expectedRevision?: number; dryRun?: boolean };

/** `mailshare group set|add|remove|get|list|delete` (admin or tenant-admin). */
export function registerGroup(program: Command, io: CliIo): void {
  const group = program.command('group').description("manage a tenant's groups (identifiers group:NAME in ACLs)");
  const svc = (flags: Flags, fn: Parameters<typeof withService<DirectoryServiceClient>>[3]) => withService(io, flags, DirectoryServiceClient, fn);
  const show = (flags: Flags, g: Group): void => {
    if (flags.output === 'json') printJson(io, g);
    else io.out(`group:${g.name} (${g.members.length} members, revision ${g.revision})\n${g.members.map((m) => `  ${m}\n`).join('')}`);
  };
  /** A change's answer, after waiting until every node applied it when asked to. */
  const changed = async (flags: Flags, g: Group): Promise<void> => {
    if (flags.dryRun) {
      if (flags.output === 'json') return printJson(io, { ...g, dryRun: true });
      const lines = [`would make group:${g.name} ${g.members.join(' ') || '(no members)'}; nothing written`];
      if (g.effects.length === 0) lines.push("no user's effective rights would change");
      else lines.push('effective rights that would change:', ...g.effects.map((e) => (e.user ? `  ${e.user} on ${e.mailbox}: ${e.before || '(none)'} -> ${e.after || '(none)'}` : `  ${e.mailbox}`)));
      return io.out(`${lines.join('\n')}\n`);
    }
    const applied = await waitApplied(io, flags, g.revision);
    if (!applied) return show(flags, g);
    if (flags.output === 'json') printJson(io, { ...g, applied });
    else {
      show(flags, g);
      io.out(appliedLine(applied));
    }
    requireApplied(applied);
  };
  const writeCmd = (name: string, description: string) =>
    addConnectionOptions(
      group
        .command(name)
        .description(description)
        .argument('<tenant>', 'tenant id')
        .argument('<group>', 'group name')
        .option('--expected-revision <rev>', 'apply only at this revision', parseRevisionOption)
        .addOption(outputOption()),
    );

  const changeCmd = (name: string, description: string) =>
    writeCmd(name, description)
      .option('--dry-run', 'check and compute exactly as the real change, write nothing: the members and whose rights on which mailbox would change')
      .addOption(waitAppliedOption());

  changeCmd('set', "create the group or replace its members")
    .argument('[members...]', 'user ids')
    .action(async (tenant: string, name: string, members: string[], flags: Flags) =>
      svc(flags, async (api) => changed(flags, await api.setGroupMembers({ tenant, name, members, expectedRevision: flags.expectedRevision ?? 0 , dryRun: flags.dryRun === true }))),
    );
  changeCmd('add', 'add members, all in one change (creates the group if needed)')
    .argument('<members...>', 'user ids')
    .action(async (tenant: string, name: string, members: string[], flags: Flags) =>
      svc(flags, async (api) => changed(flags, await api.addGroupMember({ tenant, name, member: '', members, expectedRevision: flags.expectedRevision ?? 0 , dryRun: flags.dryRun === true }))),
    );
  changeCmd('remove', 'remove members, all in one change')
    .argument('<members...>', 'user ids')
    .action(async (tenant: string, name: string, members: string[], flags: Flags) =>
      svc(flags, async (api) => changed(flags, await api.removeGroupMember({ tenant, name, member: '', members, expectedRevision: flags.expectedRevision ?? 0 , dryRun: flags.dryRun === true }))),
    );
  writeCmd('delete', 'delete the group')
    .addOption(waitAppliedOption())
    .action(async (tenant: string, name: string, flags: Flags) =>
      svc(flags, async (api) => {
        const r = await api.deleteGroup({ tenant, name, expectedRevision: flags.expectedRevision ?? 0 });
        const applied = await waitApplied(io, flags, r.revision);
        if (flags.output === 'json') printJson(io, { deleted: `group:${name}`, ...(applied ? { applied } : {}) });
        else io.out(`deleted group:${name}\n${applied ? appliedLine(applied) : ''}`);
        requireApplied(applied);
      }),
    );

  addConnectionOptions(group.command('get').description('show a group').argument('<tenant>', 'tenant id').argument('<group>', 'group name').addOption(outputOption())).action(
    async (tenant: string, name: string, flags: Flags) => svc(flags, async (api) => show(flags, await api.getGroup({ tenant, name }))),
  );

  addConnectionOptions(group.command('list').description("list a tenant's groups").argument('<tenant>', 'tenant id').addOption(outputOption())).action(
    async (tenant: string, flags: Flags) =>
      svc(flags, async (api) => {
        const all = await allPages(async (pageToken) => {
          const r = await api.listGroups({ tenant, pageSize: 1000, pageToken });
          return { items: r.groups, next: r.nextPageToken };
        });
        if (flags.output === 'json') printJson(io, { groups: all });
        else io.out(table(['GROUP', 'MEMBERS'], all.map((g) => [g.name, g.members.join(' ')])));
      }),
  );
}
