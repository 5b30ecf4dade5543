import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type DovecotEntry, folderDirectory, formatDovecotAclFile } from '../../src/cli/dovecot-acl.js';
import { parseRights } from '../../src/domain/rights.js';

/** One generated folder: its dovecot-acl text, and whether an export can give it back byte for byte. */
export interface GeneratedFolder {
  readonly text: string;
  /** No group-override entries and no named rights (which have no RFC 4314 equivalent). */
  readonly exact: boolean;
}

/**
 * A Maildir++ tree as Dovecot lays it out (a directory per user, `.A.B`
 * folder directories with cur/new/tmp), `count` shared folders of 100
 * users, using every identifier kind Dovecot's ACL files have: owner,
 * user=, group=, negative entries, authenticated, anyone, group-override=
 * and named rights. Deterministic for a seed. Returns OWNER/NAME → folder.
 */
export function writeDovecotAclTree(root: string, count: number, seed = 11): Map<string, GeneratedFolder> {
  const files = new Map<string, GeneratedFolder>();
  let s = seed;
  const rnd = (n: number): number => (s = (s * 1103515245 + 12345) % 2147483648) % n;
  for (let i = 0; files.size < count; i++) {
    const owner = `user${i % 100}`;
    const name = `Shared/${['Team', 'Projekte', 'Ärger', 'Work'][i % 4]}/${Math.floor(i / 100)}`;
    const e: DovecotEntry[] = [{ kind: 'owner', negative: false, rights: parseRights('lrswipkxtea'), named: [] }];
    e.push({ kind: 'user', name: `user${(i + 1 + rnd(98)) % 100}`, negative: false, rights: parseRights('lrs'), named: [] });
    if (rnd(2)) e.push({ kind: 'group', name: `team${rnd(20)}`, negative: false, rights: parseRights('lr'), named: [] });
    if (rnd(4) === 0) e.push({ kind: 'group', name: 'temps', negative: true, rights: parseRights('w'), named: [] });
    if (rnd(5) === 0) e.push({ kind: 'authenticated', negative: false, rights: parseRights('l'), named: [] });
    if (rnd(10) === 0) e.push({ kind: 'anyone', negative: false, rights: parseRights('lr'), named: [] });
    const overrides = rnd(20) === 0;
    if (overrides) e.push({ kind: 'group-override', name: 'admins', negative: false, rights: parseRights('lrswipkxtea'), named: [] });
    const named = rnd(50) === 0;
    if (named) e.push({ kind: 'user', name: `user${(i + 50) % 100}`, negative: false, rights: parseRights('lr'), named: ['x-flag'] });
    const text = formatDovecotAclFile(e);
    const d = path.join(root, owner, folderDirectory(name, 'maildir'));
    for (const sub of ['cur', 'new', 'tmp']) mkdirSync(path.join(d, sub), { recursive: true });
    writeFileSync(path.join(d, 'dovecot-acl'), text);
    files.set(`${owner}/${name}`, { text, exact: !overrides && !named });
  }
  return files;
}

/** Where a generated folder's dovecot-acl file is. */
export function aclFileOf(root: string, ref: string): string {
  const [owner, ...rest] = ref.split('/');
  return path.join(root, owner!, folderDirectory(rest.join('/'), 'maildir'), 'dovecot-acl');
}
