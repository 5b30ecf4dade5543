import type { Command } from 'commander';
import { AuthServiceClient, type TokenInfo } from '../gen/mailshare/v1/auth.js';
import type { ConnectionFlags } from './connection.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { withService } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat };

/** `mailshare token create|list|revoke|whoami`. */
export function registerToken(program: Command, io: CliIo): void {
  const token = program.command('token').description('manage bearer tokens (admin)');

  addConnectionOptions(
    token
      .command('create')
      .description('create a token; prints the secret once')
      .requiredOption('--role <role>', 'admin | node | tenant-admin:<tenant>')
      .option('--description <text>', 'note for operators', '')
      .addOption(outputOption()),
  ).action(async (flags: Flags & { role: string; description: string }) => {
    await withService(io, flags, AuthServiceClient, async (api) => {
      const res = await api.createToken({ role: flags.role, description: flags.description });
      if (flags.output === 'json') printJson(io, res);
      else io.out(`${res.token}\n`);
    });
  });

  addConnectionOptions(
    token.command('list').description('list tokens (never their secrets)').addOption(outputOption()),
  ).action(async (flags: Flags) => {
    await withService(io, flags, AuthServiceClient, async (api) => {
      const all: TokenInfo[] = [];
      let pageToken = '';
      do {
        const res = await api.listTokens({ pageSize: 1000, pageToken });
        all.push(...res.tokens);
        pageToken = res.nextPageToken;
      } while (pageToken !== '');
      if (flags.output === 'json') printJson(io, { tokens: all });
      else
        io.out(
          table(
            ['ID', 'ROLE', 'CREATED', 'DESCRIPTION'],
            all.map((t) => [t.id, t.role, t.createdAt?.toISOString() ?? '-', t.description]),
          ),
        );
    });
  });

  addConnectionOptions(
    token.command('revoke').description('revoke a token by id').argument('<id>', 'token id (16 hex digits)').addOption(outputOption()),
  ).action(async (id: string, flags: Flags) => {
    await withService(io, flags, AuthServiceClient, async (api) => {
      await api.revokeToken({ id });
      if (flags.output === 'json') printJson(io, { revoked: id });
      else io.out(`revoked ${id}\n`);
    });
  });

  addConnectionOptions(
    token.command('whoami').description('show the token and role the CLI authenticates as').addOption(outputOption()),
  ).action(async (flags: Flags) => {
    await withService(io, flags, AuthServiceClient, async (api) => {
      const res = await api.whoAmI({});
      if (flags.output === 'json') printJson(io, res);
      else io.out(`${res.role} (token ${res.tokenId})\n`);
    });
  });
}
