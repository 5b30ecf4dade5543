import { randomUUID } from 'node:crypto';
import { type GatewayCluster, startGatewayCluster } from './gateway-cluster.js';
import { RawImap, accountSnapshot, message } from './imap.js';

export const VICTIM_USERS = { alice: 'alice-pw', bob: 'bob-pw' };

/**
 * The setup of the security tests: alice on n1, bob on n2 (taps in front
 * of both Dovecots); alice shares Projects with bob as "lr" and Team as
 * "lri", and has Secret, Victim and an INBOX holding `secret`, which bob
 * must never see. `snapshot()` reads alice's whole account from her
 * Dovecot directly.
 */
export interface VictimCluster {
  readonly cluster: GatewayCluster;
  /** The gateway bob connects through (his own node's). */
  readonly gwBob: string;
  readonly aliceDovecot: string;
  readonly secret: string;
  snapshot(): Promise<string>;
  stop(): Promise<void>;
}

export async function startVictimCluster(): Promise<VictimCluster> {
  const cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: VICTIM_USERS, tenant: true, tap: true });
  try {
    await cluster.pin('alice', 'n1');
    await cluster.pin('bob', 'n2');
    const secret = `TOPSECRET-${randomUUID()}`;
    const alice = await RawImap.login(cluster.gateways[0]!.address(), 'alice', VICTIM_USERS.alice);
    for (const box of ['Projects', 'Secret', 'Victim', 'Team']) {
      if (!/^t\d+ OK/m.test(await alice.cmd(`CREATE ${box}`))) throw new Error(`CREATE ${box} failed`);
    }
    for (const [box, subject] of [['Projects', 'plan A'], ['Secret', secret], ['INBOX', secret]] as const) {
      const m = message(subject, `${subject} body`);
      alice.write(`ap APPEND ${box} {${m.length}+}\r\n${m}\r\n`);
      await alice.until(/^ap OK/m);
    }
    for (const acl of ['SETACL Projects bob lr', 'SETACL Team bob lri']) {
      if (!/^t\d+ OK/m.test(await alice.cmd(acl))) throw new Error(`${acl} failed`);
    }
    alice.close();
    const aliceDovecot = cluster.dovecots[0]!.address;
    return {
      cluster,
      gwBob: cluster.gateways[1]!.address(),
      aliceDovecot,
      secret,
      snapshot: () => accountSnapshot(aliceDovecot, 'alice', VICTIM_USERS.alice),
      stop: () => cluster.stop(),
    };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}
