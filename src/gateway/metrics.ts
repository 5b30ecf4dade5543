import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry, createRegistry } from '../metrics/registry.js';
import type { Agent } from '../agent/agent.js';
import { addAgentGauges } from '../agent/metrics.js';

/** IMAP commands measured under their own name; any other is "OTHER" (a client cannot add labels). */
const IMAP_COMMANDS = new Set(
  (
    'APPEND AUTHENTICATE CAPABILITY CHECK CLOSE COMPRESS COPY CREATE DELETE DELETEACL ENABLE EXAMINE EXPUNGE FETCH GETACL ' +
    'GETMETADATA GETQUOTA GETQUOTAROOT ID IDLE LIST LISTRIGHTS LOGOUT LSUB MOVE MYRIGHTS NAMESPACE NOOP NOTIFY RENAME SEARCH ' +
    'SELECT SETACL SETMETADATA SETQUOTA SORT STATUS STORE SUBSCRIBE THREAD UNSELECT UNSUBSCRIBE ESEARCH'
  ).split(' '),
);
const UID_COMMANDS = new Set(['COPY', 'EXPUNGE', 'FETCH', 'MOVE', 'SEARCH', 'SORT', 'STORE', 'THREAD']);

/** The label of an IMAP command: its name, "UID FETCH" and the like, or OTHER. */
export function commandLabel(name: string, sub?: string): string {
  if (name === 'UID') return sub !== undefined && UID_COMMANDS.has(sub.toUpperCase()) ? `UID ${sub.toUpperCase()}` : 'OTHER';
  return IMAP_COMMANDS.has(name) ? name : 'OTHER';
}

export type GatewayProtocol = 'imap' | 'pop3' | 'lmtp';

/** What the gauges read at scrape time. */
export interface GatewayView {
  /** Logged-in sessions (IMAP, POP3) by protocol. */
  sessions(): Record<string, number>;
  /** Client connections open, by protocol (logged in or not; LMTP included). */
  connections(): Record<string, number>;
  /** Bytes read from and written to clients so far, by protocol. */
  clientBytes(): Record<string, { received: number; sent: number }>;
  /** Connections to other users' Dovecots for shared mailboxes: in a session's use, and kept idle. */
  ownerConnections(): { inUse: number; idle: number };
}

/**
 * A gateway's Prometheus metrics: sessions and connections by protocol,
 * logins by result, client bytes, owner connections, IMAP command latency,
 * LMTP recipients by outcome, and the node's lease and view of the cluster
 * (its agent). Low cardinality: no user, mailbox or address labels.
 */
export class GatewayMetrics {
  readonly registry: Registry = createRegistry();
  private readonly logins: Counter;
  private readonly commands: Histogram;
  private readonly recipients: Counter;
  private readonly migrations: Counter;

  constructor(agent: Agent, view: GatewayView) {
    const registers = [this.registry];
    const gauge = (opts: { name: string; help: string; labelNames?: string[] }, fill: (g: Gauge) => void): void => {
      const g: Gauge = new Gauge({ ...opts, labelNames: opts.labelNames ?? [], registers, collect: () => fill(g) });
    };
    const byProtocol = (g: Gauge, values: Record<string, number>): void => {
      g.reset();
      for (const [protocol, v] of Object.entries(values)) g.set({ protocol }, v);
    };
    this.logins = new Counter({ name: 'mailshare_gateway_logins_total', help: 'Logins by protocol and result (ok, failed: wrong credentials, refused: by the server, unavailable: cluster or server unreachable).', labelNames: ['protocol', 'result'], registers });
    this.commands = new Histogram({ name: 'mailshare_gateway_imap_command_duration_seconds', help: 'From an IMAP command read to its tagged response from the Dovecot that ran it, by command.', labelNames: ['command'], buckets: LATENCY_BUCKETS, registers });
    this.recipients = new Counter({ name: 'mailshare_gateway_lmtp_recipients_total', help: 'LMTP recipients by final reply class (delivered: 2xx after the data, temporary: 4xx, rejected: 5xx).', labelNames: ['result'], registers });
    this.migrations = new Counter({ name: 'mailshare_gateway_session_migrations_total', help: 'IMAP connections to a Dovecot moved to a user\'s new node with the client kept connected (migrated), or ended with BYE because their state could not be carried over (fell_back).', labelNames: ['outcome'], registers });
    gauge({ name: 'mailshare_gateway_sessions', help: 'Logged-in sessions by protocol.', labelNames: ['protocol'] }, (g) => byProtocol(g, view.sessions()));
    gauge({ name: 'mailshare_gateway_connections', help: 'Client connections open, by protocol (logged in or not).', labelNames: ['protocol'] }, (g) => byProtocol(g, view.connections()));
    const bytes = new Counter({
      name: 'mailshare_gateway_client_bytes_total',
      help: 'Bytes between clients and this gateway, by protocol and direction (received from clients, sent to them).',
      labelNames: ['protocol', 'direction'],
      registers,
      collect: () => {
        bytes.reset();
        for (const [protocol, b] of Object.entries(view.clientBytes())) {
          bytes.inc({ protocol, direction: 'received' }, b.received);
          bytes.inc({ protocol, direction: 'sent' }, b.sent);
        }
      },
    });
    gauge({ name: 'mailshare_gateway_owner_connections', help: "Connections to other users' Dovecots for shared mailboxes (in_use by a session, idle in the pool).", labelNames: ['state'] }, (g) => {
      const o = view.ownerConnections();
      g.set({ state: 'in_use' }, o.inUse);
      g.set({ state: 'idle' }, o.idle);
    });
    addAgentGauges(this.registry, agent);
  }

  login(protocol: GatewayProtocol, result: string): void {
    this.logins.inc({ protocol, result });
  }

  command(label: string, seconds: number): void {
    this.commands.observe({ command: label }, seconds);
  }

  migration(outcome: 'migrated' | 'fell_back'): void {
    this.migrations.inc({ outcome });
  }

  lmtpRecipient(code: number): void {
    this.recipients.inc({ result: code < 300 ? 'delivered' : code < 500 ? 'temporary' : 'rejected' });
  }
}
