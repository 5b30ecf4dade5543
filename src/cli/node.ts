import type { Command } from 'commander';
import { type DrainProgress, type Node, PlacementServiceClient } from '../gen/mailshare/v1/placement.js';
import { type ConnectionFlags, makeClient, resolveConnection } from './connection.js';
import { CliError, describeError } from './errors.js';
import { type WaitFlags, appliedLine, requireApplied, waitApplied, waitAppliedOption } from './wait-applied.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { parseIntOption, withService } from './run.js';

/** The server's wait for a release when --release-timeout is not given (PlacementService: timeout_ms 0). */
const DEFAULT_RELEASE_TIMEOUT_MS = 10_000;

type Flags = ConnectionFlags & { output: OutputFormat };

/** `mailshare node list|drain|undrain|remove` and `mailshare user locate`. */
export function registerNode(program: Command, io: CliIo): void {
  const node = program.command('node').description('backend nodes (IMAP servers) and their state');
  const svc = (flags: Flags, fn: Parameters<typeof withService<PlacementServiceClient>>[3]) => withService(io, flags, PlacementServiceClient, fn);
  // Move and kick wait on the server for the old node's release (--release-timeout): the call's deadline covers it.
  const releasing = (flags: Flags & { releaseTimeout?: number }, fn: Parameters<typeof withService<PlacementServiceClient>>[3]) =>
    withService(io, flags, PlacementServiceClient, fn, { extraDeadlineMs: flags.releaseTimeout || DEFAULT_RELEASE_TIMEOUT_MS });
  const showNode = (flags: Flags, n: Node): void => {
    if (flags.output === 'json') printJson(io, n);
    else io.out(`${n.name} ${n.state}\n`);
  };

  addConnectionOptions(
    node
      .command('list')
      .description('list nodes with state, addresses (IMAP, LMTP, POP3), weight, users and why a node is down')
      .option('--applied [timeout]', "also ask every live node the revision its caches are at, and its lag behind etcd (default wait 2s)")
      .addOption(outputOption()),
  ).action(async (flags: Flags & { applied?: string | true }) =>
    svc(flags, async (api) => {
      const r = await api.listNodes({});
      const applied = flags.applied === undefined ? undefined : await waitApplied(io, { ...flags, waitApplied: flags.applied === true ? '2s' : flags.applied }, 1);
      const of = (name: string): { revision: number; lag: number } | undefined => {
        const a = applied?.nodes.find((n) => n.node === name);
        return a && a.revision > 0 ? { revision: a.revision, lag: Math.max(0, applied!.headRevision - a.revision) } : undefined;
      };
      if (flags.output === 'json') printJson(io, applied ? { nodes: r.nodes.map((n) => ({ ...n, applied: of(n.name) ?? null })), headRevision: applied.headRevision } : r);
      else {
        const cols = ['NODE', 'STATE', 'IMAP', 'LMTP', 'POP3', 'WEIGHT', 'ZONE', 'USERS', 'LEASE', 'REASON', ...(applied ? ['APPLIED', 'LAG'] : [])];
        io.out(
          table(
            cols,
            r.nodes.map((n) => {
              const row = [n.name, n.state, n.imapAddress, n.addresses.lmtp || '-', n.addresses.pop3 || '-', String(n.weight), n.zone || '-', String(n.users), n.leaseId || '-', n.downReason || '-'];
              if (!applied) return row;
              const a = of(n.name);
              const live = applied.nodes.some((x) => x.node === n.name);
              return [...row, a ? String(a.revision) : live ? 'no answer' : '-', a ? String(a.lag) : '-'];
            }),
          ),
        );
      }
    }),
  );

  const stateCmd = (name: string, state: 'active' | 'draining', description: string) =>
    addConnectionOptions(node.command(name).description(description).argument('<node>', 'node name').addOption(waitAppliedOption()).addOption(outputOption())).action(
      async (nodeName: string, flags: Flags & WaitFlags) =>
        svc(flags, async (api) => {
          const n = await api.setNodeState({ name: nodeName, state });
          const applied = await waitApplied(io, flags, n.revision);
          if (applied && flags.output === 'json') printJson(io, { ...n, applied });
          else showNode(flags, n);
          if (applied && flags.output !== 'json') io.out(appliedLine(applied));
          requireApplied(applied);
        }),
    );
  stateCmd('undrain', 'active', 'let the node take new users again');

  addConnectionOptions(
    node
      .command('drain')
      .description('stop assigning new users to the node and move its users away (progress bar on a terminal)')
      .argument('<node>', 'node name')
      .option('--parallel <n>', 'users moved at once (default 16)', parseIntOption)
      .option('--release-timeout <ms>', 'wait this long for the node to release each user (default 10000)', parseIntOption)
      .option('--dry-run', 'change nothing: where bounded-load hashing would put each of its users now')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (nodeName: string, flags: Flags & WaitFlags & { parallel?: number; releaseTimeout?: number; dryRun?: boolean }) => {
    const conn = resolveConnection(flags, io.env, io.cwd);
    const client = makeClient(conn, PlacementServiceClient);
    try {
      const last = await new Promise<DrainProgress>((resolve, reject) => {
        let latest: DrainProgress = { total: 0, moved: 0, failed: 0, done: false, plan: [], revision: 0 };
        const stream = client.drain({ name: nodeName, parallelism: flags.parallel ?? 0, timeoutMs: flags.releaseTimeout ?? 0, dryRun: flags.dryRun === true }, conn.callCredentials);
        stream.on('data', (p: DrainProgress) => {
          latest = p;
          if (io.isTty && flags.output === 'text' && !flags.dryRun) io.err(`\r${progressBar(p)}`);
        });
        stream.on('end', () => resolve(latest));
        stream.on('error', reject);
      });
      if (flags.dryRun) {
        if (flags.output === 'json') return printJson(io, { node: nodeName, dryRun: true, plan: last.plan });
        const by = new Map<string, number>();
        for (const m of last.plan) by.set(m.toNode, (by.get(m.toNode) ?? 0) + 1);
        return io.out(
          `would move ${last.plan.length} users off ${nodeName}${by.size ? ` (${[...by].sort().map(([n, c]) => `${c} to ${n}`).join(', ')})` : ''}; nothing changed\n${last.plan.map((m) => `  ${m.tenant}/${m.user} -> ${m.toNode}\n`).join('')}`,
        );
      }
      if (io.isTty && flags.output === 'text') io.err('\n');
      const applied = last.revision > 0 ? await waitApplied(io, flags, last.revision) : undefined;
      if (flags.output === 'json') printJson(io, { node: nodeName, ...last, ...(applied ? { applied } : {}) });
      else io.out(`drained ${nodeName}: ${last.moved} of ${last.total} users moved${last.failed ? `, ${last.failed} failed` : ''}\n${applied ? appliedLine(applied) : ''}`);
      if (last.failed > 0) throw new CliError(`${last.failed} users could not be moved; run the drain again`);
      requireApplied(applied);
    } catch (err) {
      throw describeError(err, conn.addr);
    } finally {
      client.close();
    }
  });

  addConnectionOptions(
    node
      .command('remove')
      .description('forget a node that is down')
      .argument('<node>', 'node name')
      .option('--force', 'also remove a live node, revoking its lease and ending its users\' assignments')
      .option('--dry-run', 'check exactly as the real call, change nothing: how many assignments it would end')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (nodeName: string, flags: Flags & WaitFlags & { force?: boolean; dryRun?: boolean }) =>
    svc(flags, async (api) => {
      const r = await api.removeNode({ name: nodeName, force: flags.force === true, dryRun: flags.dryRun === true });
      const applied = flags.dryRun ? undefined : await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, { removed: nodeName, users: r.users, ...(flags.dryRun ? { dryRun: true } : {}), ...(applied ? { applied } : {}) });
      else if (flags.dryRun) io.out(`would remove ${nodeName}${r.users ? `, ending ${r.users} users' assignments` : ''}; nothing changed\n`);
      else io.out(`removed ${nodeName}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  const user = program.command('user').description("users' placement on nodes");
  addConnectionOptions(
    user
      .command('locate')
      .description('which node holds a user, and the epoch (fencing token) of that assignment')
      .argument('<tenant>', 'tenant id')
      .argument('<user>', 'user id, or OWNER/NAME to locate a mailbox\'s owner')
      .option('--assign', 'assign a node if the user has none')
      .addOption(outputOption()),
  ).action(async (tenant: string, who: string, flags: Flags & { assign?: boolean }) =>
    svc(flags, async (api) => {
      const isMailbox = who.includes('/');
      const r = await api.locate({ tenant, user: isMailbox ? '' : who, mailbox: isMailbox ? who : '', assign: flags.assign === true });
      if (flags.output === 'json') printJson(io, r);
      else if (r.node === '') io.out(`${r.user}: not assigned\n`);
      else io.out(`${r.user}: ${r.node} (${r.imapAddress}) epoch ${r.epoch}${r.assigned ? ', newly assigned' : ''}\n`);
    }),
  );

  addConnectionOptions(
    user
      .command('move')
      .description("move a user to another node: the old node closes the user's sessions first; the new assignment gets a higher epoch")
      .argument('<tenant>', 'tenant id')
      .argument('<user>', 'user id')
      .option('--to <node>', 'target node (default: chosen by bounded-load consistent hashing)')
      .option('--release-timeout <ms>', 'wait this long for the old node to release (default 10000)', parseIntOption)
      .option('--dry-run', 'change nothing: where the move would take the user now')
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, who: string, flags: Flags & WaitFlags & { to?: string; releaseTimeout?: number; dryRun?: boolean }) =>
    releasing(flags, async (api) => {
      const r = await api.move({ tenant, user: who, toNode: flags.to ?? '', timeoutMs: flags.releaseTimeout ?? 0, dryRun: flags.dryRun === true });
      if (flags.dryRun) return flags.output === 'json' ? printJson(io, { ...r, dryRun: true }) : io.out(`${who}: would move ${r.fromNode || '(unassigned)'} -> ${r.node}; nothing changed\n`);
      // The new assignment's epoch is the revision that wrote it.
      const applied = await waitApplied(io, flags, r.epoch);
      if (flags.output === 'json') printJson(io, { ...r, ...(applied ? { applied } : {}) });
      else io.out(`${who}: ${r.fromNode || '(unassigned)'} -> ${r.node} epoch ${r.epoch}${r.releasedByNode ? '' : ' (old node did not answer; its assignment was ended)'}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );

  addConnectionOptions(
    user
      .command('kick')
      .description("end a user's sessions without moving them (the next login assigns a node afresh)")
      .argument('<tenant>', 'tenant id')
      .argument('<user>', 'user id')
      .option('--release-timeout <ms>', 'wait this long for the node to release (default 10000)', parseIntOption)
      .option('--dry-run', "change nothing: which node would close the user's sessions")
      .addOption(waitAppliedOption())
      .addOption(outputOption()),
  ).action(async (tenant: string, who: string, flags: Flags & WaitFlags & { releaseTimeout?: number; dryRun?: boolean }) =>
    releasing(flags, async (api) => {
      const r = await api.kick({ tenant, user: who, timeoutMs: flags.releaseTimeout ?? 0, dryRun: flags.dryRun === true });
      if (flags.dryRun) return flags.output === 'json' ? printJson(io, { ...r, dryRun: true }) : io.out(`${who}: ${r.fromNode ? `would be kicked off ${r.fromNode}` : 'holds no node: nothing to kick'}; nothing changed\n`);
      const applied = await waitApplied(io, flags, r.revision);
      if (flags.output === 'json') printJson(io, { ...r, ...(applied ? { applied } : {}) });
      else io.out(`${who}: kicked${r.releasedByNode ? '' : ' (node did not answer; its assignment was ended)'}\n${applied ? appliedLine(applied) : ''}`);
      requireApplied(applied);
    }),
  );
}

function progressBar(p: DrainProgress): string {
  const width = 30;
  const doneUsers = p.moved + p.failed;
  const filled = p.total === 0 ? width : Math.round((doneUsers / p.total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${doneUsers}/${p.total}${p.failed ? ` (${p.failed} failed)` : ''}`;
}
