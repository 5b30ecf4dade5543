import { type ImapValue, astring } from './parser.js';

/**
 * Argument grammars of the commands the gateway relays to a connection
 * logged in as someone else (an owner's mailbox through the master user):
 * RFC 3501 §6 and §9 with the extensions offered (CONDSTORE, QRESYNC,
 * ESEARCH, SORT, THREAD, BINARY, MOVE, UIDPLUS, SEARCHRES). Each check
 * returns undefined when the arguments fit, else the reason for a BAD.
 * Together with the parser (values only) and the writer (wire.ts) this
 * is what keeps a reader from making an owner's connection do anything but
 * the one command the reader's rights were checked for.
 */
export type Check = string | undefined;

const NUMBER = /^\d{1,20}$/;
const NZ_NUMBER = /^[1-9]\d{0,9}$/;
const SEQ_NUMBER = '(?:[1-9]\\d{0,9}|\\*)';
const SEQ_RANGE = `${SEQ_NUMBER}(?::${SEQ_NUMBER})?`;
const SEQUENCE_SET = new RegExp(`^${SEQ_RANGE}(?:,${SEQ_RANGE})*$`);
const DATE = /^\d{1,2}-[A-Za-z]{3}-\d{4}$/;
const DATE_TIME = /^[ \d]\d-[A-Za-z]{3}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}$/;
/** flag = "\" atom / keyword; keyword = atom (no "]" in atoms of a flag, RFC 3501 §9 flag-keyword). */
// eslint-disable-next-line no-control-regex
const FLAG = /^\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+$/;
const CAPABILITY_ATOM = /^[A-Za-z0-9][A-Za-z0-9=+._-]*$/;

export function isSequenceSet(v: ImapValue | undefined, savedResult = true): boolean {
  if (v?.type !== 'atom') return false;
  return SEQUENCE_SET.test(v.value) || (savedResult && v.value === '$');
}

export function isFlag(v: ImapValue | undefined): boolean {
  return v?.type === 'atom' && FLAG.test(v.value);
}

export function isFlagList(v: ImapValue | undefined): boolean {
  return v?.type === 'list' && v.items.every(isFlag);
}

const isNumber = (v: ImapValue | undefined): boolean => v?.type === 'atom' && NUMBER.test(v.value);
const isAstring = (v: ImapValue | undefined): boolean => astring(v) !== undefined;
const isDate = (v: ImapValue | undefined): boolean => (v?.type === 'atom' || v?.type === 'string') && DATE.test(v.value);

function noArgs(name: string, args: readonly ImapValue[]): Check {
  return args.length === 0 ? undefined : `${name} takes no arguments`;
}

// ---- FETCH (RFC 3501 §6.4.5, RFC 3516 BINARY, RFC 7162 CONDSTORE) ----

const FETCH_MACROS = new Set(['ALL', 'FAST', 'FULL']);
const FETCH_SIMPLE = new Set([
  'ENVELOPE', 'FLAGS', 'INTERNALDATE', 'RFC822', 'RFC822.HEADER', 'RFC822.SIZE', 'RFC822.TEXT', 'BODY', 'BODYSTRUCTURE', 'UID',
  'MODSEQ', 'SAVEDATE', 'EMAILID', 'THREADID', 'X-GUID', 'X-MAILBOX', 'X-REAL-UID', 'X-SAVEDATE', 'SNIPPET', 'PREVIEW',
]);
/** BODY[…]<…>, BODY.PEEK, BINARY[.PEEK|.SIZE] with a section that is complete in the atom. */
const SECTION_ATOM = /^(?:BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(?:\d+(?:\.\d+)*)?(?:\.?(?:HEADER|TEXT|MIME|HEADER\.FIELDS|HEADER\.FIELDS\.NOT))?\](?:<\d{1,10}(?:\.\d{1,10})?>)?$/i;
/** The opening atom of a section with a header list: `BODY.PEEK[1.HEADER.FIELDS` (the list and `]` follow). */
const SECTION_OPEN = /^(?:BODY|BODY\.PEEK)\[(?:\d+(?:\.\d+)*\.)?HEADER\.FIELDS(?:\.NOT)?$/i;
const SECTION_CLOSE = /^\](?:<\d{1,10}(?:\.\d{1,10})?>)?$/;

/** Checks a run of fetch attributes; `items` is a list's content or a single attribute. */
function fetchAtts(items: readonly ImapValue[]): Check {
  if (items.length === 0) return 'FETCH needs data items';
  for (let i = 0; i < items.length; i++) {
    const v = items[i]!;
    if (v.type !== 'atom') return 'FETCH data items are atoms';
    const up = v.value.toUpperCase();
    if (FETCH_SIMPLE.has(up)) {
      // PREVIEW (LAZY) (RFC 8970) takes a modifier list.
      if (up === 'PREVIEW' && items[i + 1]?.type === 'list') {
        const mods = items[i + 1] as { items: readonly ImapValue[] };
        if (!mods.items.every((m) => m.type === 'atom' && /^[A-Z]+$/i.test(m.value))) return 'Invalid PREVIEW modifier';
        i++;
      }
      continue;
    }
    if (SECTION_ATOM.test(v.value)) continue;
    if (SECTION_OPEN.test(v.value)) {
      const fields = items[i + 1];
      const close = items[i + 2];
      if (fields?.type !== 'list' || fields.items.length === 0 || !fields.items.every(isAstring)) return 'Invalid header field list';
      if (close?.type !== 'atom' || !SECTION_CLOSE.test(close.value)) return "Missing ']' after the header field list";
      i += 2;
      continue;
    }
    return `Unknown FETCH data item ${printable(v.value)}`;
  }
  return undefined;
}

/** FETCH modifiers (RFC 7162 §3.1.4: CHANGEDSINCE, VANISHED). */
function fetchModifiers(v: ImapValue): Check {
  if (v.type !== 'list') return 'Invalid FETCH modifiers';
  const items = v.items;
  for (let i = 0; i < items.length; i++) {
    const up = items[i]?.type === 'atom' ? (items[i] as { value: string }).value.toUpperCase() : '';
    if (up === 'CHANGEDSINCE' && isNumber(items[i + 1])) i++;
    else if (up === 'VANISHED') continue;
    else return 'Invalid FETCH modifier';
  }
  return undefined;
}

export function checkFetch(args: readonly ImapValue[]): Check {
  if (!isSequenceSet(args[0])) return 'FETCH needs a sequence set';
  const what = args[1];
  if (!what) return 'FETCH needs data items';
  let rest = 2;
  if (what.type === 'list') {
    const bad = fetchAtts(what.items);
    if (bad) return bad;
  } else if (what.type === 'atom' && FETCH_MACROS.has(what.value.toUpperCase())) {
    // A macro stands alone.
  } else {
    // A single attribute, possibly a header-list section (atom, list, "]").
    const single: ImapValue[] = [what];
    if (what.type === 'atom' && SECTION_OPEN.test(what.value)) {
      single.push(...args.slice(2, 4));
      rest = 4;
    }
    const bad = fetchAtts(single);
    if (bad) return bad;
  }
  if (args.length === rest) return undefined;
  if (args.length === rest + 1) return fetchModifiers(args[rest]!);
  return 'Too many FETCH arguments';
}

// ---- SEARCH (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5182 SEARCHRES, RFC 7162 MODSEQ) ----

type KeyArg = 'string' | 'date' | 'number' | 'flag' | 'set' | 'key';
const SEARCH_KEYS: Record<string, KeyArg[]> = {
  ALL: [], ANSWERED: [], DELETED: [], DRAFT: [], FLAGGED: [], NEW: [], OLD: [], RECENT: [], SEEN: [],
  UNANSWERED: [], UNDELETED: [], UNDRAFT: [], UNFLAGGED: [], UNSEEN: [], SAVEDATESUPPORTED: [],
  BCC: ['string'], BODY: ['string'], CC: ['string'], FROM: ['string'], SUBJECT: ['string'], TEXT: ['string'], TO: ['string'],
  'X-GUID': ['string'], EMAILID: ['string'], THREADID: ['string'], 'X-MAILBOX': ['string'],
  BEFORE: ['date'], ON: ['date'], SINCE: ['date'], SENTBEFORE: ['date'], SENTON: ['date'], SENTSINCE: ['date'],
  SAVEDBEFORE: ['date'], SAVEDON: ['date'], SAVEDSINCE: ['date'],
  HEADER: ['string', 'string'], KEYWORD: ['flag'], UNKEYWORD: ['flag'],
  LARGER: ['number'], SMALLER: ['number'], OLDER: ['number'], YOUNGER: ['number'],
  UID: ['set'], NOT: ['key'], OR: ['key', 'key'], FUZZY: ['key'],
};

/** Reads one search key at `at`; returns the index after it, or a reason. */
function searchKey(items: readonly ImapValue[], at: number, depth: number): number | string {
  if (depth > 16) return 'Search keys nested too deep';
  const v = items[at];
  if (!v) return 'Missing search key';
  if (v.type === 'list') {
    if (v.items.length === 0) return 'Empty search key list';
    const bad = searchKeys(v.items, depth + 1);
    return bad ?? at + 1;
  }
  if (v.type !== 'atom') return 'Invalid search key';
  if (isSequenceSet(v)) return at + 1;
  const up = v.value.toUpperCase();
  if (up === 'MODSEQ') {
    // MODSEQ [entry-name entry-type-req] mod-sequence-valzer
    let i = at + 1;
    if (items[i]?.type === 'string') {
      const type = items[i + 1];
      if (type?.type !== 'atom' || !/^(priv|shared|all)$/i.test(type.value)) return 'Invalid MODSEQ entry type';
      i += 2;
    }
    if (!isNumber(items[i])) return 'MODSEQ needs a number';
    return i + 1;
  }
  const spec = SEARCH_KEYS[up];
  if (!spec) return `Unknown search key ${printable(v.value)}`;
  let i = at + 1;
  for (const arg of spec) {
    const a = items[i];
    if (arg === 'key') {
      const next = searchKey(items, i, depth + 1);
      if (typeof next === 'string') return next;
      i = next;
      continue;
    }
    const ok = arg === 'string' ? isAstring(a) : arg === 'date' ? isDate(a) : arg === 'number' ? isNumber(a) : arg === 'flag' ? isFlag(a) : isSequenceSet(a);
    if (!ok) return `${up} needs a ${arg === 'set' ? 'sequence set' : arg}`;
    i++;
  }
  return i;
}

function searchKeys(items: readonly ImapValue[], depth = 0): Check {
  for (let i = 0; i < items.length; ) {
    const next = searchKey(items, i, depth);
    if (typeof next === 'string') return next;
    i = next;
  }
  return undefined;
}

/** RETURN (…) options (RFC 4731, RFC 5267 CONTEXT, RFC 9394 PARTIAL). */
function returnOptions(v: ImapValue | undefined): Check {
  if (v?.type !== 'list') return 'RETURN needs a list';
  return v.items.every((o) => o.type === 'atom' && /^[A-Za-z0-9:.,-]+$/.test(o.value)) ? undefined : 'Invalid RETURN option';
}

/** [RETURN (…)] [CHARSET x] keys: returns the index of the first key, or a reason. */
function searchProgram(args: readonly ImapValue[], at: number, allowReturn: boolean): Check {
  let i = at;
  if (allowReturn && args[i]?.type === 'atom' && (args[i] as { value: string }).value.toUpperCase() === 'RETURN') {
    const bad = returnOptions(args[i + 1]);
    if (bad) return bad;
    i += 2;
  }
  if (args[i]?.type === 'atom' && (args[i] as { value: string }).value.toUpperCase() === 'CHARSET') {
    if (!isAstring(args[i + 1])) return 'CHARSET needs a name';
    i += 2;
  }
  if (i >= args.length) return 'SEARCH needs search keys';
  return searchKeys(args.slice(i));
}

export function checkSearch(args: readonly ImapValue[]): Check {
  return searchProgram(args, 0, true);
}

const SORT_KEYS = new Set(['ARRIVAL', 'CC', 'DATE', 'FROM', 'REVERSE', 'SIZE', 'SUBJECT', 'TO', 'DISPLAYFROM', 'DISPLAYTO', 'RELEVANCY', 'MODSEQ', 'X-SCORE']);

/** SORT [RETURN (…)] (criteria) charset keys (RFC 5256, RFC 5267 ESORT). */
export function checkSort(args: readonly ImapValue[]): Check {
  let i = 0;
  if (args[0]?.type === 'atom' && args[0].value.toUpperCase() === 'RETURN') {
    const bad = returnOptions(args[1]);
    if (bad) return bad;
    i = 2;
  }
  const criteria = args[i];
  if (criteria?.type !== 'list' || criteria.items.length === 0) return 'SORT needs sort criteria';
  if (!criteria.items.every((c) => c.type === 'atom' && SORT_KEYS.has(c.value.toUpperCase()))) return 'Unknown sort criterion';
  if (!isAstring(args[i + 1])) return 'SORT needs a charset';
  if (i + 2 >= args.length) return 'SORT needs search keys';
  return searchKeys(args.slice(i + 2));
}

/** THREAD algorithm charset keys (RFC 5256). */
export function checkThread(args: readonly ImapValue[]): Check {
  if (args[0]?.type !== 'atom' || !/^[A-Za-z0-9.-]+$/.test(args[0].value)) return 'THREAD needs an algorithm';
  if (!isAstring(args[1])) return 'THREAD needs a charset';
  if (args.length < 3) return 'THREAD needs search keys';
  return searchKeys(args.slice(2));
}

// ---- STORE (RFC 3501 §6.4.6, RFC 7162 UNCHANGEDSINCE) ----

export interface StoreArgs {
  readonly set: ImapValue;
  readonly modifiers: ImapValue | undefined;
  /** FLAGS, +FLAGS or -FLAGS, with or without .SILENT, as sent. */
  readonly item: string;
  readonly flags: readonly string[];
}

export function parseStore(args: readonly ImapValue[]): StoreArgs | string {
  if (!isSequenceSet(args[0])) return 'STORE needs a sequence set';
  let i = 1;
  let modifiers: ImapValue | undefined;
  if (args[1]?.type === 'list') {
    modifiers = args[1];
    const m = args[1].items;
    if (!(m.length === 2 && m[0]?.type === 'atom' && m[0].value.toUpperCase() === 'UNCHANGEDSINCE' && isNumber(m[1]))) return 'Invalid STORE modifier';
    i = 2;
  }
  const item = args[i];
  if (item?.type !== 'atom' || !/^[+-]?FLAGS(\.SILENT)?$/i.test(item.value)) return 'STORE needs FLAGS, +FLAGS or -FLAGS';
  const rest = args.slice(i + 1);
  let flags: ImapValue[];
  if (rest.length === 1 && rest[0]!.type === 'list') flags = [...rest[0]!.items];
  else flags = [...rest];
  if (flags.length === 0 && !(rest.length === 1 && rest[0]!.type === 'list')) return 'STORE needs flags';
  if (!flags.every(isFlag)) return 'Invalid flag';
  return { set: args[0]!, modifiers, item: item.value, flags: flags.map((f) => (f as { value: string }).value) };
}

// ---- mailbox commands ----

const STATUS_ITEMS = new Set(['MESSAGES', 'RECENT', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN', 'HIGHESTMODSEQ', 'SIZE', 'DELETED', 'DELETED-STORAGE', 'APPENDLIMIT', 'MAILBOXID', 'X-SIZE', 'X-GUID']);

/** STATUS's item list (RFC 3501 §6.3.10, RFC 7162, RFC 8438, RFC 9051). */
export function checkStatusItems(v: ImapValue | undefined): Check {
  if (v?.type !== 'list' || v.items.length === 0) return 'STATUS needs a list of items';
  return v.items.every((i) => i.type === 'atom' && STATUS_ITEMS.has(i.value.toUpperCase())) ? undefined : 'Unknown STATUS item';
}

/** SELECT/EXAMINE parameters: CONDSTORE, QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]) (RFC 7162). */
export function checkSelectParams(args: readonly ImapValue[]): Check {
  if (args.length === 0) return undefined;
  const params = args[0]!;
  if (args.length > 1 || params.type !== 'list') return 'Invalid SELECT parameters';
  const items = params.items;
  for (let i = 0; i < items.length; i++) {
    const v = items[i]!;
    const up = v.type === 'atom' ? v.value.toUpperCase() : '';
    if (up === 'CONDSTORE') continue;
    if (up === 'QRESYNC') {
      const q = items[i + 1];
      if (q?.type !== 'list') return 'QRESYNC needs a list';
      const [validity, modseq, known, match] = q.items;
      if (!(validity?.type === 'atom' && NZ_NUMBER.test(validity.value)) || !isNumber(modseq)) return 'QRESYNC needs a UIDVALIDITY and a mod-sequence';
      if (known !== undefined && known.type !== 'list' && !isSequenceSet(known, false)) return 'Invalid QRESYNC known UIDs';
      const pair = known?.type === 'list' ? known : match;
      if (pair !== undefined && !(pair.type === 'list' && pair.items.length === 2 && pair.items.every((s) => isSequenceSet(s, false)))) return 'Invalid QRESYNC sequence match data';
      if (q.items.length > (known?.type === 'list' ? 3 : 4)) return 'Invalid QRESYNC parameters';
      i++;
      continue;
    }
    return 'Unknown SELECT parameter';
  }
  return undefined;
}

/** ENABLE takes capability names, atoms only (RFC 5161 §3.1). */
export function checkEnable(args: readonly ImapValue[]): Check {
  if (args.length === 0) return 'ENABLE needs capability names';
  return args.every((a) => a.type === 'atom' && CAPABILITY_ATOM.test(a.value)) ? undefined : 'ENABLE takes capability names (atoms)';
}

export interface AppendMessage {
  readonly flags: readonly string[] | undefined;
  /** The date-time as a value (quoted string). */
  readonly date: ImapValue | undefined;
}

/** One message's [flag-list] [date-time] before its literal (RFC 3501 §6.3.11, RFC 3502). */
export function parseAppendMessage(args: readonly ImapValue[]): AppendMessage | string {
  let i = 0;
  let flags: string[] | undefined;
  if (args[0]?.type === 'list') {
    if (!isFlagList(args[0])) return 'Invalid flags';
    flags = args[0].items.map((f) => (f as { value: string }).value);
    i = 1;
  }
  let date: ImapValue | undefined;
  const d = args[i];
  if (d !== undefined) {
    if (d.type !== 'string' || !DATE_TIME.test(d.value)) return 'Invalid date-time';
    date = d;
    i++;
  }
  if (i !== args.length) return 'Invalid APPEND arguments';
  return { flags, date };
}

/**
 * An APPEND of CATENATE messages (RFC 4469; MULTIAPPEND, RFC 3502, gives
 * several): after the mailbox, per message optional flags and date, then
 * `CATENATE (TEXT literal | URL url …)`. Their TEXT parts are literals of the
 * command (within its limit), not streamed.
 */
export interface CatenateMessage extends AppendMessage {
  readonly parts: readonly ImapValue[];
  /** Whether a part is a URL (it names a message of the user's mailboxes). */
  readonly urls: boolean;
}

export function parseCatenateAppend(args: readonly ImapValue[]): CatenateMessage[] | string {
  const out: CatenateMessage[] = [];
  let i = 0;
  while (i < args.length) {
    const at = args.findIndex((a, j) => j >= i && a.type === 'atom' && a.value.toUpperCase() === 'CATENATE');
    if (at < 0) return i === 0 ? 'APPEND needs a message literal or CATENATE' : 'Invalid APPEND arguments';
    const head = parseAppendMessage(args.slice(i, at));
    if (typeof head === 'string') return head;
    const parts = args[at + 1];
    if (parts?.type !== 'list' || parts.items.length === 0 || parts.items.length % 2 !== 0) return 'CATENATE needs a list of TEXT and URL parts';
    let urls = false;
    for (let j = 0; j < parts.items.length; j += 2) {
      const kind = parts.items[j]!.type === 'atom' ? (parts.items[j] as { value: string }).value.toUpperCase() : '';
      const value = parts.items[j + 1]!;
      if (kind === 'TEXT' && value.type === 'literal') continue;
      if (kind === 'URL' && value.type !== 'list') {
        urls = true;
        continue;
      }
      return 'CATENATE parts are TEXT literal or URL url';
    }
    out.push({ ...head, parts: parts.items, urls });
    i = at + 2;
  }
  return out.length > 0 ? out : 'APPEND needs a message';
}

/** Commands on the selected mailbox that take no arguments. */
export function checkNoArgs(name: string, args: readonly ImapValue[]): Check {
  return noArgs(name, args);
}

export function checkCopy(args: readonly ImapValue[]): Check {
  if (!isSequenceSet(args[0])) return 'needs a sequence set';
  if (args.length !== 2 || !isAstring(args[1])) return 'needs a mailbox name';
  return undefined;
}

function printable(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}
