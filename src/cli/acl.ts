import type { Command } from 'commander';
import { AclServiceClient } from '../gen/mailshare/v1/acl.js';
import type { ConnectionFlags } from './connection.js';
import { CliError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, allowDashOperands, outputOption, printJson, table } from './io.js';
import { parseRevisionOption, withService } from './run.js';
import { type WaitFlags, appliedLine, requireApplied, waitApplied, waitAppliedOption } from './wait-applied.js';

type Flags = ConnectionFlags & WaitFlags & { output: OutputFormat; expectedRevision?: number; dryRun?: boolean };

/**
 * `mailshare acl get|set|delete|rights|explain|listrights`. Negative identifiers
 * and "-RIGHTS" are operands, not flags (`mailshare acl set acme
 * alice/Projects -bob w`); "--" before them works too.
 */
export function registerAcl(program: Command, io: CliIo): void {
  const acl = program.command('acl').description('RFC 4314 access control lists of registered mailboxes');
  const svc = (flags: Flags, fn: Parameters<typeof withService<AclServiceClient>>[3]) => withService(io, flags, AclServiceClient, fn);
  const base = (name: string, description: string) =>
    allowDashOperands(acl.command(name).description(description).argument('<tenant>', 'tenant id').argument('<mailbox>', 'OWNER/NAME'));

  addConnectionOptions(base('get', 'show the ACL').addOption(outputOption())).action(async (tenant: string, mailbox: string, flags: Flags) =>
    svc(flags, async (api) => {
      const r = await api.getAcl({ tenant, mailbox, actor: '' });
      if (flags.output === 'json') printJson(io, r);
      else io.out(table(['IDENTIFIER', 'RIGHTS'], r.entries.map((e) => [e.identifier, e.rights])));
    }),
  );

  addConnectionOptions(
    base('set', 'set rights: "lrs" replaces, "+w" adds, "-w" removes')
      .argument('<identifier>', 'user, anyone, authenticated, group:NAME, or a negative -IDENTIFIER')
      .argument('<rights>', 'rights letters of lrswipkxtea (c, d accepted), optionally after + or -')
      .option('--expected-revision <rev>', 'apply only at this mailbox revision', parseRevisionOption)
      .option('--dry-run', 'check and compute exactly as the real change, write nothing: the new entry and whose rights would change')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, mailbox: string, identifier: string, rights: string, flags: Flags) =>
    svc(flags, async (api) => {
      // RFC 4314 SETACL with no rights removes the entry: say that with the verb that means it.
      if (rights === '') throw new CliError(`rights: empty; to remove ${identifier.slice(0, 80)}'s entry use: mailshare acl delete ${tenant} ${mailbox} ${identifier}`, 2);
      const dryRun = flags.dryRun === true;
      const r = await api.setAcl({ tenant, mailbox, identifier, rights, expectedRevision: flags.expectedRevision ?? 0, actor: '', dryRun });
      const applied = dryRun ? undefined : await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, dryRun ? { identifier, dryRun, ...r } : { identifier, rights: r.rights, revision: r.revision, ...(applied ? { applied } : {}) });
      else if (dryRun) io.out(dryRunText(`${identifier} ${r.rights || '(no entry)'}`, r.before, r.changes));
      else io.out(`${identifier} ${r.rights || '(no entry)'}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  addConnectionOptions(
    base('delete', 'remove one identifier\'s entry ("bob" leaves "-bob")')
      .argument('<identifier>', 'identifier (negative ones too: -bob)')
      .option('--expected-revision <rev>', 'apply only at this mailbox revision', parseRevisionOption)
      .option('--dry-run', 'check exactly as the real change, write nothing: whose rights would change')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, mailbox: string, identifier: string, flags: Flags) =>
    svc(flags, async (api) => {
      const dryRun = flags.dryRun === true;
      const r = await api.deleteAcl({ tenant, mailbox, identifier, expectedRevision: flags.expectedRevision ?? 0, actor: '', dryRun });
      const applied = dryRun ? undefined : await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, dryRun ? { identifier, dryRun, ...r } : { identifier, revision: r.revision, ...(applied ? { applied } : {}) });
      else if (dryRun) io.out(dryRunText(`${identifier} (no entry)`, r.before, r.changes));
      else io.out(`deleted ${identifier}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  addConnectionOptions(base('rights', "a user's effective rights (like doveadm acl rights)").argument('<user>', 'user id').addOption(outputOption())).action(
    async (tenant: string, mailbox: string, user: string, flags: Flags) =>
      svc(flags, async (api) => {
        const r = await api.myRights({ tenant, mailbox, user });
        if (flags.output === 'json') printJson(io, { user, ...r });
        else io.out(`${r.rights}\n`);
      }),
  );

  addConnectionOptions(
    base('explain', "a user's effective rights and why: every entry, the rules, where the mailbox is served")
      .argument('<user>', 'user id')
      .option('--applied [timeout]', "also ask the nodes whether their caches have the mailbox's revision (default wait 2s)")
      .addOption(outputOption()),
  ).action(async (tenant: string, mailbox: string, user: string, flags: Flags & { applied?: string | true }) =>
      svc(flags, async (api) => {
        const r = await api.explainRights({ tenant, mailbox, user });
        // The owner's and the user's nodes: whether their caches have this revision of the mailbox.
        const applied = flags.applied === undefined ? undefined : await waitApplied(io, { ...flags, waitApplied: flags.applied === true ? '2s' : flags.applied }, r.revision);
        const cacheOf = (node: string): string => {
          const a = applied?.nodes.find((n) => n.node === node);
          return !a ? `${node} is not live` : a.revision >= r.revision ? `${node} has it (at ${a.revision})` : `${node} did not answer in time`;
        };
        const caches = applied ? [...new Set([r.ownerNode, r.userNode].filter((n) => n !== ''))].map(cacheOf) : [];
        if (flags.output === 'json') return printJson(io, { tenant, mailbox, user, ...r, ...(applied ? { applied } : {}) });
        const lines = [`${user} on ${mailbox} (tenant ${tenant}, revision ${r.revision}): ${r.rights || '(none)'}`];
        lines.push(`groups: ${r.groups.length ? r.groups.join(', ') : '(none)'}`);
        lines.push(
          table(
            ['', 'IDENTIFIER', 'RIGHTS', 'WHY'],
            r.entries.map((e) => [e.applies ? (e.negative ? '-' : '+') : ' ', e.identifier, e.rights, explainReason(e.reason, user, e.identifier)]),
          ).trimEnd(),
        );
        lines.push(`granted ${r.granted || '(none)'}, taken away ${r.denied || '(none)'}${r.owner ? ', owner keeps la' : ''}: ${r.rights || '(none)'}`);
        for (const rule of r.rules) lines.push(`rule: ${rule}`);
        lines.push(`visible: ${r.listed ? 'listed (l)' : r.exists ? 'not listed (no l), but exists for the user' : 'no: the mailbox does not exist for the user'}`);
        lines.push(`served by: ${r.ownerNode ? `${r.ownerNode} (epoch ${r.ownerEpoch}), the owner's node` : 'no node holds the owner now (the first access assigns one)'}; ${user}'s node: ${r.userNode || '(none)'}`);
        if (applied) lines.push(`revision ${r.revision} in the caches: ${caches.length ? caches.join('; ') : 'no node holds the owner or the user'}`);
        io.out(`${lines.join('\n')}\n`);
      }),
  );

  addConnectionOptions(base('listrights', 'rights an identifier always has, then the grantable ones (RFC 4314 LISTRIGHTS)').argument('<identifier>', 'identifier').addOption(outputOption())).action(
    async (tenant: string, mailbox: string, identifier: string, flags: Flags) =>
      svc(flags, async (api) => {
        const r = await api.listRights({ tenant, mailbox, identifier, actor: '' });
        if (flags.output === 'json') printJson(io, r);
        else io.out(`${[r.required === '' ? '""' : r.required, ...r.optional].join(' ')}\n`);
      }),
  );
}

/** An entry's reason, in words. */
function explainReason(reason: string, user: string, identifier: string): string {
  const group = identifier.replace(/^-?group:/, '');
  switch (reason) {
    case 'user':
      return `applies: names ${user}`;
    case 'group':
      return `applies: ${user} is in group ${group}`;
    case 'anyone':
      return 'applies: anyone';
    case 'authenticated':
      return 'applies: every logged-in user';
    case 'not-in-group':
      return `does not apply: ${user} is not in group ${group}`;
    case 'other-user':
      return 'does not apply: another user';
    default:
      return reason;
  }
}

/** What a dry run found: the entry as it would be, and whose effective rights would change. */
function dryRunText(entry: string, before: string, changes: ReadonlyArray<{ who: string; before: string; after: string }>): string {
  const lines = [`would make ${entry} (now ${before || 'no entry'}); nothing written`];
  if (changes.length === 0) lines.push("no user's effective rights would change");
  else lines.push('effective rights that would change:', ...changes.map((c) => (c.before || c.after ? `  ${c.who}: ${c.before || '(none)'} -> ${c.after || '(none)'}` : `  ${c.who}`)));
  return `${lines.join('\n')}\n`;
}
