import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendConnector, backendLogin } from '../../src/gateway/backend.js';
import { type DovecotInstance, mailRoot, startDovecot } from '../harness/dovecot.js';
import { waitFor } from '../harness/process.js';

/**
 * The gateway's connections to a Dovecot kept greeted ahead of logins
 * (BackendConnector), against a real Dovecot: filled after a login, used
 * once each, dropped when they prove stale or get old, none kept for a
 * server not in use.
 */
const root = mailRoot();
let dovecot: DovecotInstance;

beforeAll(async () => {
  dovecot = await startDovecot({ name: 'pool', mailRoot: root.path, users: { alice: 'alice-pw' }, master: { user: 'gateway', password: 'master-pw' } });
}, 30_000);
afterAll(async () => {
  await dovecot?.stop();
  root.remove();
});

async function login(via: BackendConnector, password = 'alice-pw'): Promise<boolean> {
  const r = await backendLogin(dovecot.address, 'x1', 'alice', password, { via });
  r.socket.destroy();
  return r.ok;
}

describe('connections kept greeted for logins', () => {
  it('keeps N after a login and uses each once', async () => {
    const via = new BackendConnector(undefined, { pool: 2 });
    try {
      expect(via.kept(dovecot.address)).toBe(0);
      expect(await login(via)).toBe(true);
      await waitFor(() => via.kept(dovecot.address) === 2, 5000);
      const next = backendLogin(dovecot.address, 'x2', 'alice', 'alice-pw', { via });
      // Taken at once, before the login's answer: one is left until the login is done.
      expect(via.kept(dovecot.address)).toBe(1);
      const r = await next;
      expect(r.ok).toBe(true);
      expect(r.tagged.toString()).toMatch(/^x2 OK/);
      r.socket.destroy();
      await waitFor(() => via.kept(dovecot.address) === 2, 5000);
      // A wrong password on a kept connection is an ordinary refusal.
      expect(await login(via, 'wrong')).toBe(false);
    } finally {
      via.close();
    }
  });

  it('survives a Dovecot killed and restarted: stale kept connections are dropped, the login goes on', async () => {
    const via = new BackendConnector(undefined, { pool: 2 });
    try {
      expect(await login(via)).toBe(true);
      await waitFor(() => via.kept(dovecot.address) === 2, 5000);
      // The killed master's login processes keep our connections open until we speak.
      await dovecot.restart();
      expect(via.kept(dovecot.address)).toBe(2);
      expect(await login(via)).toBe(true);
      await waitFor(() => via.kept(dovecot.address) === 2, 5000);
      expect(await login(via)).toBe(true);
    } finally {
      via.close();
    }
  }, 30_000);

  it('retires old ones, and keeps none for a server no longer used', async () => {
    const via = new BackendConnector(undefined, { pool: 2, maxAgeMs: 300, idleMs: 600 });
    try {
      expect(await login(via)).toBe(true);
      await waitFor(() => via.kept(dovecot.address) === 2, 5000);
      await waitFor(() => via.kept(dovecot.address) === 0, 5000);
    } finally {
      via.close();
    }
  });

  it('keeps none with a pool of 0', async () => {
    const via = new BackendConnector(undefined, { pool: 0 });
    expect(await login(via)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(via.kept(dovecot.address)).toBe(0);
    via.close();
  });
});
