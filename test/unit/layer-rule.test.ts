import path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../harness/server.js';

/** The lint rule that keeps the layers honest must actually fire. */
describe('layer rule (eslint)', () => {
  const eslint = new ESLint({ cwd: REPO_ROOT });
  const lint = async (file: string, code: string): Promise<string[]> => {
    const [res] = await eslint.lintText(code, { filePath: path.join(REPO_ROOT, file) });
    return res!.messages.map((m) => `${m.ruleId}: ${m.message}`);
  };

  it('forbids domain importing store, etcd3 or node I/O, and Date.now', async () => {
    expect(await lint('src/domain/x.ts', "import { createKeys } from '../store/keys.js';\nexport const k = createKeys;\n")).toEqual([
      expect.stringMatching(/^import-x\/no-restricted-paths: .*src\/domain is pure/),
    ]);
    expect((await lint('src/domain/x.ts', "import { Etcd3 } from 'etcd3';\nexport const e = Etcd3;\n"))[0]).toMatch(/no-restricted-imports/);
    expect((await lint('src/domain/x.ts', "import { readFileSync } from 'node:fs';\nexport const r = readFileSync;\n"))[0]).toMatch(/no-restricted-imports/);
    expect((await lint('src/domain/x.ts', 'export const t = Date.now();\n'))[0]).toMatch(/no-restricted-properties/);
  });

  it('forbids clients (cli, agent, gateway) importing store, services or etcd3', async () => {
    for (const dir of ['cli', 'agent', 'gateway']) {
      const msgs = await lint(`src/${dir}/x.ts`, "import { TokenStore } from '../store/token-store.js';\nexport const t = TokenStore;\n");
      expect(msgs.some((m) => m.startsWith('import-x/no-restricted-paths'))).toBe(true);
      const etcd = await lint(`src/${dir}/x.ts`, "import { Etcd3 } from 'etcd3';\nexport const e = Etcd3;\n");
      expect(etcd.some((m) => m.startsWith('no-restricted-imports'))).toBe(true);
    }
  });

  it('forbids store importing services', async () => {
    const msgs = await lint('src/store/x.ts', "import { Coordinator } from '../services/coordinator.js';\nexport const c = Coordinator;\n");
    expect(msgs.some((m) => m.startsWith('import-x/no-restricted-paths'))).toBe(true);
  });

  it('allows the permitted directions', async () => {
    expect(await lint('src/services/x.ts', "import { createKeys } from '../store/keys.js';\nexport const k = createKeys;\n")).toEqual([]);
    expect(await lint('src/cli/x.ts', "import { parseRole } from '../domain/role.js';\nexport const p = parseRole;\n")).toEqual([]);
  });
});
