import { defineConfig } from 'vitest/config';

/**
 * The Dovecot-facing tests against Dovecot 2.4 (`npm run test:dovecot24`, with
 * MAILSHARE_DOVECOT_PREFIX set by scripts/test-dovecot24.sh): the gateway in front of 2.4
 * backends, `mailshare agent` beside them, and 2.4's own proxies routed by mailshare with
 * deploy/dovecot/2.4/. Not here: what the harness writes for 2.3 only (Dovecot's ACL and
 * quota plugins, its OAuth2 passdb, Pigeonhole's ManageSieve, which the 2.4 build lacks).
 */
export default defineConfig({
  test: {
    include: [
      'test/integration/gateway.test.ts',
      'test/integration/gateway-sharing.test.ts',
      'test/integration/gateway-extensions.test.ts',
      'test/integration/gateway-compress.test.ts',
      'test/integration/gateway-migration.test.ts',
      'test/integration/gateway-migration-clients.test.ts',
      'test/integration/gateway-failover.test.ts',
      'test/integration/gateway-lmtp.test.ts',
      'test/integration/gateway-pop3.test.ts',
      'test/integration/gateway-tenants.test.ts',
      'test/integration/gateway-team-mailbox.test.ts',
      'test/integration/gateway-expiry.test.ts',
      'test/integration/gateway-backend-health.test.ts',
      'test/integration/gateway-coordinator-loss.test.ts',
      'test/integration/gateway-command.test.ts',
      'test/integration/agent-command.test.ts',
      'test/integration/dovecot-proxy.test.ts',
      'test/integration/local-cluster.test.ts',
      'test/security/backend-tls.test.ts',
      'test/security/owner-connection.test.ts',
    ],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
