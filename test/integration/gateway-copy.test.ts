import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { RawImap, message } from '../harness/imap.js';
import { waitFor } from '../harness/process.js';

const USERS = { alice: 'alice-pw', dave: 'dave-pw' };

let cluster: GatewayCluster;
let gw: { n1: string; n2: string };

async function append(c: RawImap, mailbox: string, msg: string): Promise<string> {
  c.write(`ap APPEND "${mailbox}" {${msg.length}+}\r\n${msg}\r\n`);
  return c.until(/^ap (OK|NO|BAD)[^\r]*\r\n/m);
}

beforeAll(async () => {
  // Every user may keep three messages: saving a fourth fails with NO [OVERQUOTA], so a copy can fail part-way.
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true, quotaRules: ['*:messages=3'] });
  gw = { n1: cluster.gateways[0]!.address(), n2: cluster.gateways[1]!.address() };
  await cluster.pin('alice', 'n1');
  await cluster.pin('dave', 'n2');
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

describe('cross-node COPY and MOVE', () => {
  it('a copy that fails part-way leaves the target as it was and the source unchanged', async () => {
    const dave = await RawImap.login(gw.n2, 'dave', USERS.dave);
    expect(await dave.cmd('CREATE Limited')).toMatch(/^t\d+ OK/m);
    expect(await dave.cmd('SETACL Limited alice lrite')).toMatch(/^t\d+ OK/m);
    // dave keeps one message: two more fit.
    expect(await append(dave, 'INBOX', message('own'))).toMatch(/^ap OK/m);
    const alice = await RawImap.login(gw.n1, 'alice', USERS.alice);
    expect(await alice.cmd('CREATE Src')).toMatch(/^t\d+ OK/m);
    for (const n of [1, 2, 3]) expect(await append(alice, 'Src', message(`m${n}`))).toMatch(/^ap OK/m);
    await waitFor(async () => /Limited/.test(await alice.cmd('LIST "" "Shared/dave/*"')), 5000, 'share visible');
    expect(await alice.cmd('SELECT Src')).toMatch(/^t\d+ OK/m);

    // Two appends succeed, the third is over quota: the two are taken back.
    expect(await alice.cmd('COPY 1:3 Shared/dave/Limited')).toMatch(/^t\d+ NO \[OVERQUOTA\] COPY failed: .*nothing was copied/m);
    expect(await dave.cmd('STATUS Limited (MESSAGES)')).toMatch(/MESSAGES 0\)/);
    expect(await alice.cmd('UID MOVE 1:* Shared/dave/Limited')).toMatch(/^t\d+ NO \[OVERQUOTA\] MOVE failed: .*nothing was copied/m);
    expect(await dave.cmd('STATUS Limited (MESSAGES)')).toMatch(/MESSAGES 0\)/);
    const src = await alice.cmd('FETCH 1:* (FLAGS)');
    expect(src.match(/^\* \d+ FETCH/gm)).toHaveLength(3);
    expect(src).not.toMatch(/\\Deleted/);

    // Within the quota the copy goes through.
    expect(await alice.cmd('COPY 1:2 Shared/dave/Limited')).toMatch(/^t\d+ OK \[COPYUID /m);
    expect(await dave.cmd('STATUS Limited (MESSAGES)')).toMatch(/MESSAGES 2\)/);
    dave.close();
    alice.close();
  });
});
