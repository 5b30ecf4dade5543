#!/usr/bin/env node
import { createRequire } from 'node:module';
import { Command, CommanderError } from 'commander';
import { describeError } from '../cli/errors.js';
import { type CliIo, addGlobalConnectionOptions } from '../cli/io.js';
import { registerAcl } from '../cli/acl.js';
import { registerAudit } from '../cli/audit.js';
import { registerEvents } from '../cli/events.js';
import { registerCompletion } from '../cli/completion.js';
import { registerDovecotMigration } from '../cli/dovecot-migrate.js';
import { registerGroup } from '../cli/group.js';
import { registerIndex } from '../cli/index-check.js';
import { registerMailbox } from '../cli/mailbox.js';
import { registerNode } from '../cli/node.js';
import { registerStatus } from '../cli/status.js';
import { registerTenant } from '../cli/tenant.js';
import { registerToken } from '../cli/token.js';
import { DomainError } from '../domain/errors.js';
import { registerAgent } from './agent-command.js';
import { registerGateway } from './gateway-command.js';
import { registerServer } from './server-command.js';

const require = createRequire(import.meta.url);

// grpc-js passes the target address as TLS server name; for an IP address
// Node warns (DEP0123) on every connection. The certificate is still
// verified against the IP SAN, so this warning is noise on stderr.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
  if (code === 'DEP0123') return;
  (emitWarning as (...a: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;
const { version } = require('../../package.json') as { version: string };

/**
 * Exit codes: 0 success; 1 failure at run time (server down, call refused);
 * 2 bad usage or configuration. Errors are one line on stderr.
 */
async function main(argv: string[]): Promise<number> {
  const io: CliIo = {
    env: process.env,
    cwd: process.cwd(),
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    isTty: process.stdout.isTTY === true,
  };
  const program = new Command('mailshare')
    .description('coordination service that lets a cluster of IMAP servers share mailboxes safely')
    .version(version, '-V, --version')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`mailshare: ${oneLine(str.replace(/^error: /, ''))}\n`) })
    .showSuggestionAfterError(true);
  addGlobalConnectionOptions(program);

  registerServer(program, version);
  registerGateway(program);
  registerAgent(program);
  registerStatus(program, io);
  registerToken(program, io);
  registerTenant(program, io);
  registerGroup(program, io);
  registerMailbox(program, io);
  registerIndex(program, io);
  registerDovecotMigration(program, io);
  registerAcl(program, io);
  registerAudit(program, io);
  registerNode(program, io);
  registerEvents(program, io);
  registerCompletion(program, io);

  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version exit 0; everything else commander reports is usage.
      return err.exitCode === 0 ? 0 : 2;
    }
    const code = err instanceof DomainError && err.code === 'invalid_argument' ? 2 : undefined;
    const e = describeError(err);
    process.stderr.write(`mailshare: ${oneLine(e.message)}\n`);
    return code ?? e.exitCode;
  }
}

/**
 * An error for stderr as exactly one line: commander's own line breaks (a
 * suggestion after the error) become spaces, and control characters from
 * the arguments being reported are shown escaped.
 */
function oneLine(text: string): string {
  return text
    .trim()
    .split(/\r?\n/)
    .map((l) => l.trim())
    .join(' ')
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is escaped here
    .replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mailshare: unexpected failure: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
