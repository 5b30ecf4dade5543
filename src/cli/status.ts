import type { Command } from 'commander';
import { SystemServiceClient, type GetStatusResponse } from '../gen/mailshare/v1/system.js';
import { call, makeClient, resolveConnection, type ConnectionFlags } from './connection.js';
import { CliError, describeError } from './errors.js';
import { type CliIo, type OutputFormat, addConnectionOptions, humanBytes, outputOption, printJson, table } from './io.js';

/** `mailshare status`: server version and health, etcd endpoints, leader, db size. */
export function registerStatus(program: Command, io: CliIo): void {
  addConnectionOptions(
    program
      .command('status')
      .description('show server version and health, and the health, leader and size of every etcd endpoint')
      .addOption(outputOption()),
  ).action(async (flags: ConnectionFlags & { output: OutputFormat }) => {
    const conn = resolveConnection(flags, io.env, io.cwd);
    const client = makeClient(conn, SystemServiceClient);
    let unhealthy = false;
    try {
      const res = await call(conn, client.getStatus.bind(client), {});
      if (flags.output === 'json') printJson(io, { addr: conn.addr, ...res });
      else io.out(renderStatus(conn.addr, res));
      if (!res.healthy) unhealthy = true;
    } catch (err) {
      throw describeError(err, conn.addr);
    } finally {
      client.close();
    }
    if (unhealthy) throw new CliError(`server at ${conn.addr} reports unhealthy`);
  });
}

export function renderStatus(addr: string, s: GetStatusResponse): string {
  const etcd = s.etcd;
  const lines = [
    `server:   ${addr}`,
    `version:  ${s.version}`,
    `state:    ${s.state}`,
    `health:   ${s.healthy ? 'healthy' : 'UNHEALTHY'}`,
    `started:  ${s.startedAt?.toISOString() ?? '-'}`,
    `etcd:     ${s.embeddedEtcd ? 'embedded' : 'external'}, cluster ${etcd?.clusterId || '-'}, leader ${etcd?.leaderName || '-'} (${etcd?.leaderId || 'none'})`,
    '',
  ];
  const rows = (etcd?.endpoints ?? []).map((e) => [
    e.endpoint,
    e.healthy ? 'healthy' : `unhealthy: ${e.error}`,
    e.memberName || e.memberId || '-',
    e.isLeader ? 'yes' : 'no',
    e.version || '-',
    e.healthy || e.dbSizeBytes ? humanBytes(e.dbSizeBytes) : '-',
  ]);
  return lines.join('\n') + '\n' + table(['ENDPOINT', 'HEALTH', 'MEMBER', 'LEADER', 'VERSION', 'DB SIZE'], rows);
}
