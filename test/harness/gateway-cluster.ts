import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createGateway, type Gateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import { connectApi, nodeTokens } from './api.js';
import { type DovecotInstance, mailRoot, startDovecot } from './dovecot.js';
import { startEtcd, type EtcdCluster } from './etcd.js';
import { type ImapTap, startImapTap } from './imap-tap.js';
import { unaryCall } from './grpc.js';
import { waitFor } from './process.js';
import { startInProcessServer, type InProcessServer } from './server.js';

export const MASTER = { user: 'gateway', password: 'master-pw' };

/** etcd, a coordinator, and per node a real Dovecot (one shared mail root) with a gateway in front. */
export interface GatewayCluster {
  readonly etcd: EtcdCluster;
  readonly server: InProcessServer;
  /** Per node name, its node token. */
  readonly nodeTokens: ReadonlyMap<string, string>;
  readonly dovecots: DovecotInstance[];
  /** The mail root every Dovecot shares. */
  readonly mailRoot: string;
  readonly gateways: Gateway[];
  /** With `tap`: per node, the tap between the gateways and its Dovecot (registered as the node's backend). */
  readonly taps: ImapTap[];
  /** The coordinator's placement API (admin token). */
  readonly placement: PlacementServiceClient;
  /** Puts a user of tenant acme on `node` (moving them there if needed); returns the assignment's epoch. */
  pin(user: string, node: string): Promise<number>;
  stop(): Promise<void>;
}

export async function startGatewayCluster(opts: {
  nodes: string[];
  users: Record<string, string>;
  /** Create tenant "acme" (needed for ACLs and mailboxes). */
  tenant?: boolean;
  /** Quota rules of every Dovecot (see startDovecot). */
  quotaRules?: string[];
  /** Every Dovecot's mail_max_userip_connections (see startDovecot). */
  maxUserIpConnections?: number;
  /** Put an ImapTap in front of every Dovecot, so tests can count the commands that reached it. */
  tap?: boolean;
  /** OAuth logins at every Dovecot, tokens checked at this introspection URL (see startDovecot). */
  oauthIntrospection?: string;
  /** Every Dovecot also serves these, and every gateway fronts them (on a free port: see `pop3Address`, `lmtpAddress`). */
  protocols?: Array<'pop3' | 'lmtp'>;
  /** Every gateway's LMTP limits (see LmtpOptions). */
  lmtpLimits?: { maxSize?: number; maxRecipients?: number };
  /** Flags of the coordinator (e.g. httpListen). */
  serverFlags?: Record<string, unknown>;
  /** Per node: options of its gateway (e.g. coordinators through a proxy). */
  gateway?: (node: string, server: InProcessServer) => Partial<GatewayOptions> | Promise<Partial<GatewayOptions>>;
}): Promise<GatewayCluster> {
  const etcd = await startEtcd();
  const server = await startInProcessServer({ endpoints: etcd.endpoints, flags: opts.serverFlags });
  const root = mailRoot();
  const dovecots: DovecotInstance[] = [];
  const gateways: Gateway[] = [];
  const taps: ImapTap[] = [];
  const placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  const stop = async (): Promise<void> => {
    placement.close();
    for (const g of gateways) await g.close().catch(() => undefined);
    for (const t of taps) await t.close().catch(() => undefined);
    for (const d of dovecots) await d.stop().catch(() => undefined);
    await server.stop();
    await etcd.stop();
    root.remove();
  };
  try {
    const admin = connectApi(server.address, server.adminToken);
    const tokenFor = nodeTokens(admin);
    const tokens = new Map<string, string>();
    for (const name of opts.nodes) tokens.set(name, await tokenFor(name));
    if (opts.tenant) await admin.directory.createTenant({ id: 'acme', domains: [] });
    admin.close();
    for (const name of opts.nodes) {
      const d = await startDovecot({ name, mailRoot: root.path, users: opts.users, master: MASTER, quotaRules: opts.quotaRules, maxUserIpConnections: opts.maxUserIpConnections, oauthIntrospection: opts.oauthIntrospection, protocols: opts.protocols });
      dovecots.push(d);
      let backend = d.address;
      if (opts.tap) {
        const t = await startImapTap(d.address);
        taps.push(t);
        backend = t.address;
      }
      const own = await opts.gateway?.(name, server);
      const g = createGateway({
        listen: '127.0.0.1:0',
        coordinators: [server.address],
        token: tokens.get(name)!,
        node: { name, backend },
        tenant: 'acme',
        ttlSeconds: 3,
        master: MASTER,
        // POP3 on a free port, and on another for implicit TLS when the gateway has a certificate.
        ...(d.pop3Address ? { pop3: { backend: d.pop3Address, listen: '127.0.0.1:0', ...(own?.tls ? { listenTls: '127.0.0.1:0' } : {}) } } : {}),
        ...(d.lmtpAddress ? { lmtp: { backend: d.lmtpAddress, listen: '127.0.0.1:0', ...opts.lmtpLimits } } : {}),
        // MAILSHARE_TEST_ASSIGNMENT_VIEW=all runs the gateways as they ran before "followed" was the default.
        ...(process.env.MAILSHARE_TEST_ASSIGNMENT_VIEW ? { assignmentView: process.env.MAILSHARE_TEST_ASSIGNMENT_VIEW as 'all' | 'followed' } : {}),
        ...own,
      });
      await g.start();
      gateways.push(g);
    }
    const token = server.adminToken;
    await waitFor(
      async () => (await unaryCall(placement.listNodes.bind(placement), {}, token)).nodes.filter((n) => n.state === 'active').length === opts.nodes.length,
      5000,
      'every node active',
    );
    const pin = async (user: string, node: string): Promise<number> => {
      const a = await unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign: true }, token);
      if (a.node === node) return a.epoch;
      const moved = await unaryCall(placement.move.bind(placement), { tenant: 'acme', user, toNode: node, timeoutMs: 2000 }, token);
      if (moved.node !== node) throw new Error(`${user} landed on ${moved.node}, not ${node}`);
      return moved.epoch;
    };
    return { etcd, server, nodeTokens: tokens, dovecots, mailRoot: root.path, gateways, taps, placement, pin, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Whether something accepts TCP connections at host:port. */
export function canConnect(address: string): Promise<boolean> {
  const [host, port] = address.split(':');
  return new Promise((resolve) => {
    const s = net.connect(Number(port), host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
