/** The kinds of change the event stream carries (Watch's `kinds` filter). */
export type EventKind = 'tenant' | 'group' | 'mailbox' | 'assignment' | 'node' | 'move';
export const EVENT_KINDS: readonly EventKind[] = ['tenant', 'group', 'mailbox', 'assignment', 'node', 'move'];
