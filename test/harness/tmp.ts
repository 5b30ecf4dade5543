import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * A fresh temporary directory; remove() deletes it and everything inside. A process that is still
 * ending (a Dovecot child finishing a delivery after its master stopped) may write into it while it
 * goes: the removal retries then (ENOTEMPTY, EBUSY) for up to about two seconds.
 */
export function tempDir(prefix = 'mailshare-test-'): { path: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { path: dir, remove: () => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }) };
}
