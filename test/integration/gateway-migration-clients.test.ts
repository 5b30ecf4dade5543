import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import type { DrainProgress } from '../../src/gen/mailshare/v1/placement.js';
import { bearer, unaryCall } from '../harness/grpc.js';
import { RawImap, message } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

const USERS = { alice: 'alice-pw', bob: 'bob-pw' };

let cluster: GatewayCluster;
let work: string;

beforeAll(async () => {
  cluster = await startGatewayCluster({
    nodes: ['n1', 'n2'],
    users: USERS,
    tenant: true,
    gateway: () => (process.env.MIGRATION_DEBUG ? { logger: { info: console.log, warn: console.log, debug: () => undefined } } : {}),
  });
  work = mkdtempSync(path.join(os.tmpdir(), 'mailshare-migration-clients-'));
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const move = (user: string, to: string) => unaryCall(cluster.placement.move.bind(cluster.placement), { tenant: 'acme', user, toNode: to, timeoutMs: 3000 }, cluster.server.adminToken);
const locate = (user: string) => unaryCall(cluster.placement.locate.bind(cluster.placement), { tenant: 'acme', user, mailbox: '', assign: false }, cluster.server.adminToken);

async function fill(user: keyof typeof USERS, n: number, size = 200): Promise<void> {
  const c = await RawImap.login(cluster.gateways[0]!.address(), user, USERS[user]);
  for (let i = 1; i <= n; i++) {
    const msg = message(`${user} ${i}`, 'x'.repeat(size));
    c.write(`a${i} APPEND INBOX {${msg.length}+}\r\n${msg}\r\n`);
  }
  await c.until(new RegExp(`^a${n} OK`, 'm'), 30_000);
  c.close();
}

/** A child process whose stdout is read line by line. */
function child(cmd: string, args: string[]): { proc: ChildProcess; out: string[]; err: string[]; exited: Promise<number | null> } {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: string[] = [];
  const err: string[] = [];
  let partial = '';
  proc.stdout!.on('data', (c: Buffer) => {
    const lines = (partial + c.toString('utf8')).split('\n');
    partial = lines.pop()!;
    out.push(...lines);
  });
  proc.stderr!.on('data', (c: Buffer) => err.push(c.toString('utf8')));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return { proc, out, err, exited };
}

/** Python imaplib: reads the mailbox by sequence number, waits for "go", reads it again on the same connection. */
const IMAPLIB = String.raw`
import imaplib, json, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = imaplib.IMAP4(host, port)
c.login(user, pw)
c.select('INBOX')
def read():
    typ, data = c.fetch('1:*', '(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
    assert typ == 'OK', typ
    out = []
    for item in data:
        if isinstance(item, tuple):
            head = item[0].decode()
            seq = int(head.split()[0])
            uid = int(head.split('UID ')[1].split()[0])
            out.append([seq, uid, item[1].decode().strip()])
    return out
print(json.dumps({'before': read()}), flush=True)
sys.stdin.readline()
typ, _ = c.noop()
assert typ == 'OK', typ
after = read()
typ, data = c.fetch('2', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
second = data[0][1].decode().strip()
c.logout()
print(json.dumps({'after': after, 'second': second}), flush=True)
`;

/** An mbsync configuration that pulls bob's INBOX from host:port into `local` (its state in `state`). */
function mbsyncrc(host: string, port: string, local: string, state: string): string {
  const rc = path.join(state, 'mbsyncrc');
  writeFileSync(
    rc,
    [
      'IMAPAccount gw',
      `Host ${host}`,
      `Port ${port}`,
      'User bob',
      `Pass ${USERS.bob}`,
      'SSLType None',
      'AuthMechs LOGIN',
      '',
      'IMAPStore remote',
      'Account gw',
      '',
      'MaildirStore local',
      `Path ${local}/`,
      `Inbox ${local}/INBOX`,
      '',
      'Channel bob',
      'Far :remote:',
      'Near :local:',
      'Patterns INBOX',
      'Create Near',
      'Sync Pull',
      `SyncState ${state}/`,
      '',
    ].join('\n'),
  );
  return rc;
}

describe('session migration with real clients', () => {
  it('Python imaplib keeps its connection and its sequence numbers across a move', async () => {
    await cluster.pin('alice', 'n1');
    await fill('alice', 5);
    const [host, port] = cluster.gateways[1]!.address().split(':');
    const py = child('python3', ['-c', IMAPLIB, host!, port!, 'alice', USERS.alice]);
    await waitFor(() => py.out.some((l) => l.startsWith('{"before"')), 15_000, 'imaplib ready');
    const before = JSON.parse(py.out.find((l) => l.startsWith('{"before"'))!).before as unknown[];
    expect(before).toHaveLength(5);
    expect((await move('alice', 'n2')).node).toBe('n2');
    py.proc.stdin!.write('go\n');
    expect(await py.exited).toBe(0);
    const result = JSON.parse(py.out.find((l) => l.startsWith('{"after"'))!) as { after: unknown[]; second: string };
    expect(result.after).toEqual(before);
    expect(result.second).toBe('Subject: alice 2');
    expect(py.err.join('')).toBe('');
  }, 60_000);

  it('mbsync pulls a mailbox through a move in the middle of its run: one connection, every message, exit 0', async () => {
    await cluster.pin('bob', 'n1');
    const total = 1000;
    await fill('bob', total, 20_000);
    const local = path.join(work, 'bob');
    mkdirSync(local);
    const [host, port] = cluster.gateways[1]!.address().split(':');
    const rc = mbsyncrc(host!, port!, local, work);
    // -Dn: the IMAP conversation, to see the run is under way and that it never reconnects.
    const sync = child('mbsync', ['-Dn', '-c', rc, 'bob']);
    let moved = false;
    let exitedEarly = false;
    void sync.exited.then(() => (exitedEarly = !moved));
    const fetches = (): number => sync.out.filter((l) => />>> \d+ UID FETCH [\d:,]+ \(BODY\.PEEK\[\]\)/.test(l)).length;
    await waitFor(() => fetches() >= 1 || exitedEarly, 30_000, 'mbsync fetching messages').catch((err: unknown) => {
      throw new Error(`${String(err)}\n${sync.out.slice(0, 60).join('\n')}\n${sync.err.join('')}`);
    });
    expect(exitedEarly, sync.out.join('\n')).toBe(false);
    expect((await move('bob', 'n2')).node).toBe('n2');
    moved = true;
    const code = await sync.exited;
    const log = sync.out.join('\n');
    expect(code, `${log.slice(-3000)}\n${sync.err.join('')}`).toBe(0);
    expect(moved).toBe(true);
    expect((await locate('bob')).node).toBe('n2');
    expect(log.match(/^\* BYE \[UNAVAILABLE\]/m)).toBeNull();
    // One connection and one login for the whole run.
    expect(sync.out.filter((l) => /Connecting to/i.test(l)).length).toBeLessThanOrEqual(1);
    expect(sync.out.filter((l) => /LOGIN/.test(l) && l.startsWith('>>>')).length).toBe(1);
    const files = ['cur', 'new'].flatMap((d) => readdirSync(path.join(local, 'INBOX', d)));
    expect(files).toHaveLength(total);
    // The rest of the run was served by n2's Dovecot (the gateway's master login as bob).
    expect(readFileSync(path.join(cluster.dovecots[1]!.dir, 'dovecot.log'), 'utf8')).toMatch(/(?:Login|Logged in): user=<bob>/);
  }, 120_000);

  it('a node drain with imaplib sessions and an mbsync run through both gateways: no client reconnects, every sequence number means the same message', async () => {
    await cluster.pin('alice', 'n1');
    await cluster.pin('bob', 'n1');
    // Four imaplib sessions of alice with INBOX selected, two through each node's gateway.
    const sessions = [0, 1, 0, 1].map((g) => {
      const [host, port] = cluster.gateways[g]!.address().split(':');
      return child('python3', ['-c', IMAPLIB, host!, port!, 'alice', USERS.alice]);
    });
    await waitFor(() => sessions.every((py) => py.out.some((l) => l.startsWith('{"before"'))), 20_000, 'imaplib sessions ready');
    const befores = sessions.map((py) => JSON.parse(py.out.find((l) => l.startsWith('{"before"'))!).before as unknown[]);
    // bob's 1,000 messages pulled afresh through n1's own gateway while n1 is drained.
    const state = mkdtempSync(path.join(work, 'drain-'));
    const local = path.join(state, 'bob');
    mkdirSync(local);
    const [host, port] = cluster.gateways[0]!.address().split(':');
    const sync = child('mbsync', ['-Dn', '-c', mbsyncrc(host!, port!, local, state), 'bob']);
    const fetches = (): number => sync.out.filter((l) => />>> \d+ UID FETCH [\d:,]+ \(BODY\.PEEK\[\]\)/.test(l)).length;
    let syncDone = false;
    void sync.exited.then(() => (syncDone = true));
    await waitFor(() => fetches() >= 1, 30_000, 'mbsync fetching messages');
    const drain = cluster.placement.drain({ name: 'n1', parallelism: 16, timeoutMs: 5000 }, bearer(cluster.server.adminToken));
    let moved = 0;
    await new Promise<void>((resolve, reject) => {
      drain.on('data', (p: DrainProgress) => (moved = p.moved));
      drain.on('end', () => resolve());
      drain.on('error', reject);
    });
    expect(moved).toBe(2);
    // The pull was still under way when its user was moved.
    expect(syncDone).toBe(false);
    expect((await locate('alice')).node).toBe('n2');
    expect((await locate('bob')).node).toBe('n2');
    for (const py of sessions) py.proc.stdin!.write('go\n');
    for (const [i, py] of sessions.entries()) {
      expect(await py.exited, py.err.join('')).toBe(0);
      const result = JSON.parse(py.out.find((l) => l.startsWith('{"after"'))!) as { after: unknown[] };
      expect(result.after).toEqual(befores[i]);
    }
    const code = await sync.exited;
    const log = sync.out.join('\n');
    expect(code, `${log.slice(-3000)}\n${sync.err.join('')}`).toBe(0);
    expect(log.match(/^\* BYE \[UNAVAILABLE\]/m)).toBeNull();
    expect(sync.out.filter((l) => /LOGIN/.test(l) && l.startsWith('>>>')).length).toBe(1);
    expect(['cur', 'new'].flatMap((d) => readdirSync(path.join(local, 'INBOX', d)))).toHaveLength(1000);
  }, 120_000);
});
