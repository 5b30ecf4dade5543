import type { Command } from 'commander';
import { DomainError } from '../domain/errors.js';
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
      .requiredOption('--role <role>', 'admin | node | tenant-admin:<tenant> | proxy (a Dovecot proxy: /v1/route only)')
      .option('--node <name>', 'with --role node: the node the token is for (it can act for no other)')
      .option('--tenants <list>', 'with --role node: comma-separated tenants the node serves (default every tenant)')
      .option('--description <text>', 'note for operators', '')
      .addOption(outputOption()),
  ).action(async (flags: Flags & { role: string; description: string; node?: string; tenants?: string }) => {
    await withService(io, flags, AuthServiceClient, async (api) => {
      let role = flags.role;
      if (flags.node !== undefined || flags.tenants !== undefined) {
        if (role !== 'node') throw new DomainError('invalid_argument', 'node: --node and --tenants go with --role node', { field: 'node' });
        if (flags.node === undefined) throw new DomainError('invalid_argument', 'node: --role node needs --node <name>', { field: 'node' });
        role = `node:${flags.node}${flags.tenants !== undefined ? `:${flags.tenants}` : ''}`;
      }
      const res = await api.createToken({ role, description: flags.description });
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
