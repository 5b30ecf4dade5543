import type { Command } from 'commander';
import { type Node, PlacementServiceClient } from '../gen/mailshare/v1/placement.js';
import type { ConnectionFlags } from './connection.js';
import { type CliIo, type OutputFormat, addConnectionOptions, outputOption, printJson, table } from './io.js';
import { withService } from './run.js';

type Flags = ConnectionFlags & { output: OutputFormat };

/** `mailshare node list|drain|undrain|remove` and `mailshare user locate`. */
export function registerNode(program: Command, io: CliIo): void {
  const node = program.command('node').description('backend nodes (IMAP servers) and their state');
  const svc = (flags: Flags, fn: Parameters<typeof withService<PlacementServiceClient>>[3]) => withService(io, flags, PlacementServiceClient, fn);
  const showNode = (flags: Flags, n: Node): void => {
    if (flags.output === 'json') printJson(io, n);
    else io.out(`${n.name} ${n.state}\n`);
  };

  addConnectionOptions(node.command('list').description('list nodes with state, address, weight and users').addOption(outputOption())).action(async (flags: Flags) =>
    svc(flags, async (api) => {
      const r = await api.listNodes({});
      if (flags.output === 'json') printJson(io, r);
      else
        io.out(
          table(
            ['NODE', 'STATE', 'IMAP', 'WEIGHT', 'ZONE', 'USERS', 'LEASE'],
            r.nodes.map((n) => [n.name, n.state, n.imapAddress, String(n.weight), n.zone || '-', String(n.users), n.leaseId || '-']),
          ),
        );
    }),
  );

  const stateCmd = (name: string, state: 'active' | 'draining', description: string) =>
    addConnectionOptions(node.command(name).description(description).argument('<node>', 'node name').addOption(outputOption())).action(async (nodeName: string, flags: Flags) =>
      svc(flags, async (api) => showNode(flags, await api.setNodeState({ name: nodeName, state }))),
    );
  stateCmd('drain', 'draining', 'stop assigning new users to the node (users already on it stay until their assignments end)');
  stateCmd('undrain', 'active', 'let the node take new users again');

  addConnectionOptions(
    node
      .command('remove')
      .description('forget a node that is down')
      .argument('<node>', 'node name')
      .option('--force', 'also remove a live node, revoking its lease and ending its users\' assignments')
      .addOption(outputOption()),
  ).action(async (nodeName: string, flags: Flags & { force?: boolean }) =>
    svc(flags, async (api) => {
      await api.removeNode({ name: nodeName, force: flags.force === true });
      if (flags.output === 'json') printJson(io, { removed: nodeName });
      else io.out(`removed ${nodeName}\n`);
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
}
