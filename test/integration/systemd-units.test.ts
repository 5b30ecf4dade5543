import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, REPO_ROOT } from '../harness/server.js';
import { tempDir } from '../harness/tmp.js';

/**
 * deploy/systemd/ units as shipped: systemd-analyze verify passes (with
 * ExecStart pointing at this build instead of /usr/bin/mailshare), and
 * their hardening keeps systemd's exposure score low.
 */
const dir = path.join(REPO_ROOT, 'deploy/systemd');
const units = readdirSync(dir).filter((f) => f.endsWith('.service')).sort();
const tmp = tempDir('mailshare-units-');
afterAll(() => tmp.remove());
const available = spawnSync('systemd-analyze', ['--version']).status === 0;

describe.skipIf(!available)('deploy/systemd', () => {
  it('ships a unit for the coordinator, the gateway and the agent', () => {
    expect(units).toEqual(['mailshare-agent.service', 'mailshare-gateway.service', 'mailshare-server.service']);
  });

  it.each(units)('%s passes systemd-analyze verify and is hardened (exposure below 2.5)', (unit) => {
    const text = readFileSync(path.join(dir, unit), 'utf8');
    expect(text).toMatch(/^ExecStart=\/usr\/bin\/mailshare (server|gateway|agent) /m);
    const file = path.join(tmp.path, unit);
    writeFileSync(file, text.replaceAll('/usr/bin/mailshare', BIN));
    const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect(verify.status, verify.stderr).toBe(0);
    expect(verify.stderr).toBe('');
    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', file], { encoding: 'utf8' });
    const score = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(security.stdout + security.stderr)?.[1]);
    expect(score).toBeLessThan(2.5);
  });
});
