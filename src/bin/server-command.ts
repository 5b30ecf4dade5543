import type { Command } from 'commander';

/**
 * `mailshare server`. Lives in bin/ because it owns the process: signals
 * and exit codes. SIGINT/SIGTERM → graceful gRPC shutdown, then the etcd
 * client, then the embedded etcd; a second signal forces.
 */
export function registerServer(program: Command, version: string): void {
  program
    .command('server')
    .description('run a coordinator (spawns an embedded etcd unless --etcd is given)')
    .option('--config <file>', 'YAML or JSON config file (env MAILSHARE_CONFIG)')
    .option('--listen <host:port>', 'gRPC listen address (env MAILSHARE_LISTEN; default 127.0.0.1:7400)')
    .option('--etcd <urls>', 'comma-separated etcd client URLs (env MAILSHARE_ETCD); omit for the embedded etcd')
    .option('--etcd-prefix <prefix>', 'key prefix in etcd (env MAILSHARE_ETCD_PREFIX; default /mailshare/)')
    .option('--data-dir <dir>', 'embedded etcd data and credentials (env MAILSHARE_DATA_DIR; default ./.mailshare)')
    .option('--credentials-file <file>', 'where to write bootstrap admin credentials (env MAILSHARE_CREDENTIALS; default <data-dir>/credentials.json)')
    .option('--tls-cert <file>', 'server certificate (PEM) (env MAILSHARE_TLS_CERT)')
    .option('--tls-key <file>', 'server private key (PEM) (env MAILSHARE_TLS_KEY)')
    .option('--tls-client-ca <file>', 'require client certificates signed by this CA (env MAILSHARE_TLS_CLIENT_CA)')
    .option('--log-level <level>', 'trace|debug|info|warn|error|fatal|silent (env MAILSHARE_LOG_LEVEL; default info)')
    .option('--log-format <format>', 'auto|json|pretty (env MAILSHARE_LOG_FORMAT; default auto: pretty on a terminal)')
    .option('--etcd-binary <path>', 'etcd executable for the embedded mode (env MAILSHARE_ETCD_BINARY; default etcd)')
    .option('--audit-retention <duration>', 'how long audit records are kept, e.g. 90d (env MAILSHARE_AUDIT_RETENTION; default 90d)')
    .option('--placement-epsilon <number>', 'bounded-load slack: a node takes at most (1+ε)× its share of users (env MAILSHARE_PLACEMENT_EPSILON; default 0.25)')
    .option('--placement-allowed-addresses <list>', 'comma-separated CIDRs and host names nodes may register as their address; gateways send passwords there (env MAILSHARE_PLACEMENT_ALLOWED_ADDRESSES; default loopback and private ranges)')
    .option('--events-buffer-limit <n>', 'bytes an event watcher that stopped reading may have queued before it is cut off (env MAILSHARE_EVENTS_BUFFER_LIMIT; default 8388608)')
    .option('--events-snapshot-copy <on|off>', "serve agents' snapshots from a watch-fed copy of every entity instead of reading etcd for each (env MAILSHARE_EVENTS_SNAPSHOT_COPY; default on)")
    .option('--events-shared-watch <on|off>', 'serve every event stream from one etcd watch per coordinator instead of one etcd watch per stream (env MAILSHARE_EVENTS_SHARED_WATCH; default on)')
    .option('--http-listen <host:port>', 'HTTP listener for Prometheus /metrics and the status page (env MAILSHARE_HTTP_LISTEN; default off; HTTPS with --tls-cert)')
    .option('--shutdown-timeout <duration>', 'grace period for in-flight calls, e.g. 10s (env MAILSHARE_SHUTDOWN_TIMEOUT)')
    .action(async (flags: Record<string, unknown>) => {
      // Loaded here so client commands start without the server's dependencies.
      const { loadServerConfig } = await import('../config/server-config.js');
      const { startServer } = await import('../services/app.js');
      const { createLogger } = await import('./logger.js');
      const config = loadServerConfig({
        flags,
        env: process.env,
        configFile: (flags.config as string | undefined) ?? process.env.MAILSHARE_CONFIG,
        cwd: process.cwd(),
      });
      const logger = createLogger(config.log.level, config.log.format);
      const server = await startServer(config, logger, version);
      // One human line on stdout: where it listens and where the credentials are.
      process.stdout.write(
        `mailshare server ${version} listening on ${server.address}` +
          (server.embeddedEtcd ? ` (embedded etcd ${server.embeddedEtcd.clientUrl}, data ${config.dataDir})` : ` (etcd ${server.etcdEndpoints.join(',')})`) +
          (server.httpAddress ? `; http on ${server.httpAddress}` : '') +
          (server.credentialsFile ? `; credentials in ${server.credentialsFile}` : '') +
          '\n',
      );
      await new Promise<void>((resolve) => {
        let signalled = false;
        const onSignal = (sig: NodeJS.Signals): void => {
          if (signalled) {
            logger.warn({ signal: sig }, 'second signal: forcing shutdown');
            server.coordinator.forceShutdown();
            return;
          }
          signalled = true;
          logger.info({ signal: sig }, 'shutting down');
          void server.shutdown().then(resolve);
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
    });
}
