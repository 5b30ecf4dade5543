import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { DrainProgress } from '../../src/gen/mailshare/v1/placement.js';
import { startGatewayCluster } from '../harness/gateway-cluster.js';
import { bearer } from '../harness/grpc.js';
import { scrape } from '../harness/metrics.js';
import type { BenchResult } from './run.js';

const USERS = 200;
/** Sessions per user (all through the gateways, half through each). */
const PER_USER = 5;
const MESSAGES = 20;
/** Users whose sessions IDLE on INBOX, read a shared folder, or sit between commands. */
const IDLE_USERS = 60;
const SHARED_USERS = 60;
/** Sessions of the between-commands kind that probe with a FETCH every 20 ms, for the stall. */
const PROBES = 100;

/**
 * One IMAP client connection that keeps what a client must know
 * (RFC 3501 §7.4.1): the UID at each sequence number, from the untagged
 * responses it receives.
 */
class Client {
  private buf = '';
  private waiters: Array<{ re: RegExp; resolve: (s: string) => void }> = [];
  uids: Array<number | undefined> = [];
  closed = false;
  bye = false;
  private n = 0;
  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      this.check();
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  static async open(address: string, user: string): Promise<Client> {
    const [host, port] = address.split(':');
    const c = new Client(net.connect(Number(port), host));
    await c.until(/^\* OK[^\r]*\r\n/m);
    const r = await c.cmd(`LOGIN ${user} ${user}-pw`);
    if (!/ OK/.test(r)) throw new Error(`login ${user}: ${r}`);
    return c;
  }

  private check(): void {
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i]!;
      const m = w.re.exec(this.buf);
      if (!m) continue;
      const out = this.buf.slice(0, m.index + m[0].length);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.waiters.splice(i, 1);
      this.apply(out);
      w.resolve(out);
      i = -1;
    }
  }

  private apply(text: string): void {
    for (const line of text.split('\r\n')) {
      let m: RegExpExecArray | null;
      if ((m = /^\* (\d+) EXPUNGE$/.exec(line))) this.uids.splice(Number(m[1]) - 1, 1);
      else if ((m = /^\* (\d+) EXISTS$/.exec(line))) while (this.uids.length < Number(m[1])) this.uids.push(undefined);
      else if ((m = /^\* (\d+) FETCH \(UID (\d+)/.exec(line))) this.uids[Number(m[1]) - 1] = Number(m[2]);
      else if (/^\* BYE \[UNAVAILABLE\]/.test(line)) this.bye = true;
    }
  }

  until(re: RegExp, ms = 60_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}`)), ms);
      this.waiters.push({
        re,
        resolve: (s) => {
          clearTimeout(t);
          resolve(s);
        },
      });
      this.check();
    });
  }

  cmd(text: string, ms = 60_000): Promise<string> {
    const tag = `t${++this.n}`;
    this.socket.write(`${tag} ${text}\r\n`);
    return this.until(new RegExp(`^${tag} (OK|NO|BAD)[^\\r]*\\r\\n`, 'm'), ms);
  }

  write(s: string): void {
    this.socket.write(s);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** MESSAGES messages per user, written straight into their maildirs (what APPEND would leave). */
function populate(root: string, users: string[]): void {
  const uid = Number(execFileSync('id', ['-u', 'nobody']).toString());
  const gid = Number(execFileSync('getent', ['group', 'nogroup']).toString().split(':')[2]);
  for (const u of users) {
    for (const d of ['', 'cur', 'new', 'tmp']) {
      mkdirSync(path.join(root, u, d), { recursive: true });
      chownSync(path.join(root, u, d), uid, gid);
    }
    for (let i = 0; i < MESSAGES; i++) {
      const f = path.join(root, u, 'cur', `${1_700_000_000 + i}.M${i}P1.bench:2,S`);
      writeFileSync(f, `From: bench@example.com\r\nSubject: ${u} ${i}\r\n\r\nhello\r\n`);
      chownSync(f, uid, gid);
    }
  }
}

/**
 * migration: a drain of a node holding 1,000 IMAP sessions through real
 * gateways and Dovecots (300 in IDLE on INBOX, 300 with a shared folder
 * selected whose owner moves too, 400 between commands, 100 of them
 * fetching every 20 ms). Counted: client disconnects (goal 0), IDLE clients
 * that see the EXISTS of mail delivered after the drain (goal all), clients
 * whose FETCH by sequence number gives another message than before (goal
 * none); figures: drain time, the longest stall of a probing client's
 * command. The ratio is the share of sessions kept.
 */
export async function migrationBench(): Promise<BenchResult> {
  // Each IDLE of Dovecot's holds an inotify instance (all run as one user here): without enough, IDLE
  // falls back to polling every 30 s and the new mail is not heard in time.
  const { readFileSync } = await import('node:fs');
  const inotify = '/proc/sys/fs/inotify/max_user_instances';
  if (Number(readFileSync(inotify, 'utf8')) < 4096) {
    try {
      writeFileSync(inotify, '4096\n');
    } catch {
      process.stderr.write(`migration: could not raise ${inotify} (needs root); IDLE may fall back to polling\n`);
    }
  }
  const users = Array.from({ length: USERS }, (_, i) => `u${i}`);
  // Why sessions were not migrated, as the gateways log it.
  const reasons = new Map<string, number>();
  // A fallback is a warning (`session not migrated`, with why); a migration that threw, `session migration failed`.
  const count = (o: Record<string, unknown>, msg: string): void => {
    if (msg === 'session not migrated') reasons.set(String(o.why), (reasons.get(String(o.why)) ?? 0) + 1);
    if (msg === 'session migration failed') reasons.set(String(o.err), (reasons.get(String(o.err)) ?? 0) + 1);
  };
  const logger = {
    info: count,
    warn: count,
    debug: () => undefined,
  };
  const cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: Object.fromEntries(users.map((u) => [u, `${u}-pw`])), tenant: true, gateway: () => ({ metricsListen: '127.0.0.1:0', maxConnectionsPerIp: 5000, logger }) });
  const clients: Client[] = [];
  try {
    populate(cluster.mailRoot, users);
    process.stderr.write('migration: placing users on n1\n');
    for (const u of users) await cluster.pin(u, 'n1');
    const gw = cluster.gateways.map((g) => g.address());
    // Owners u60…u119 share Team with the next one of them.
    const shared = users.slice(IDLE_USERS, IDLE_USERS + SHARED_USERS);
    const ownerOf = (reader: number): string => shared[(reader - IDLE_USERS + 1) % SHARED_USERS]!;
    for (let i = 0; i < SHARED_USERS; i++) {
      const owner = shared[i]!;
      const reader = shared[(i - 1 + SHARED_USERS) % SHARED_USERS]!;
      const c = await Client.open(gw[0]!, owner);
      await c.cmd('CREATE Team');
      for (let k = 0; k < 3; k++) {
        const msg = `Subject: team ${k}\r\n\r\nx\r\n`;
        await c.cmd(`APPEND Team {${msg.length}+}\r\n${msg}`);
      }
      await c.cmd(`SETACL Team ${reader} lrs`);
      await c.cmd('LOGOUT');
      c.close();
    }
    process.stderr.write(`migration: opening ${USERS * PER_USER} sessions\n`);
    const kinds: Array<'idle' | 'shared' | 'still'> = [];
    const before: Array<Array<number | undefined>> = [];
    for (let i = 0; i < USERS; i++) {
      const kind = i < IDLE_USERS ? 'idle' : i < IDLE_USERS + SHARED_USERS ? 'shared' : 'still';
      await Promise.all(
        Array.from({ length: PER_USER }, async (_, k) => {
          const c = await Client.open(gw[(i * PER_USER + k) % 2]!, users[i]!);
          await c.cmd(kind === 'shared' ? `SELECT Shared/${ownerOf(i)}/Team` : 'SELECT INBOX');
          await c.cmd('FETCH 1:* (UID)');
          before.push([...c.uids]);
          clients.push(c);
          kinds.push(kind);
          if (kind === 'idle') {
            c.write('idle IDLE\r\n');
            await c.until(/^\+ [^\r]*\r\n/m);
          }
        }),
      );
    }
    // Probes: some of the between-commands sessions fetch in a loop; the longest wait is the stall.
    const probes = clients.filter((_, j) => kinds[j] === 'still').slice(0, PROBES);
    let probing = true;
    let stall = 0;
    let probeErrors = 0;
    const loops = probes.map(async (c) => {
      while (probing) {
        const t = performance.now();
        const r = await c.cmd('FETCH 1 (UID)', 30_000).catch(() => 'lost');
        if (!/^t\d+ OK/m.test(r)) probeErrors++;
        stall = Math.max(stall, performance.now() - t);
        await new Promise((res) => setTimeout(res, 20));
      }
    });
    await new Promise((res) => setTimeout(res, 500));
    const quietStall = stall;
    stall = 0;
    process.stderr.write('migration: draining n1\n');
    const t0 = performance.now();
    const progress = await new Promise<DrainProgress>((resolve, reject) => {
      let last: DrainProgress | undefined;
      const s = cluster.placement.drain({ name: 'n1', parallelism: 16, timeoutMs: 5000 }, bearer(cluster.server.adminToken));
      s.on('data', (p: DrainProgress) => (last = p));
      s.on('end', () => (last ? resolve(last) : reject(new Error('drain ended without progress'))));
      s.on('error', reject);
    });
    const drainSecs = (performance.now() - t0) / 1000;
    // Every session has moved when a command of each completes (commands wait for a move in progress).
    const settled = performance.now();
    await Promise.all(clients.map((c, j) => (kinds[j] === 'idle' || c.closed ? undefined : c.cmd('NOOP', 15_000).catch(() => undefined))));
    const settleSecs = (performance.now() - settled) / 1000;
    probing = false;
    await Promise.all(loops);
    process.stderr.write('migration: delivering to IDLE users\n');
    // Mail for each IDLE user after the drain: every IDLE session must hear of it.
    const exists = clients.map((c, j) => (kinds[j] === 'idle' ? c.until(new RegExp(`^\\* ${before[j]!.length + 1} EXISTS\\r\\n`, 'm'), 20_000).then(() => true, () => false) : Promise.resolve(false)));
    for (const u of users.slice(0, IDLE_USERS)) {
      const w = await Client.open(gw[1]!, u);
      const msg = `Subject: after drain\r\n\r\nnew\r\n`;
      await w.cmd(`APPEND INBOX {${msg.length}+}\r\n${msg}`);
      await w.cmd('LOGOUT');
      w.close();
    }
    const heard = (await Promise.all(exists)).filter((x, j) => x && kinds[j] === 'idle').length;
    for (const [j, c] of clients.entries()) if (kinds[j] === 'idle') c.write('DONE\r\n');
    // The same message at each sequence number as before the drain (what the client was told since included).
    let mismatched = 0;
    await Promise.all(
      clients.map(async (c, j) => {
        if (kinds[j] === 'idle') await c.until(/^idle (OK|NO|BAD)[^\r]*\r\n/m, 10_000).catch(() => undefined);
        const r = await c.cmd('FETCH 1:* (UID)').catch(() => '');
        const now = [...r.matchAll(/^\* \d+ FETCH \(UID (\d+)\)/gm)].map((m) => Number(m[1]));
        // Nothing was expunged: each number keeps its message; the client's own map agrees.
        if (JSON.stringify(now.slice(0, before[j]!.length)) !== JSON.stringify(before[j]) || JSON.stringify(c.uids) !== JSON.stringify(now)) mismatched++;
      }),
    );
    const disconnected = clients.filter((c) => c.closed || c.bye).length;
    const migrated = (await Promise.all(cluster.gateways.map(async (g) => (await scrape(g.metricsAddress()!)).value('mailshare_gateway_session_migrations_total', { outcome: 'migrated' }) ?? 0))).reduce((a, b) => a + b, 0);
    const fellBack = (await Promise.all(cluster.gateways.map(async (g) => (await scrape(g.metricsAddress()!)).value('mailshare_gateway_session_migrations_total', { outcome: 'fell_back' }) ?? 0))).reduce((a, b) => a + b, 0);
    const total = clients.length;
    const idleCount = kinds.filter((k) => k === 'idle').length;
    return {
      name: 'migration',
      ratio: (total - disconnected) / total,
      goal: '1.0x of sessions kept (0 disconnects) in a drain of 1,000, every IDLE hears the new mail, every FETCH by number the same message',
      met: disconnected === 0 && heard === idleCount && mismatched === 0 && probeErrors === 0,
      figures: {
        sessions: total,
        'users moved': progress.moved,
        'drain s': +drainSecs.toFixed(2),
        'sessions settled after s': +settleSecs.toFixed(2),
        'connections migrated': migrated,
        'fell back to BYE': fellBack,
        ...(reasons.size > 0 ? { 'why not migrated': [...reasons].map(([k, v]) => `${v}× ${k}`).join('; ') } : {}),
        disconnects: disconnected,
        'IDLE sessions hearing new mail': `${heard}/${idleCount}`,
        'FETCH-by-number mismatches': mismatched,
        'probe commands failed': probeErrors,
        'longest probe command ms (drain)': +stall.toFixed(1),
        'longest probe command ms (quiet)': +quietStall.toFixed(1),
      },
    };
  } catch (err) {
    // What the Dovecots said, before their directories go.
    for (const d of cluster.dovecots) {
      const log = readFileSync(path.join(d.dir, 'dovecot.log'), 'utf8').split('\n');
      process.stderr.write(`migration: ${d.dir} log tail:\n${log.filter((l) => /rror|atal|arning/.test(l)).slice(-15).join('\n')}\n`);
    }
    throw err;
  } finally {
    for (const c of clients) c.close();
    await cluster.stop();
  }
}
