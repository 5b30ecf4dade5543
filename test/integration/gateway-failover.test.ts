import { type ChildProcess, spawn } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlacementServiceClient } from '../../src/gen/mailshare/v1/placement.js';
import { createGateway, type Gateway } from '../../src/gateway/gateway.js';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { startEtcd, type EtcdCluster } from '../harness/etcd.js';
import { unaryCall } from '../harness/grpc.js';
import { RawImap, message } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';
import { BIN, cleanEnv, startInProcessServer, type InProcessServer } from '../harness/server.js';

const USERS = { alice: 'alice-pw' };
const MASTER = { user: 'gateway', password: 'master-pw' };

let etcd: EtcdCluster;
let server: InProcessServer;
let root: ReturnType<typeof mailRoot>;
const dovecots: DovecotInstance[] = [];
let child: ChildProcess | undefined;
let survivor: Gateway;
let placement: PlacementServiceClient;
/** What the surviving gateway logged (info and up), shown when the session fails to move. */
const logged: string[] = [];
const keep = (level: string) => (obj: object, msg?: string) => logged.push(`${new Date().toISOString()} ${level} ${msg ?? ''} ${JSON.stringify(obj)}`);

const locate = (user: string, assign = false) => unaryCall(placement.locate.bind(placement), { tenant: 'acme', user, mailbox: '', assign }, server.adminToken);

beforeAll(async () => {
  etcd = await startEtcd();
  server = await startInProcessServer({ endpoints: etcd.endpoints });
  const admin = connectApi(server.address, server.adminToken);
  const tokenFor = nodeTokens(admin);
  const [n1Token, n2Token] = [await tokenFor('n1'), await tokenFor('n2')];
  admin.close();
  root = mailRoot();
  for (const name of ['n1', 'n2']) dovecots.push(await startDovecot({ name, mailRoot: root.path, users: USERS, master: MASTER }));
  // The survivor's own lease is not what is tested: 5 s, so a loaded machine's pauses do not cost it
  // its lease (it would then rightly serve nothing). n1's is 2 s, as the test says.
  survivor = createGateway({ listen: '127.0.0.1:0', coordinators: [server.address], token: n2Token, node: { name: 'n2', backend: dovecots[1]!.address }, tenant: 'acme', ttlSeconds: 5, master: MASTER, logger: { info: keep('info'), warn: keep('warn'), debug: () => undefined } });
  await survivor.start();
  placement = new PlacementServiceClient(server.address, grpc.credentials.createInsecure());
  // n1 is a real gateway process, so it can be killed with SIGKILL.
  child = spawn(process.execPath, [BIN, 'gateway', '--node', 'n1', '--backend', dovecots[0]!.address, '--tenant', 'acme', '--listen', '127.0.0.1:0', '--coordinators', server.address, '--ttl', '2', '--log-level', 'warn', '--master-user', MASTER.user], {
    env: cleanEnv({ MAILSHARE_TOKEN: n1Token, MAILSHARE_MASTER_PASSWORD: MASTER.password }),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  await waitFor(() => /listening on (\S+)/.test(out), 20_000, 'gateway n1 listening');
  n1Address = /listening on (\S+)/.exec(out)![1]!;
  await locate('alice', true);
  if ((await locate('alice')).node !== 'n1') await unaryCall(placement.move.bind(placement), { tenant: 'acme', user: 'alice', toNode: 'n1', timeoutMs: 2000 }, server.adminToken);
}, 60_000);
let n1Address = '';
afterAll(async () => {
  child?.kill('SIGKILL');
  placement?.close();
  await survivor?.close().catch(() => undefined);
  for (const d of dovecots) await d.stop().catch(() => undefined);
  await server?.stop();
  await etcd?.stop();
  root?.remove();
});

async function appendOne(c: RawImap, subject: string): Promise<boolean> {
  const m = message(subject);
  c.write(`ap APPEND INBOX {${m.length}+}\r\n${m}\r\n`);
  try {
    return /^ap OK/m.test(await c.until(/^(ap (OK|NO|BAD)[^\r]*|\* BYE[^\r]*)\r\n/m, 5000));
  } catch {
    return false;
  }
}

describe('a node killed with SIGKILL', () => {
  it("its users reconnect through another gateway, land on a new node, and no acknowledged APPEND is lost; sessions through other gateways move with them", async () => {
    expect((await locate('alice')).node).toBe('n1');
    const acked: string[] = [];
    let c = await RawImap.login(n1Address, 'alice', USERS.alice);
    for (let i = 0; i < 10; i++) if (await appendOne(c, `m${i}`)) acked.push(`m${i}`);
    expect(acked.length).toBe(10);
    // A session through the other gateway, relayed to n1: it survives the node's death (migration).
    const through = await RawImap.login(survivor.address(), 'alice', USERS.alice);
    await through.cmd('SELECT INBOX');
    const map = async (r: RawImap): Promise<string[]> => [...(await r.cmd('FETCH 1:* (UID)')).matchAll(/^\* (\d+) FETCH \(UID (\d+)\)/gm)].map((x) => `${x[1]}:${x[2]}`);
    const seen = await map(through);
    expect(seen).toHaveLength(10);
    // Kill the node's gateway and Dovecot (all its processes) while an APPEND is on its way.
    const m = message('in flight');
    c.write(`ap APPEND INBOX {${m.length}+}\r\n${m}\r\n`);
    const killedAt = Date.now();
    child!.kill('SIGKILL');
    dovecots[0]!.killAll();
    c.close();
    // Its command waits while the session follows alice to n2 once n1's lease (TTL 2 s) is gone.
    await new Promise((r) => setTimeout(r, 300));
    const noop = await through.cmd('NOOP', 15_000).catch((err: unknown) => `${String(err)}\nthe surviving gateway logged:\n${logged.join('\n')}`);
    expect(noop).toMatch(/^t\d+ OK/m);
    const movedAfter = Date.now() - killedAt;
    expect(through.closed).toBe(false);
    // The message in flight may have been written before the kill: then the client hears of it.
    const after = await map(through);
    expect(after.slice(0, 10)).toEqual(seen);
    expect(after.length).toBeLessThanOrEqual(11);
    console.log(`session through the surviving gateway moved ${movedAfter} ms after the node was killed (TTL 2 s)`);
    through.close();

    // The client retries through the other gateway until alice's old lease is gone.
    await waitFor(
      async () => {
        try {
          c = await RawImap.login(survivor.address(), 'alice', USERS.alice);
          return true;
        } catch (err) {
          expect(String(err)).toMatch(/NO \[UNAVAILABLE\]/);
          return false;
        }
      },
      15_000,
      'login through the surviving gateway',
    );
    const now = await locate('alice');
    expect(now.node).toBe('n2');
    for (let i = 10; i < 20; i++) if (await appendOne(c, `m${i}`)) acked.push(`m${i}`);
    expect(acked.length).toBe(20);
    await c.cmd('SELECT INBOX');
    const fetched = await c.cmd('FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
    const subjects = [...fetched.matchAll(/Subject: (\S+)/g)].map((x) => x[1]);
    for (const s of acked) expect(subjects).toContain(s);
    c.close();
  }, 60_000);
});
