import type { Command } from 'commander';
import { MailboxServiceClient } from '../gen/mailshare/v1/mailbox.js';
import type { ConnectionFlags } from './connection.js';
import { CliError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { withService } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat; repair?: boolean };

/**
 * `mailshare index check [--repair] [TENANT]`: the "shared with me" index
 * against the ACLs, at one revision. Exits 1 when differences remain.
 */
export function registerIndex(program: Command, io: CliIo): void {
  const index = program.command('index').description('the "shared with me" index');
  addConnectionOptions(
    index
      .command('check')
      .description('verify the index against the ACLs at one revision (every tenant without TENANT); --repair puts it right')
      .argument('[tenant]', 'tenant id (default: every tenant; admin only)')
      .option('--repair', 'put differences right, one guarded transaction per mailbox')
      .addOption(outputOption()),
  ).action(async (tenant: string | undefined, flags: Flags) =>
    withService(io, flags, MailboxServiceClient, async (api) => {
      const r = await api.checkIndex({ tenant: tenant ?? '', repair: flags.repair === true });
      const differences = r.tenants.reduce((n, t) => n + t.missing + t.stale + t.wrongId + t.outdated, 0);
      if (flags.output === 'json') printJson(io, r);
      else {
        const out: string[] = [];
        for (const t of r.tenants) {
          const found = t.missing + t.stale + t.wrongId + t.outdated;
          out.push(
            `${t.tenant}: ${t.mailboxes} mailboxes, ${t.entries} index entries (${t.expected} expected) at revision ${t.revision}: ` +
              (found === 0 ? 'consistent' : `${t.missing} missing, ${t.stale} stale, ${t.wrongId} with a wrong id, ${t.outdated} outdated`) +
              (flags.repair && found > 0 ? `; repaired ${t.repaired} mailboxes${t.skipped ? `, ${t.skipped} skipped (changed meanwhile: run again)` : ''}` : ''),
          );
          if (t.differences.length > 0) out.push(table(['', 'KIND', 'GRANTEE', 'MAILBOX'], t.differences.map((d) => [' ', d.kind, d.grantee, d.mailbox])).trimEnd());
        }
        io.out(`${out.join('\n')}\n`);
      }
      const skipped = r.tenants.reduce((n, t) => n + t.skipped, 0);
      if (flags.repair ? skipped > 0 : differences > 0) {
        throw new CliError(flags.repair ? `index: ${skipped} mailboxes changed during the repair; run it again` : 'index: the index disagrees with the ACLs; run with --repair', 1);
      }
    }),
  );
}
