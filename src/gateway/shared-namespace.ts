import { parseMailboxName } from '../domain/mailbox-name.js';
import { USER_ID_PATTERN } from '../domain/ids.js';
import { decodeMutf7, encodeMutf7 } from './mutf7.js';

/** Where a mailbox name a client sent lives. */
export type Resolved =
  /** The user's own mailbox on the home node; `wire` is what to send there. */
  | { kind: 'home'; wire: string }
  /** Another user's mailbox: owner, its mailshare name (UTF-8) and its name on the owner's node. */
  | { kind: 'shared'; owner: string; name: string; wire: string }
  /** The namespace root or an owner's level: exists only as a \Noselect parent. */
  | { kind: 'parent' }
  /** Inside the shared namespace but not a possible name. */
  | { kind: 'invalid' };

export interface SharedMailbox {
  /** "owner/name" as mailshare names it (UTF-8). */
  readonly mailbox: string;
}

export interface ListEntry {
  /** Name as the client sees it, modified UTF-7. */
  readonly name: string;
  readonly attributes: string[];
  /** Set for a shared mailbox itself (not a parent level). */
  readonly mailbox?: string;
}

/**
 * The shared namespace (RFC 2342): other users' mailboxes appear under a
 * prefix, "Shared/" by default, then the owner: alice's "Projects" is
 * "Shared/alice/Projects" for everyone she shares it with. Pure mapping
 * between client names (modified UTF-7) and owner/name pairs.
 */
export class SharedNamespace {
  /** The prefix without its trailing separator, e.g. "Shared". */
  readonly root: string;

  constructor(
    readonly prefix = 'Shared/',
    readonly separator = '/',
  ) {
    if (!prefix.endsWith(separator) || prefix.length < 2) throw new Error(`shared prefix "${prefix}" must end with "${separator}"`);
    this.root = prefix.slice(0, -separator.length);
  }

  resolve(wire: string): Resolved {
    if (wire !== this.root && !wire.startsWith(this.prefix)) return { kind: 'home', wire };
    if (wire === this.root || wire === this.prefix) return { kind: 'parent' };
    const decoded = decodeMutf7(wire.slice(this.prefix.length));
    if (decoded === undefined) return { kind: 'invalid' };
    const slash = decoded.indexOf(this.separator);
    const owner = slash < 0 ? decoded : decoded.slice(0, slash);
    if (!USER_ID_PATTERN.test(owner)) return { kind: 'invalid' };
    if (slash < 0 || slash === decoded.length - 1) return slash < 0 ? { kind: 'parent' } : { kind: 'invalid' };
    let name: string;
    try {
      name = parseMailboxName(decoded.slice(slash + 1));
    } catch {
      return { kind: 'invalid' };
    }
    return { kind: 'shared', owner, name, wire: encodeMutf7(name) };
  }

  /** The client's name for an owner's mailbox. */
  nameOf(owner: string, name: string): string {
    return encodeMutf7(`${this.prefix}${owner}${this.separator}${name}`);
  }

  /**
   * Every name the namespace holds for these mailboxes: the mailboxes
   * themselves and their parent levels (\Noselect unless shared too), with
   * RFC 3348 child attributes, sorted.
   */
  entries(mailboxes: readonly SharedMailbox[]): ListEntry[] {
    const nodes = new Map<string, { mailbox?: string; children: boolean }>();
    for (const m of mailboxes) {
      const full = `${this.prefix}${m.mailbox}`;
      const prev = nodes.get(full);
      nodes.set(full, { mailbox: m.mailbox, children: prev?.children ?? false });
      for (let i = full.lastIndexOf(this.separator); i > 0; i = full.lastIndexOf(this.separator, i - 1)) {
        const parent = full.slice(0, i);
        const p = nodes.get(parent);
        if (p) {
          p.children = true;
        } else {
          nodes.set(parent, { children: true });
        }
      }
    }
    return [...nodes.entries()]
      .map(([name, n]) => ({
        name: encodeMutf7(name),
        attributes: [...(n.mailbox === undefined ? ['\\Noselect'] : []), n.children ? '\\HasChildren' : '\\HasNoChildren'],
        ...(n.mailbox === undefined ? {} : { mailbox: n.mailbox }),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Entries matching a LIST reference and any of the patterns (RFC 3501 §6.3.8: "*" any, "%" within one level). */
  list(mailboxes: readonly SharedMailbox[], reference: string, patterns: string | readonly string[]): ListEntry[] {
    const res = (typeof patterns === 'string' ? [patterns] : patterns).map((p) => listPattern(reference + p, this.separator));
    return this.entries(mailboxes).filter((e) => res.some((re) => re.test(e.name)));
  }
}

export function listPattern(pattern: string, separator = '/'): RegExp {
  const sep = separator.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  let re = '';
  for (const ch of pattern) {
    if (ch === '*') re += '.*';
    else if (ch === '%') re += `(?:(?!${sep}).)*`;
    else re += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}
