import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { type NodeFlags, addNodeOptions, duration, hostPort, nodeSettings } from './flags.js';

interface AgentFlags extends NodeFlags {
  imap: string;
  pop3?: string;
  lmtp?: string;
  sieve?: string;
  submission?: string;
  doveadmServer?: string;
  doveadm?: string;
  dovecotConfig?: string;
  whoInterval?: number;
  checkListen?: string;
  checkWait?: number;
  watchdog: boolean;
}

/**
 * `mailshare agent`: the sidecar of a Dovecot backend behind Dovecot's own
 * proxies. Owns the process: SIGINT/SIGTERM kicks and lets go of the node's
 * users, revokes its lease and exits 0.
 */
export function registerAgent(program: Command): void {
  const cmd = program
    .command('agent')
    .description("run beside a Dovecot backend: registers the node, keeps its lease, and kicks users from the local Dovecot when they are no longer this node's")
    .requiredOption('--node <name>', "this node's name (1-63 of a-z 0-9 . _ -)")
    .requiredOption('--imap <host:port>', "this node's Dovecot IMAP address (where proxies send its users)", hostPort)
    .option('--pop3 <host:port>', "this node's Dovecot POP3 address", hostPort)
    .option('--lmtp <host:port>', "this node's Dovecot LMTP address", hostPort)
    .option('--sieve <host:port>', "this node's ManageSieve address", hostPort)
    .option('--submission <host:port>', "this node's submission address", hostPort)
    .option('--doveadm-server <host:port>', "this node's doveadm server (service doveadm inet_listener), where proxies send doveadm -u/-A", hostPort)
    .option('--tenant <tenant>', 'tenant of Dovecot login names without a domain')
    .option('--doveadm <path>', 'the doveadm executable (default doveadm)')
    .option('--dovecot-config <file>', "the local Dovecot's config file, for doveadm -c (default Dovecot's own)")
    .option('--who-interval <duration>', 'ask Dovecot who is logged in this often (default 1s)', duration)
    .option('--check-listen <host:port>', "serve the login check the local Dovecot's userdb asks (deploy/dovecot/mailshare-check.lua); loopback", hostPort)
    .option('--check-wait <duration>', 'how long a check waits for a fresh assignment to reach this node (default 2s)', duration)
    .option('--no-watchdog', 'no watchdog process (it kicks every Dovecot session if the agent dies without letting go)');
  addNodeOptions(cmd, 'release a user with no session on any node for this long').action(async (flags: AgentFlags) => {
      const { DomainError } = await import('../domain/errors.js');
      const { createLogger } = await import('./logger.js');
      const { Sidecar } = await import('../sidecar/sidecar.js');
      const { token, tenant, level, coordinators, credentials, channelOptions } = await nodeSettings(flags);
      if (flags.whoInterval === 0) throw new DomainError('invalid_argument', 'who-interval: must be more than 0', { field: 'who-interval' });
      const addresses: Record<string, string> = {};
      for (const p of ['pop3', 'lmtp', 'sieve', 'submission'] as const) if (flags[p] !== undefined) addresses[p] = flags[p]!;
      if (flags.doveadmServer !== undefined) addresses.doveadm = flags.doveadmServer;
      const logger = createLogger(level, 'auto');
      const sidecar = new Sidecar({
        coordinators,
        credentials,
        channelOptions,
        token,
        node: { name: flags.node, imap: flags.imap, addresses, weight: flags.weight, zone: flags.zone },
        tenant,
        ttlSeconds: flags.ttl,
        userExpireMs: flags.userExpire,
        assignmentView: flags.assignmentView,
        doveadm: { binary: flags.doveadm, config: flags.dovecotConfig },
        whoIntervalMs: flags.whoInterval,
        metricsListen: flags.metricsListen,
        checkListen: flags.checkListen,
        checkWaitMs: flags.checkWait,
        watchdogScript: flags.watchdog ? fileURLToPath(new URL('../sidecar/watchdog.js', import.meta.url)) : undefined,
        logger: logger.child({ component: 'agent', node: flags.node }),
      });
      await sidecar.start();
      const metricsAt = sidecar.metricsAddress();
      const checkAt = sidecar.checkAddress();
      const served = [`IMAP ${flags.imap}`, ...Object.entries(addresses).map(([p, a]) => `${p.toUpperCase()} ${a}`)].join(', ');
      process.stdout.write(`mailshare agent ${flags.node} registered (${served})${metricsAt ? `; metrics on ${metricsAt}` : ''}${checkAt ? `; login check on ${checkAt}` : ''}\n`);
      await new Promise<void>((resolve) => {
        const stop = (sig: NodeJS.Signals): void => {
          logger.info({ signal: sig }, 'agent shutting down');
          void sidecar.close().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
