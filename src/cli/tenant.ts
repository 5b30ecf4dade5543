import { type Command, Option } from 'commander';
import { DirectoryServiceClient, type Tenant } from '../gen/mailshare/v1/directory.js';
import type { ConnectionFlags } from './connection.js';
import { type WaitFlags, appliedLine, requireApplied, waitApplied, waitAppliedOption } from './wait-applied.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { allPages, parseIntOption, parseRevisionOption, withService } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat; expectedRevision?: number };
type SettingsFlags = { allowAnyone?: boolean; maxShares?: number };

/** `mailshare tenant create|get|list|update|delete` (admin). */
export function registerTenant(program: Command, io: CliIo): void {
  const tenant = program.command('tenant').description('manage tenants (organisations)');
  const svc = (flags: Flags, fn: Parameters<typeof withService<DirectoryServiceClient>>[3]) => withService(io, flags, DirectoryServiceClient, fn);
  const settingsOptions = (cmd: Command): Command =>
    cmd
      .addOption(new Option('--allow-anyone', 'allow ACL entries for "anyone" (default)'))
      .addOption(new Option('--no-allow-anyone', 'forbid ACL entries for "anyone"'))
      .option('--max-shares <n>', 'most ACL entries per mailbox besides the owner, 1-50 (default 50)', parseIntOption);
  const settings = (f: SettingsFlags) => ({
    ...(f.allowAnyone !== undefined ? { allowAnyone: f.allowAnyone } : {}),
    ...(f.maxShares !== undefined ? { maxSharesPerMailbox: f.maxShares } : {}),
  });
  const show = (flags: Flags, t: Tenant): void => {
    if (flags.output === 'json') printJson(io, t);
    else io.out(renderTenant(t));
  };
  /** A change's answer, after waiting until every node applied it when asked to. */
  const changed = async (flags: Flags & WaitFlags, t: Tenant): Promise<void> => {
    const applied = await waitApplied(io, flags, t.revision);
    if (applied && flags.output === 'json') printJson(io, { ...t, applied });
    else show(flags, t);
    if (applied && flags.output !== 'json') io.out(appliedLine(applied));
    requireApplied(applied);
  };

  const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
  addConnectionOptions(
    settingsOptions(
      tenant
        .command('create')
        .description('create a tenant')
        .argument('<tenant>', 'tenant id')
        .option('--domain <domain>', 'a login domain of the tenant (users log in as user@domain); repeat for more', collect)
        .addOption(waitAppliedOption())
        .addOption(outputOption()),
    ),
  ).action(async (id: string, flags: Flags & WaitFlags & SettingsFlags & { domain?: string[] }) =>
    svc(flags, async (api) => changed(flags, await api.createTenant({ id, settings: settings(flags), domains: flags.domain ?? [] }))),
  );

  addConnectionOptions(tenant.command('get').description('show a tenant').argument('<tenant>', 'tenant id').addOption(outputOption())).action(
    async (id: string, flags: Flags) => svc(flags, async (api) => show(flags, await api.getTenant({ id }))),
  );

  addConnectionOptions(tenant.command('list').description('list tenants').addOption(outputOption())).action(async (flags: Flags) =>
    svc(flags, async (api) => {
      const all = await allPages(async (pageToken) => {
        const r = await api.listTenants({ pageSize: 1000, pageToken });
        return { items: r.tenants, next: r.nextPageToken };
      });
      if (flags.output === 'json') printJson(io, { tenants: all });
      else
        io.out(
          table(
            ['TENANT', 'DOMAINS', 'ALLOW ANYONE', 'MAX SHARES', 'CREATED'],
            all.map((t) => [t.id, t.domains.join(',') || '-', String(t.settings?.allowAnyone), String(t.settings?.maxSharesPerMailbox), t.createdAt?.toISOString() ?? '-']),
          ),
        );
    }),
  );

  addConnectionOptions(
    settingsOptions(
      tenant
        .command('update')
        .description("change a tenant's settings")
        .argument('<tenant>', 'tenant id')
        .option('--expected-revision <rev>', 'apply only at this revision', parseRevisionOption)
        .addOption(waitAppliedOption())
        .addOption(outputOption()),
    ),
  ).action(async (id: string, flags: Flags & WaitFlags & SettingsFlags) =>
    svc(flags, async (api) => changed(flags, await api.updateTenant({ id, settings: settings(flags), expectedRevision: flags.expectedRevision ?? 0 }))),
  );

  addConnectionOptions(
    tenant
      .command('delete')
      .description('delete a tenant (must be empty unless --force)')
      .argument('<tenant>', 'tenant id')
      .option('--force', 'also delete its mailboxes, ACLs and groups')
      .option('--expected-revision <rev>', 'apply only at this revision', parseRevisionOption)
      .option('--dry-run', 'check exactly as the real call, delete nothing: what would go')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (id: string, flags: Flags & WaitFlags & { force?: boolean; dryRun?: boolean }) =>
    svc(flags, async (api) => {
      const r = await api.deleteTenant({ id, force: flags.force === true, expectedRevision: flags.expectedRevision ?? 0, dryRun: flags.dryRun === true });
      const what = `${r.mailboxes} mailboxes, ${r.groups} groups${r.domains.length ? `, login domains ${r.domains.join(' ')}` : ''}`;
      if (flags.dryRun) return flags.output === 'json' ? printJson(io, { tenant: id, dryRun: true, ...r }) : io.out(`would delete tenant ${id} with ${what}; nothing written\n`);
      const applied = await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, { deleted: id, ...r, ...(applied ? { applied } : {}) });
      else io.out(`deleted tenant ${id}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  // Login domains: `tenant domain add|remove|list TENANT [DOMAIN]` (add and remove: admin only).
  const domain = tenant.command('domain').description("manage a tenant's login domains (users log in as user@domain)");
  addConnectionOptions(domain.command('add').description('add a login domain (unique in the cluster)').argument('<tenant>', 'tenant id').argument('<domain>', 'e.g. acme.example').addOption(waitAppliedOption()).addOption(outputOption())).action(
    async (id: string, d: string, flags: Flags & WaitFlags) => svc(flags, async (api) => changed(flags, await api.addTenantDomain({ tenant: id, domain: d }))),
  );
  addConnectionOptions(domain.command('remove').description('remove a login domain').argument('<tenant>', 'tenant id').argument('<domain>', 'the domain').addOption(waitAppliedOption()).addOption(outputOption())).action(
    async (id: string, d: string, flags: Flags & WaitFlags) => svc(flags, async (api) => changed(flags, await api.removeTenantDomain({ tenant: id, domain: d }))),
  );
  addConnectionOptions(domain.command('list').description("list a tenant's login domains").argument('<tenant>', 'tenant id').addOption(outputOption())).action(async (id: string, flags: Flags) =>
    svc(flags, async (api) => {
      const t = await api.getTenant({ id });
      if (flags.output === 'json') printJson(io, { tenant: t.id, domains: t.domains });
      else io.out(t.domains.map((d) => `${d}\n`).join(''));
    }),
  );
}

function renderTenant(t: Tenant): string {
  return [
    `tenant:        ${t.id}`,
    `domains:       ${t.domains.join(', ') || '-'}`,
    `allow anyone:  ${t.settings?.allowAnyone}`,
    `max shares:    ${t.settings?.maxSharesPerMailbox}`,
    `created:       ${t.createdAt?.toISOString() ?? '-'}`,
    `revision:      ${t.revision}`,
    '',
  ].join('\n');
}
