import type { Command } from 'commander';
import { AuditServiceClient } from '../gen/mailshare/v1/audit.js';
import type { ConnectionFlags } from './connection.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { allPages, withService } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat };

/** `mailshare audit list TENANT`. */
export function registerAudit(program: Command, io: CliIo): void {
  const audit = program.command('audit').description('who changed what');
  addConnectionOptions(audit.command('list').description("a tenant's audit records, oldest first").argument('<tenant>', 'tenant id').addOption(outputOption())).action(
    async (tenant: string, flags: Flags) =>
      withService(io, flags, AuditServiceClient, async (api) => {
        const all = await allPages(async (pageToken) => {
          const r = await api.listAudit({ tenant, pageSize: 1000, pageToken });
          return { items: r.records, next: r.nextPageToken };
        });
        if (flags.output === 'json') printJson(io, { records: all });
        else
          io.out(
            table(
              ['TIME', 'WHO', 'ACTION', 'TARGET', 'CHANGE'],
              all.map((r) => [
                r.time?.toISOString() ?? '-',
                r.actor ? `${r.who} for ${r.actor}` : r.who,
                r.action,
                r.identifier ? `${r.target} ${r.identifier}` : r.target,
                `${r.before || '""'} -> ${r.after || '""'}`,
              ]),
            ),
          );
      }),
  );
}
