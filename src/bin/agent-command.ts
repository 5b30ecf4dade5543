import type { Command } from 'commander';
import { coordinatorCredentials, duration, hostPort, positive } from './flags.js';

interface AgentFlags {
  node: string;
  imap: string;
  pop3?: string;
  lmtp?: string;
  sieve?: string;
  submission?: string;
  tenant?: string;
  coordinators?: string;
  weight?: number;
  zone?: string;
  ttl?: number;
  userExpire?: number;
  doveadm?: string;
  dovecotConfig?: string;
  whoInterval?: number;
  metricsListen?: string;
  coordinatorCa?: string;
  coordinatorCert?: string;
  coordinatorKey?: string;
  coordinatorServerName?: string;
  logLevel?: string;
}

/**
 * `mailshare agent`: the sidecar of a Dovecot backend behind Dovecot's own
 * proxies. Owns the process: SIGINT/SIGTERM kicks and lets go of the node's
 * users, revokes its lease and exits 0.
 */
export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description("run beside a Dovecot backend: registers the node, keeps its lease, and kicks users from the local Dovecot when they are no longer this node's")
    .requiredOption('--node <name>', "this node's name (1-63 of a-z 0-9 . _ -)")
    .requiredOption('--imap <host:port>', "this node's Dovecot IMAP address (where proxies send its users)", hostPort)
    .option('--pop3 <host:port>', "this node's Dovecot POP3 address", hostPort)
    .option('--lmtp <host:port>', "this node's Dovecot LMTP address", hostPort)
    .option('--sieve <host:port>', "this node's ManageSieve address", hostPort)
    .option('--submission <host:port>', "this node's submission address", hostPort)
    .option('--tenant <tenant>', 'tenant of Dovecot login names without a domain')
    .option('--coordinators <list>', 'comma-separated coordinator addresses (env MAILSHARE_COORDINATORS; default MAILSHARE_ADDR or 127.0.0.1:7400)')
    .option('--weight <n>', 'relative capacity 1-1000 (default 100)', positive)
    .option('--zone <zone>', 'zone label')
    .option('--ttl <seconds>', 'lease TTL (default 5)', positive)
    .option('--user-expire <duration>', 'release a user with no session on any node for this long, e.g. 15m (default 15m; 0 never)', duration)
    .option('--doveadm <path>', 'the doveadm executable (default doveadm)')
    .option('--dovecot-config <file>', "the local Dovecot's config file, for doveadm -c (default Dovecot's own)")
    .option('--who-interval <duration>', 'ask Dovecot who is logged in this often (default 1s)', duration)
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics here (plain HTTP, no token; default off)', hostPort)
    .option('--coordinator-ca <file>', "CA that signed the coordinators' certificates: talk to them over TLS (env MAILSHARE_TLS_CA)")
    .option('--coordinator-cert <file>', 'client certificate for coordinators that require one (env MAILSHARE_TLS_CLIENT_CERT)')
    .option('--coordinator-key <file>', 'private key of --coordinator-cert (env MAILSHARE_TLS_CLIENT_KEY)')
    .option('--coordinator-server-name <name>', "name expected in the coordinators' certificates")
    .option('--log-level <level>', 'trace|debug|info|warn|error|fatal|silent (default info)')
    .action(async (flags: AgentFlags) => {
      const { DomainError } = await import('../domain/errors.js');
      const { parseTenantId, TENANT_ID_PATTERN } = await import('../domain/ids.js');
      const { createLogger } = await import('./logger.js');
      const { Sidecar } = await import('../sidecar/sidecar.js');
      const token = process.env.MAILSHARE_TOKEN;
      if (!token) throw new DomainError('invalid_argument', 'token: set MAILSHARE_TOKEN to a token with role node', { field: 'token' });
      if (!TENANT_ID_PATTERN.test(flags.node)) throw new DomainError('invalid_argument', `node: "${flags.node}" is not a node name`, { field: 'node' });
      const tenant = flags.tenant === undefined ? undefined : parseTenantId(flags.tenant, 'tenant');
      const level = flags.logLevel ?? 'info';
      if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new DomainError('invalid_argument', `log-level: "${level}" is not a log level`, { field: 'log-level' });
      if (flags.whoInterval === 0) throw new DomainError('invalid_argument', 'who-interval: must be more than 0', { field: 'who-interval' });
      const addresses: Record<string, string> = {};
      for (const p of ['pop3', 'lmtp', 'sieve', 'submission'] as const) if (flags[p] !== undefined) addresses[p] = flags[p]!;
      const logger = createLogger(level as 'info', 'auto');
      const coordinators = (flags.coordinators ?? process.env.MAILSHARE_COORDINATORS ?? process.env.MAILSHARE_ADDR ?? '127.0.0.1:7400').split(',').map((s) => s.trim()).filter(Boolean);
      const sidecar = new Sidecar({
        coordinators,
        credentials: await coordinatorCredentials(flags),
        channelOptions: flags.coordinatorServerName ? { 'grpc.ssl_target_name_override': flags.coordinatorServerName } : undefined,
        token,
        node: { name: flags.node, imap: flags.imap, addresses, weight: flags.weight, zone: flags.zone },
        tenant,
        ttlSeconds: flags.ttl,
        userExpireMs: flags.userExpire,
        doveadm: { binary: flags.doveadm, config: flags.dovecotConfig },
        whoIntervalMs: flags.whoInterval,
        metricsListen: flags.metricsListen,
        logger: logger.child({ component: 'agent', node: flags.node }),
      });
      await sidecar.start();
      const metricsAt = sidecar.metricsAddress();
      const served = [`IMAP ${flags.imap}`, ...Object.entries(addresses).map(([p, a]) => `${p.toUpperCase()} ${a}`)].join(', ');
      process.stdout.write(`mailshare agent ${flags.node} registered (${served})${metricsAt ? `; metrics on ${metricsAt}` : ''}\n`);
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
