import type { Command } from 'commander';
import { AuthServiceClient, type TokenInfo } from '../gen/mailshare/v1/auth.js';
import { call, makeClient, resolveConnection, type ConnectionFlags } from './connection.js';
import { describeError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';

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
    await withAuthClient(io, flags, async (conn, client) => {
      const res = await call(conn, client.createToken.bind(client), { role: flags.role, description: flags.description });
      if (flags.output === 'json') printJson(io, res);
      else io.out(`${res.token}\n`);
    });
  });

  addConnectionOptions(
    token.command('list').description('list tokens (never their secrets)').addOption(outputOption()),
  ).action(async (flags: Flags) => {
    await withAuthClient(io, flags, async (conn, client) => {
      const all: TokenInfo[] = [];
      let pageToken = '';
      do {
        const res = await call(conn, client.listTokens.bind(client), { pageSize: 1000, pageToken });
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
    await withAuthClient(io, flags, async (conn, client) => {
      await call(conn, client.revokeToken.bind(client), { id });
      if (flags.output === 'json') printJson(io, { revoked: id });
      else io.out(`revoked ${id}\n`);
    });
  });

  addConnectionOptions(
    token.command('whoami').description('show the token and role the CLI authenticates as').addOption(outputOption()),
  ).action(async (flags: Flags) => {
    await withAuthClient(io, flags, async (conn, client) => {
      const res = await call(conn, client.whoAmI.bind(client), {});
      if (flags.output === 'json') printJson(io, res);
      else io.out(`${res.role} (token ${res.tokenId})\n`);
    });
  });
}

async function withAuthClient(
  io: CliIo,
  flags: ConnectionFlags,
  fn: (conn: ReturnType<typeof resolveConnection>, client: AuthServiceClient) => Promise<void>,
): Promise<void> {
  const conn = resolveConnection(flags, io.env, io.cwd);
  const client = makeClient(conn, AuthServiceClient);
  try {
    await fn(conn, client);
  } catch (err) {
    throw describeError(err, conn.addr);
  } finally {
    client.close();
  }
}
