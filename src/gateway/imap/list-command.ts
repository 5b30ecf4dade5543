import type { ImapValue } from './parser.js';

/**
 * A LIST command as RFC 5258 (LIST-EXTENDED) and RFC 5819 (LIST-STATUS)
 * write it: `LIST [(selection options)] reference (pattern | (patterns))
 * [RETURN (return options)]`; the RFC 3501 form is the one without options.
 * Only what the gateway needs to add the shared namespace's entries; the
 * home Dovecot checks the command too and its answer decides (an entry is
 * added only to an OK).
 */
export interface ListCommand {
  /** Selection options, upper case: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE. */
  readonly select: ReadonlySet<string>;
  readonly reference: string;
  readonly patterns: readonly string[];
  /** Return options, upper case: SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS. */
  readonly returns: ReadonlySet<string>;
  /** RETURN (STATUS (items)): the items. */
  readonly status?: ImapValue;
}

const SELECT_OPTIONS = new Set(['SUBSCRIBED', 'REMOTE', 'RECURSIVEMATCH', 'SPECIAL-USE']);
const RETURN_OPTIONS = new Set(['SUBSCRIBED', 'CHILDREN', 'SPECIAL-USE', 'STATUS']);

const text = (v: ImapValue | undefined): string | undefined => (v && v.type !== 'list' ? v.value : undefined);
const atomUpper = (v: ImapValue | undefined): string | undefined => (v?.type === 'atom' ? v.value.toUpperCase() : undefined);

/** The command's parts, or an error in IMAP words. */
export function parseList(args: readonly ImapValue[]): ListCommand | string {
  let i = 0;
  const select = new Set<string>();
  if (args[0]?.type === 'list') {
    for (const o of args[0].items) {
      const up = atomUpper(o);
      if (!up || !SELECT_OPTIONS.has(up)) return 'Unknown LIST selection option';
      select.add(up);
    }
    // RFC 5258 §3: RECURSIVEMATCH only together with another selection option (REMOTE is none).
    if (select.has('RECURSIVEMATCH') && ![...select].some((o) => o !== 'RECURSIVEMATCH' && o !== 'REMOTE')) return 'RECURSIVEMATCH needs another selection option';
    i = 1;
  }
  const reference = text(args[i]);
  const p = args[i + 1];
  if (reference === undefined || p === undefined) return 'LIST needs a reference and a mailbox pattern';
  let patterns: string[];
  if (p.type === 'list') {
    if (p.items.length === 0 || p.items.some((x) => x.type === 'list')) return 'Invalid LIST patterns';
    patterns = p.items.map((x) => (x as { value: string }).value);
  } else {
    patterns = [p.value];
  }
  i += 2;
  const returns = new Set<string>();
  let status: ImapValue | undefined;
  if (i < args.length) {
    const opts = args[i + 1];
    if (atomUpper(args[i]) !== 'RETURN' || opts?.type !== 'list' || i + 2 !== args.length) return 'Invalid LIST arguments';
    for (let j = 0; j < opts.items.length; j++) {
      const up = atomUpper(opts.items[j]);
      if (!up || !RETURN_OPTIONS.has(up)) return 'Unknown LIST return option';
      returns.add(up);
      if (up === 'STATUS') {
        status = opts.items[++j];
        if (status?.type !== 'list') return 'RETURN STATUS needs a list of items';
      }
    }
  }
  return { select, reference, patterns, returns, ...(status ? { status } : {}) };
}
