import type { ImapValue } from './parser.js';

/**
 * NOTIFY (RFC 5465): `NOTIFY NONE` or `NOTIFY SET [STATUS] (filter events)
 * …`, a filter being SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL,
 * SUBSCRIBED, or SUBTREE / MAILBOXES with one mailbox or a list of them.
 * Parsed so that the gateway can split it: mailboxes of the user's own go
 * to the home Dovecot, shared ones to their owners' nodes.
 */
export type NotifyCommand = { readonly none: true } | { readonly none: false; readonly status: boolean; readonly groups: readonly NotifyGroup[] };

export interface NotifyGroup {
  /** Upper case. */
  readonly filter: string;
  /** SUBTREE and MAILBOXES: the names as sent. */
  readonly mailboxes?: readonly ImapValue[];
  /** The events: a list, or the atom NONE. */
  readonly events: ImapValue;
}

const FILTERS = new Set(['SELECTED', 'SELECTED-DELAYED', 'INBOXES', 'PERSONAL', 'SUBSCRIBED', 'SUBTREE', 'MAILBOXES']);
const up = (v: ImapValue | undefined): string | undefined => (v?.type === 'atom' ? v.value.toUpperCase() : undefined);

export function parseNotify(args: readonly ImapValue[]): NotifyCommand | string {
  const verb = up(args[0]);
  if (verb === 'NONE') return args.length === 1 ? { none: true } : 'NOTIFY NONE takes no arguments';
  if (verb !== 'SET') return 'NOTIFY needs SET or NONE';
  let i = 1;
  const status = up(args[1]) === 'STATUS';
  if (status) i++;
  if (i >= args.length) return 'NOTIFY SET needs at least one filter';
  const groups: NotifyGroup[] = [];
  for (; i < args.length; i++) {
    const g = args[i]!;
    if (g.type !== 'list') return 'NOTIFY filters are lists';
    const filter = up(g.items[0]);
    if (!filter || !FILTERS.has(filter)) return 'Unknown NOTIFY filter';
    if (filter === 'SUBTREE' || filter === 'MAILBOXES') {
      const m = g.items[1];
      if (!m || g.items.length !== 3) return `${filter} needs mailboxes and events`;
      const mailboxes = m.type === 'list' ? m.items : [m];
      if (mailboxes.length === 0 || mailboxes.some((x) => x.type === 'list')) return `Invalid ${filter} mailboxes`;
      groups.push({ filter, mailboxes, events: g.items[2]! });
    } else {
      if (g.items.length !== 2) return `${filter} needs events`;
      groups.push({ filter, events: g.items[1]! });
    }
    const events = groups[groups.length - 1]!.events;
    if (!(events.type === 'list' || up(events) === 'NONE')) return 'NOTIFY events are a list or NONE';
  }
  return { none: false, status, groups };
}

/**
 * The events for a mailbox that is not selected: MessageNew's FETCH
 * attributes apply to the selected mailbox only (RFC 5465 §5.2), so they
 * are left off.
 */
export function eventsForOthers(events: ImapValue): ImapValue {
  if (events.type !== 'list') return events;
  return { type: 'list', items: events.items.filter((e) => e.type !== 'list') };
}
