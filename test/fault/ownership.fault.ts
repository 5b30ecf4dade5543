import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { openLocateStream } from '../harness/locate-stream.js';
import { startInProcessServer, REPO_ROOT, type InProcessServer } from '../harness/server.js';

/**
 * Fault test 1 (ownership safety): three nodes and 10,000 users; for a while
 * (MAILSHARE_FAULT_SECONDS, default 45) nodes are killed with SIGKILL and
 * restarted or stalled with SIGSTOP past their lease TTL (zombies that wake
 * up with writes queued), and one etcd member of three is killed and
 * restarted, while clients locate users
 * and "write" to the node they were given, carrying the epoch. A node accepts
 * a write only while its agent holds the user at that epoch. The checker
 * goes over every accepted write in wall-clock order: per user the epochs
 * must never go back (an older epoch accepted after a newer one means two
 * nodes wrote the same mailbox). Goal: 0 such overlaps.
 */
const SECONDS = Number(process.env.MAILSHARE_FAULT_SECONDS ?? 45);
const USERS = 10_000;
const NODES = ['n1', 'n2', 'n3'];

let etcd: EtcdCluster;
let server: InProcessServer;
let nodeToken = '';
const nodeTokenOf = new Map<string, string>();
const procs = new Map<string, ChildProcess>();
const all: ChildProcess[] = [];
const accepts: Array<{ u: string; e: number; t: number; node: string }> = [];

function startNode(name: string): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/harness/fenced-node.ts'), server.address, nodeTokenOf.get(name)!, name, '2', 'acme'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  all.push(child);
  procs.set(name, child);
  let buf = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const ev = JSON.parse(buf.slice(0, nl)) as { ev: string; u: string; e: number; t: number; err?: string };
        buf = buf.slice(nl + 1);
        if (ev.ev === 'accept') accepts.push({ u: ev.u, e: ev.e, t: ev.t, node: name });
        else if (ev.ev === 'ready') resolve();
        else if (ev.ev === 'error') reject(new Error(ev.err));
      }
    });
    child.on('exit', () => resolve());
  });
}

beforeAll(async () => {
  etcd = await startEtcd({ members: 3 });
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  const tokenFor = nodeTokens(admin);
  for (const name of NODES) nodeTokenOf.set(name, await tokenFor(name));
  nodeToken = nodeTokenOf.get(NODES[0]!)!;
  admin.close();
  await Promise.all(NODES.map((n) => startNode(n)));
}, 120_000);
afterAll(async () => {
  for (const c of all) c.kill('SIGKILL');
  await server?.stop();
  await etcd?.stop();
});

/** Pipelined line client per node address; answers come back in order. */
class Writer {
  private readonly sockets = new Map<string, { s: net.Socket; queue: Array<(ok: boolean | undefined) => void>; buf: string }>();
  write(address: string, user: string, epoch: number): Promise<boolean | undefined> {
    let c = this.sockets.get(address);
    if (!c || c.s.destroyed) {
      const [host, port] = address.split(':');
      const s = net.connect(Number(port), host);
      const conn = { s, queue: [] as Array<(ok: boolean | undefined) => void>, buf: '' };
      s.on('data', (d: Buffer) => {
        conn.buf += d.toString();
        for (let nl = conn.buf.indexOf('\n'); nl >= 0; nl = conn.buf.indexOf('\n')) {
          conn.queue.shift()?.(conn.buf.slice(0, nl) === 'ok');
          conn.buf = conn.buf.slice(nl + 1);
        }
      });
      const fail = (): void => {
        s.destroy();
        for (const q of conn.queue.splice(0)) q(undefined);
      };
      s.on('error', fail);
      s.on('close', fail);
      this.sockets.set(address, conn);
      c = conn;
    }
    const conn = c;
    return new Promise((resolve) => {
      conn.queue.push(resolve);
      conn.s.write(`${user} ${epoch}\n`);
      // A stalled node keeps the request: the client moves on, the write stays queued there.
      setTimeout(() => resolve(undefined), 500);
    });
  }
  close(): void {
    for (const c of this.sockets.values()) c.s.destroy();
  }
}

describe('ownership safety under SIGKILL of nodes and of an etcd member', () => {
  it('never accepts an older epoch for a user after a newer one', async () => {
    const client = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
    const lookups = openLocateStream(client, nodeToken, { timeoutMs: 5000 });
    const locate = (user: string) => lookups.locate('acme', user, true);
    // Everyone gets a node first.
    for (let i = 0; i < USERS; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => locate(`u${i + j}`)));

    const writer = new Writer();
    const stats = { located: 0, accepted: 0, refused: 0, unreachable: 0, nodeKills: 0, nodePauses: 0, etcdKills: 0 };
    let stop = false;
    const clients = Array.from({ length: 48 }, async () => {
      while (!stop) {
        const user = `u${Math.floor(Math.random() * USERS)}`;
        const r = await locate(user);
        if (!r || r.code !== 0 || !r.response?.imapAddress) {
          await new Promise((res) => setTimeout(res, 20));
          continue;
        }
        stats.located++;
        const ok = await writer.write(r.response.imapAddress, user, r.response.epoch);
        if (ok === true) stats.accepted++;
        else if (ok === false) stats.refused++;
        else stats.unreachable++;
      }
    });
    const chaos = (async () => {
      const end = Date.now() + SECONDS * 1000;
      // Every kind of fault in turn, on a random node or member, at random moments.
      for (let step = 0; Date.now() < end; step++) {
        await new Promise((r) => setTimeout(r, 1500 + Math.random() * 2500));
        const kind = ['stall', 'kill', 'stall', 'etcd'][step % 4];
        if (kind === 'stall') {
          // A zombie: the node stalls past its lease TTL (2 s), its users move on, then it wakes
          // up with clients' writes queued and a cache that still names it as their holder.
          const name = NODES[Math.floor(Math.random() * NODES.length)]!;
          const p = procs.get(name);
          p?.kill('SIGSTOP');
          stats.nodePauses++;
          await new Promise((r) => setTimeout(r, 3000 + Math.random() * 2000));
          p?.kill('SIGCONT');
        } else if (kind === 'kill') {
          const name = NODES[Math.floor(Math.random() * NODES.length)]!;
          procs.get(name)?.kill('SIGKILL');
          stats.nodeKills++;
          await new Promise((r) => setTimeout(r, 1000 + Math.random() * 2000));
          await startNode(name);
        } else {
          const i = Math.floor(Math.random() * 3);
          process.kill(etcd.members[i]!.pid, 'SIGKILL');
          stats.etcdKills++;
          await new Promise((r) => setTimeout(r, 2000 + Math.random() * 2000));
          await etcd.restart(i);
        }
      }
    })();
    await chaos;
    stop = true;
    await Promise.all(clients);
    writer.close();
    lookups.close();
    client.close();
    await new Promise((r) => setTimeout(r, 500));

    const byUser = new Map<string, Array<{ e: number; t: number; node: string }>>();
    for (const a of accepts) {
      const l = byUser.get(a.u);
      if (l) l.push(a);
      else byUser.set(a.u, [a]);
    }
    let overlaps = 0;
    let moves = 0;
    for (const [user, list] of byUser) {
      list.sort((a, b) => a.t - b.t);
      let newest = list[0]!;
      for (const a of list) {
        if (a.e < newest.e) {
          overlaps++;
          if (overlaps <= 5) process.stdout.write(`overlap: ${user} epoch ${a.e} on ${a.node} at ${a.t} after epoch ${newest.e} on ${newest.node} at ${newest.t}\n`);
        } else if (a.e > newest.e) {
          moves++;
          newest = a;
        }
      }
    }
    process.stdout.write(
      `ownership: ${SECONDS} s, ${stats.nodeKills} node kills, ${stats.nodePauses} node stalls (SIGSTOP past the TTL), ${stats.etcdKills} etcd member kills, ${stats.located} locates, ${accepts.length} accepted writes ` +
        `(${stats.refused} refused, ${stats.unreachable} unreachable), ${byUser.size} users written, ${moves} ownership changes seen, ${overlaps} overlaps\n`,
    );
    expect(stats.nodeKills + stats.nodePauses + stats.etcdKills).toBeGreaterThanOrEqual(3);
    expect(moves).toBeGreaterThan(0);
    expect(accepts.length).toBeGreaterThan(1000);
    expect(overlaps).toBe(0);
  });
});
