import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { type NodeFlags, addNodeOptions, count, duration, hostPort, nodeSettings, positive, readFlagFile } from './flags.js';

const lmtpListen = (v: string): string => {
  if (/^unix:\/\S+$/.test(v)) return v;
  return hostPort(v);
};
const bytes = (v: string): number => {
  if (!/^\d{1,12}$/.test(v) || Number(v) < 1024) throw new InvalidArgumentError('must be a number of bytes, at least 1024');
  return Number(v);
};
const poolSize = (v: string): number => {
  if (!/^\d{1,2}$/.test(v) || Number(v) > 64) throw new InvalidArgumentError('must be a whole number from 0 to 64');
  return Number(v);
};
/**
 * `mailshare gateway`: the IMAP side of one backend node. Owns the process
 * (signals, exit codes): SIGINT/SIGTERM lets users leave, revokes the
 * node's lease and exits 0.
 */
export function registerGateway(program: Command): void {
  const cmd = program
    .command('gateway')
    .description("run the IMAP gateway of one node: routes logins to the user's node and relays the session to its Dovecot")
    .requiredOption('--node <name>', 'this node\'s name (1-63 of a-z 0-9 . _ -)')
    .requiredOption('--backend <host:port>', "this node's Dovecot IMAP address (reachable by the other gateways)", hostPort)
    .option('--tenant <tenant>', 'tenant of logins without a domain (user@domain logins go to the tenant owning the domain); without it such logins are refused')
    .option('--listen <host:port>', 'where IMAP clients connect (default 127.0.0.1:1143)', hostPort)
    .option('--master-user <name>', "Dovecot master user for reaching other users' shared mailboxes (password in env MAILSHARE_MASTER_PASSWORD)")
    .option('--shared-prefix <prefix>', 'where other users\' mailboxes appear (default "Shared/")')
    .option('--tls-cert <file>', 'PEM certificate: offers STARTTLS and refuses logins before it')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--listen-tls <host:port>', 'also listen for implicit TLS (e.g. 0.0.0.0:993); needs --tls-cert', hostPort)
    .option('--listen-pop3 <host:port>', 'where POP3 clients connect (e.g. 0.0.0.0:110; STLS with --tls-cert); needs --backend-pop3', hostPort)
    .option('--listen-pop3s <host:port>', 'also listen for POP3 over implicit TLS (e.g. 0.0.0.0:995); needs --tls-cert and --backend-pop3', hostPort)
    .option('--backend-pop3 <host:port>', "this node's Dovecot POP3 address (registered with the node: other gateways send its users' POP3 logins there)", hostPort)
    .option('--listen-lmtp <address>', 'where MTAs deliver mail by LMTP: host:port (e.g. 0.0.0.0:24) or unix:PATH; needs --backend-lmtp', lmtpListen)
    .option('--backend-lmtp <host:port>', "this node's Dovecot LMTP address (registered with the node: other gateways deliver its users' mail there)", hostPort)
    .option('--lmtp-max-size <bytes>', 'largest message taken by LMTP, announced as SIZE (default 67108864)', bytes)
    .option('--lmtp-max-recipients <n>', 'recipients per LMTP transaction at most (default 1000)', count)
    .option('--backend-ca <file>', "CA of the Dovecots' certificates: reach every node's Dovecot over implicit TLS, verified (--backend and other nodes' addresses are TLS ports)")
    .option('--backend-server-name <name>', "name expected in the Dovecots' certificates (default each address's host)")
    .option('--oauth', "offer AUTH=OAUTHBEARER and AUTH=XOAUTH2: tokens are verified by the user's home Dovecot (its oauth2 passdb)")
    .option('--backend-pool <n>', 'connections kept open and greeted per Dovecot in recent use, ready for logins (default 2; 0 none)', poolSize)
    .option('--max-connections <n>', 'client connections at most; more are told BYE (default 10000)', count)
    .option('--max-connections-per-ip <n>', 'client connections from one address at most (default 500)', count)
    .option('--prelogin-timeout <duration>', 'disconnect clients that have not logged in after this long (default 3m)', duration)
    .option('--idle-timeout <duration>', 'log out clients silent for this long (default 30m, at least 30m by RFC 3501)', duration)
    .option('--health-interval <duration>', "probe this node's Dovecot this often (default 1s)", duration)
    .option('--health-failures <n>', 'failed probes in a row before the node lets its users go (and passes before it takes them again; default 3)', positive)
    .option('--health-user <name>', 'now and then log in as this user through --master-user, as a deeper probe')
    .option('--no-health-check', "do not probe this node's Dovecot")
    .option('--migrate-sessions', "when a user moves, move their IMAP sessions to the new node with the clients kept connected (default; needs --master-user)")
    .option('--no-migrate-sessions', 'end IMAP sessions with BYE when their user moves instead');
  addNodeOptions(cmd, 'release a user with no session through any gateway for this long').action(async (flags: NodeFlags & { backend: string; listen?: string; masterUser?: string; sharedPrefix?: string; tlsCert?: string; tlsKey?: string; listenTls?: string; backendCa?: string; backendServerName?: string; listenPop3?: string; listenPop3s?: string; backendPop3?: string; listenLmtp?: string; backendLmtp?: string; lmtpMaxSize?: number; lmtpMaxRecipients?: number; backendPool?: number; oauth?: boolean; maxConnections?: number; maxConnectionsPerIp?: number; preloginTimeout?: number; idleTimeout?: number; healthInterval?: number; healthFailures?: number; healthUser?: string; healthCheck?: boolean; migrateSessions?: boolean }) => {
      const { DomainError } = await import('../domain/errors.js');
      const { createLogger } = await import('./logger.js');
      const { createGateway } = await import('../gateway/gateway.js');
      const { token, tenant, level, coordinators, credentials, channelOptions } = await nodeSettings(flags);
      let master: { user: string; password: string } | undefined;
      if (flags.masterUser !== undefined) {
        const password = process.env.MAILSHARE_MASTER_PASSWORD;
        if (!/^[\x21-\x7e]{1,128}$/.test(flags.masterUser)) throw new DomainError('invalid_argument', 'master-user: must be 1-128 printable characters without spaces', { field: 'master-user' });
        if (!password) throw new DomainError('invalid_argument', 'master-user: set MAILSHARE_MASTER_PASSWORD to its password', { field: 'master-user' });
        master = { user: flags.masterUser, password };
      }
      const sharedPrefix = flags.sharedPrefix ?? 'Shared/';
      if (!/^[\x21-\x7e]+\/$/.test(sharedPrefix) || /[*%"\\]/.test(sharedPrefix) || sharedPrefix.length < 2) {
        throw new DomainError('invalid_argument', `shared-prefix: "${sharedPrefix}" must be printable ASCII without * % " \\ and end with "/"`, { field: 'shared-prefix' });
      }
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new DomainError('invalid_argument', 'tls-cert: give both --tls-cert and --tls-key', { field: 'tls-cert' });
      if (flags.listenTls !== undefined && flags.tlsCert === undefined) throw new DomainError('invalid_argument', 'listen-tls: needs --tls-cert and --tls-key', { field: 'listen-tls' });
      const read = readFlagFile;
      let tlsFiles: { cert: Buffer; key: Buffer } | undefined;
      if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
        tlsFiles = { cert: read(flags.tlsCert, 'tls-cert'), key: read(flags.tlsKey, 'tls-key') };
        const { createSecureContext } = await import('node:tls');
        try {
          createSecureContext(tlsFiles);
        } catch (err) {
          throw new DomainError('invalid_argument', `tls-cert: ${(err as Error).message}`, { field: 'tls-cert' });
        }
      }
      if ((flags.listenPop3 !== undefined || flags.listenPop3s !== undefined) && flags.backendPop3 === undefined) {
        throw new DomainError('invalid_argument', `${flags.listenPop3 !== undefined ? 'listen-pop3' : 'listen-pop3s'}: needs --backend-pop3 (this node's Dovecot POP3)`, { field: flags.listenPop3 !== undefined ? 'listen-pop3' : 'listen-pop3s' });
      }
      if (flags.listenLmtp !== undefined && flags.backendLmtp === undefined) throw new DomainError('invalid_argument', "listen-lmtp: needs --backend-lmtp (this node's Dovecot LMTP)", { field: 'listen-lmtp' });
      if (flags.listenPop3s !== undefined && flags.tlsCert === undefined) throw new DomainError('invalid_argument', 'listen-pop3s: needs --tls-cert and --tls-key', { field: 'listen-pop3s' });
      if (flags.backendServerName !== undefined && flags.backendCa === undefined) throw new DomainError('invalid_argument', 'backend-server-name: needs --backend-ca', { field: 'backend-server-name' });
      if (flags.preloginTimeout === 0) throw new DomainError('invalid_argument', 'prelogin-timeout: must be more than 0', { field: 'prelogin-timeout' });
      if (flags.idleTimeout !== undefined && flags.idleTimeout < 30 * 60_000) throw new DomainError('invalid_argument', 'idle-timeout: must be at least 30m (RFC 3501 section 5.4)', { field: 'idle-timeout' });
      if (flags.healthUser !== undefined && master === undefined) throw new DomainError('invalid_argument', 'health-user: needs --master-user', { field: 'health-user' });
      if (flags.healthInterval === 0) throw new DomainError('invalid_argument', 'health-interval: must be more than 0', { field: 'health-interval' });
      const backendTls = flags.backendCa === undefined ? undefined : { ca: read(flags.backendCa, 'backend-ca'), servername: flags.backendServerName };
      const logger = createLogger(level, 'auto');
      const gateway = createGateway({
        listen: flags.listen ?? '127.0.0.1:1143',
        coordinators,
        credentials,
        channelOptions,
        token,
        node: { name: flags.node, backend: flags.backend, weight: flags.weight, zone: flags.zone },
        tenant,
        ttlSeconds: flags.ttl,
        userExpireMs: flags.userExpire,
        assignmentView: flags.assignmentView,
        master,
        migrateSessions: flags.migrateSessions !== false,
        sharedPrefix,
        tls: tlsFiles,
        listenTls: flags.listenTls,
        pop3: flags.backendPop3 === undefined ? undefined : { backend: flags.backendPop3, listen: flags.listenPop3, listenTls: flags.listenPop3s },
        lmtp: flags.backendLmtp === undefined ? undefined : { backend: flags.backendLmtp, listen: flags.listenLmtp, maxSize: flags.lmtpMaxSize, maxRecipients: flags.lmtpMaxRecipients },
        backendTls,
        backendPool: flags.backendPool,
        oauth: flags.oauth,
        maxConnections: flags.maxConnections,
        maxConnectionsPerIp: flags.maxConnectionsPerIp,
        preLoginTimeoutMs: flags.preloginTimeout,
        idleTimeoutMs: flags.idleTimeout,
        health: flags.healthCheck === false ? false : { intervalMs: flags.healthInterval, failures: flags.healthFailures, loginUser: flags.healthUser },
        metricsListen: flags.metricsListen,
        logger: logger.child({ component: 'agent', node: flags.node }),
      });
      const address = await gateway.start();
      const tlsAt = gateway.tlsAddress();
      const pop3 = gateway.pop3Addresses();
      const lmtpAt = gateway.lmtpAddress();
      const metricsAt = gateway.metricsAddress();
      const also = [tlsAt && `${tlsAt} (TLS)`, pop3.plain && `${pop3.plain} (POP3)`, pop3.tls && `${pop3.tls} (POP3 TLS)`, lmtpAt && `${lmtpAt} (LMTP)`, metricsAt && `${metricsAt} (metrics)`].filter(Boolean).join(', ');
      process.stdout.write(`mailshare gateway ${flags.node} listening on ${address}${also ? ` and ${also}` : ''} (backend ${flags.backend}, ${tenant ? `tenant ${tenant}` : 'tenants by login domain'})\n`);
      await new Promise<void>((resolve) => {
        const stop = (sig: NodeJS.Signals): void => {
          logger.info({ signal: sig }, 'gateway shutting down');
          void gateway.close().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
