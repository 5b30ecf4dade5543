/**
 * Capabilities of the home Dovecot that survive the gateway: extensions
 * whose commands and responses carry no mailbox names the gateway would have
 * to map, or that it handles. Others (METADATA, UTF8=,
 * URLAUTH, QUOTA, …) are not offered.
 */
const PASSED_CAPS = new Set([
  'IMAP4REV1', 'LITERAL+', 'SASL-IR', 'ID', 'ENABLE', 'IDLE', 'SORT', 'SORT=DISPLAY', 'THREAD=REFERENCES', 'THREAD=REFS',
  'THREAD=ORDEREDSUBJECT', 'MULTIAPPEND', 'UNSELECT', 'CHILDREN', 'NAMESPACE', 'UIDPLUS', 'I18NLEVEL=1', 'CONDSTORE', 'ESEARCH',
  'ESORT', 'SEARCHRES', 'WITHIN', 'CONTEXT=SEARCH', 'BINARY', 'MOVE', 'SNIPPET=FUZZY', 'PREVIEW=FUZZY', 'PREVIEW', 'SPECIAL-USE', 'SAVEDATE',
  // QRESYNC (RFC 7162): SELECT parameters and FETCH modifiers are checked, VANISHED carries no names, ENABLE is
  // replayed on owners' connections and [CLOSED] is said when a SELECT moves between connections.
  'QRESYNC', 'STATUS=SIZE',
  // LIST-EXTENDED and LIST-STATUS (RFC 5258, 5819): the shared namespace's entries are added with the
  // selection and return options applied, their STATUS from the owners' nodes.
  'LIST-EXTENDED', 'LIST-STATUS',
  // CATENATE (RFC 4469) with URL-PARTIAL (RFC 5550): the user's own mailboxes resolve URLs at home;
  // into a shared mailbox only TEXT parts are taken (a URL there would be read as the owner's).
  'CATENATE', 'URL-PARTIAL',
  // NOTIFY (RFC 5465): split between the home Dovecot and the owners' nodes, reports renamed and
  // kept to mailboxes the user may read.
  'NOTIFY',
]);
// COMPRESS=DEFLATE (RFC 4978) is the gateway's own: it inflates what it parses and deflates what it sends.
const OWN_CAPS = ['NAMESPACE', 'ACL', 'RIGHTS=texk', 'COMPRESS=DEFLATE'];

/** The capabilities offered after login, from the home Dovecot's LOGIN response. */
export function sessionCapabilities(tagged: string): string {
  const m = /\[CAPABILITY ([^\]]*)\]/i.exec(tagged);
  const all: string[] = [];
  for (const c of (m?.[1] ?? 'IMAP4rev1').split(' ')) {
    if (PASSED_CAPS.has(c.toUpperCase()) && !all.some((x) => x.toUpperCase() === c.toUpperCase())) all.push(c);
  }
  for (const c of OWN_CAPS) if (!all.some((x) => x.toUpperCase() === c.toUpperCase())) all.push(c);
  return all.join(' ');
}
