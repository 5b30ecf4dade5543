import type { Command } from 'commander';
import * as grpc from '@grpc/grpc-js';
import { type Event, EventServiceClient, type WatchResponse } from '../gen/mailshare/v1/events.js';
import { makeClient, resolveConnection, type ConnectionFlags } from './connection.js';
import { EVENT_KINDS } from '../domain/event-kinds.js';
import { CliError, describeError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption } from './io.js';
import { parseRevisionOption } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat; from?: number; kind?: string[]; tenant?: string };

/** `mailshare events`: tail the event stream until interrupted. */
export function registerEvents(program: Command, io: CliIo): void {
  addConnectionOptions(
    program
      .command('events')
      .description('tail changes (tenants, groups, mailboxes and ACLs, assignments, nodes) as they happen; -o json prints one JSON object per line')
      .option('--from <rev>', 'start at this etcd revision (default: now)', parseRevisionOption)
      .option('--kind <kind...>', `only these kinds: ${EVENT_KINDS.join(' ')}`)
      .option('--tenant <tenant>', 'only this tenant')
      .addOption(outputOption()),
  ).action(async (flags: Flags) => {
    // A usage error is said before anything starts (no "watching" first).
    const bad = (flags.kind ?? []).find((k) => !(EVENT_KINDS as readonly string[]).includes(k));
    if (bad !== undefined) throw new CliError(`kind: "${bad.slice(0, 40)}" is not one of ${EVENT_KINDS.join(', ')}`, 2);
    const conn = resolveConnection(flags, io.env, io.cwd);
    const client = makeClient(conn, EventServiceClient);
    try {
      await new Promise<void>((resolve, reject) => {
        const stream = client.watch({ fromRevision: flags.from ?? 0, kinds: flags.kind ?? [], tenant: flags.tenant ?? '' }, conn.callCredentials);
        // Once the server's watch exists nothing later can be missed: say so (on stderr, so stdout stays data only).
        stream.on('metadata', () => io.err('watching; Ctrl-C to stop\n'));
        stream.on('data', (r: WatchResponse) => {
          for (const e of r.events) io.out(flags.output === 'json' ? `${JSON.stringify(e)}\n` : `${renderEvent(e)}\n`);
        });
        stream.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
        stream.on('end', resolve);
      });
    } catch (err) {
      throw describeError(err, conn.addr);
    } finally {
      client.close();
    }
  });
}

export function renderEvent(e: Event): string {
  const head = `${e.revision} ${e.kind}${e.deleted ? ' deleted' : ''}${e.tenant ? ` ${e.tenant}` : ''}`;
  switch (e.kind) {
    case 'mailbox':
      return `${head} ${e.mailbox?.mailbox}${e.deleted ? '' : ` acl ${e.mailbox?.acl.map((a) => `${a.identifier}=${a.rights}`).join(' ')}`}`;
    case 'group':
      return `${head} group:${e.group?.name}${e.deleted ? '' : ` members ${e.group?.members.join(' ')}`}`;
    case 'assignment':
      return `${head} ${e.assignment?.user}${e.deleted ? '' : ` -> ${e.assignment?.node}`} epoch ${e.assignment?.epoch}`;
    case 'node':
      return `${head} ${e.node?.name} ${e.node?.state || (e.node?.leaseId ? `up lease ${e.node.leaseId}` : '')}`.trimEnd();
    default:
      return `${head} ${e.tenantRecord?.id ?? ''}`.trimEnd();
  }
}
