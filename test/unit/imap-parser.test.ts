import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CommandParser, type ImapValue, type ParserEvent, type ParserLimits, POST_LOGIN_LIMITS } from '../../src/gateway/imap/parser.js';
import { command, quote, wireAll } from '../../src/gateway/imap/wire.js';

function drain(p: CommandParser): ParserEvent[] {
  const out: ParserEvent[] = [];
  for (let e = p.next(); e; e = p.next()) out.push(e);
  return out;
}

function parse(text: string, limits?: ParserLimits): ParserEvent[] {
  const p = new CommandParser(limits);
  p.feed(Buffer.from(text, 'latin1'));
  return drain(p);
}

const A = (value: string): ImapValue => ({ type: 'atom', value });
const S = (value: string): ImapValue => ({ type: 'string', value });
const L = (...items: ImapValue[]): ImapValue => ({ type: 'list', items });
const cmd = (tag: string, name: string, ...args: ImapValue[]): ParserEvent => ({ kind: 'command', tag, name, args });

describe('IMAP command parser (as Dovecot reads the grammar)', () => {
  it('parses atoms, quoted strings, literals and nested lists into values', () => {
    const p = new CommandParser();
    p.feed(Buffer.from('a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From "To")]) "q \\" s" {3}\r\n'));
    expect(drain(p)).toEqual([{ kind: 'continue' }]);
    p.feed(Buffer.from('x y ~{2+}\r\n\0\x01\r\n'));
    expect(drain(p)).toEqual([
      cmd('a1', 'FETCH', A('1:*'), L(A('FLAGS'), A('BODY.PEEK[HEADER.FIELDS'), L(A('From'), S('To')), A(']')), S('q " s'), { type: 'literal', value: 'x y', binary: false }, { type: 'literal', value: '\0\x01', binary: true }),
    ]);
  });

  it('ends lines at LF as Dovecot does, and refuses a CR without LF', () => {
    expect(parse('a NOOP\nb NOOP\r\n')).toEqual([cmd('a', 'NOOP'), cmd('b', 'NOOP')]);
    expect(parse('a SEARCH ALL\rx1 DELETE Victim\r\nb NOOP\r\n')).toEqual([{ kind: 'bad', tag: 'a', message: 'CR sent without LF' }, cmd('b', 'NOOP')]);
  });

  it('ends a quoted string at its line: CR, LF and NUL are never part of a value', () => {
    // A literal marker inside an open quoted string is text; the line ends, the string is unterminated.
    const smuggled = 'f1 SEARCH TEXT "x{47+}\r\n\r\nx1 SELECT INBOX\r\n';
    expect(parse(smuggled)).toEqual([{ kind: 'bad', tag: 'f1', message: 'Missing \'"\'' }, { kind: 'bad', tag: '*', message: 'Invalid tag.' }, cmd('x1', 'SELECT', A('INBOX'))]);
    expect(parse('a SEARCH TEXT "x\ny"\r\nb NOOP\r\n')[0]).toEqual({ kind: 'bad', tag: 'a', message: 'Missing \'"\'' });
    expect(parse('a SEARCH TEXT "x\0y"\r\nb NOOP\r\n')).toEqual([{ kind: 'bad', tag: 'a', message: 'NULs not allowed in strings' }, cmd('b', 'NOOP')]);
  });

  it('refuses malformed commands with the tag when there is one, and goes on', () => {
    expect(parse('x\r\n* NOOP\r\na  NOOP\r\nb NOOP )\r\nc NOOP (a\r\nd NOOP {x}\r\ne NOOP {3}x\r\nf NOOP\r\n')).toEqual([
      { kind: 'bad', tag: 'x', message: 'Invalid command name.' },
      { kind: 'bad', tag: '*', message: 'Invalid tag.' },
      { kind: 'bad', tag: 'a', message: 'Invalid command name.' },
      { kind: 'bad', tag: 'b', message: "Unexpected ')'" },
      { kind: 'bad', tag: 'c', message: "Missing ')'" },
      { kind: 'bad', tag: 'd', message: 'Invalid literal size' },
      { kind: 'bad', tag: 'e', message: 'Missing LF after literal size' },
      cmd('f', 'NOOP'),
    ]);
    expect(parse('a NOOP caf\xe9\r\nb NOOP\r\n')).toEqual([{ kind: 'bad', tag: 'a', message: '8bit data in atom' }, cmd('b', 'NOOP')]);
  });

  it('streams APPEND messages, and parses each further message of a MULTIAPPEND (RFC 3502)', () => {
    const p = new CommandParser();
    p.feed(Buffer.from('b APPEND "Shared/alice/x" (\\Seen) {10+}\r\n0123'));
    expect(drain(p)).toEqual([
      { kind: 'command', tag: 'b', name: 'APPEND', args: [S('Shared/alice/x'), L(A('\\Seen'))], streaming: { length: 10, sync: false, binary: false } },
      { kind: 'data', chunk: Buffer.from('0123') },
    ]);
    p.feed(Buffer.from('456789 (\\Deleted $Evil) "01-Jan-2026 00:00:00 +0000" {2}\r\n'));
    expect(drain(p)).toEqual([
      { kind: 'data', chunk: Buffer.from('456789') },
      { kind: 'append-next', args: [L(A('\\Deleted'), A('$Evil')), S('01-Jan-2026 00:00:00 +0000')], streaming: { length: 2, sync: true, binary: false } },
    ]);
    p.feed(Buffer.from('hi ~{1+}\r\nZ\r\nc NOOP\r\n'));
    expect(drain(p)).toEqual([
      { kind: 'data', chunk: Buffer.from('hi') },
      { kind: 'append-next', args: [], streaming: { length: 1, sync: false, binary: true } },
      { kind: 'data', chunk: Buffer.from('Z') },
      { kind: 'end' },
      cmd('c', 'NOOP'),
    ]);
    // After a message, only another message or the end may follow.
    expect(parse('a APPEND x {1+}\r\nZ (\\Seen)\r\nb NOOP\r\n').slice(2)).toEqual([{ kind: 'end', error: 'Expected a message literal' }, cmd('b', 'NOOP')]);
    expect(parse('a APPEND x {1+}\r\nZ )\r\nb NOOP\r\n').slice(2)).toEqual([{ kind: 'end', error: "Unexpected ')'" }, cmd('b', 'NOOP')]);
  });

  it('ends a streaming command whose synchronizing literal the server refused, and drops a refused one', () => {
    const p = new CommandParser();
    p.feed(Buffer.from('b APPEND x {10}\r\n'));
    expect(drain(p)[0]).toMatchObject({ kind: 'command', streaming: { sync: true } });
    expect(p.cancelSyncLiteral('b')).toBe(true);
    p.feed(Buffer.from('c NOOP\r\n'));
    expect(drain(p)).toEqual([cmd('c', 'NOOP')]);

    p.feed(Buffer.from('d APPEND x {3+}\r\n'));
    drain(p);
    p.discard();
    p.feed(Buffer.from('abc (\\Seen) {2+}\r\nzz\r\ne NOOP\r\n'));
    expect(drain(p)).toEqual([{ kind: 'end' }, cmd('e', 'NOOP')]);
  });

  it('counts literal bytes toward the command limit and caps literals per command', () => {
    const limits = { ...POST_LOGIN_LIMITS, maxCommand: 100, maxLiterals: 2 };
    // A synchronizing literal past a limit is not asked for: the command is refused, the session goes on.
    expect(parse('a GETACL {200}\r\nb NOOP\r\n', limits)).toEqual([{ kind: 'bad', tag: 'a', message: 'Literal too large' }, cmd('b', 'NOOP')]);
    // A non-synchronizing one is already on its way: refused, and the connection cannot go on.
    expect(parse('a GETACL {200+}\r\n', limits)).toEqual([{ kind: 'bad', tag: 'a', message: 'Literal too large', close: true }]);
    expect(parse('a X {1+}\r\n1 {1+}\r\n2 {1+}\r\n3\r\n', limits)[0]).toEqual({ kind: 'bad', tag: 'a', message: 'Too many literals', close: true });
    expect(parse(`a NOOP ${'x'.repeat(200)}\r\nb NOOP\r\n`, limits)).toEqual([{ kind: 'bad', tag: 'a', message: 'Command too long' }, cmd('b', 'NOOP')]);
    // Forty literals of 60 bytes are over 100 bytes together, however small each is.
    const many = `a X${' {2+}\r\nab'.repeat(40)}\r\n`;
    expect(parse(many, { ...limits, maxLiterals: 100 })[0]).toMatchObject({ kind: 'bad', tag: 'a' });
  });

  it('reads and drops the arguments of commands it is told to (pre-login ID), keeping none of their bytes', () => {
    const limits = { ...POST_LOGIN_LIMITS, maxCommand: 100, maxLiterals: 1, discardArgs: new Set(['ID']), maxDiscarded: 100_000 };
    const big = `a ID (${Array.from({ length: 30 }, (_, i) => `"k${i}" "${'v'.repeat(1024)}"`).join(' ')} "lit" {5+}\r\nhello "x" {2+}\r\nab)\r\nb NOOP\r\n`;
    expect(parse(big, limits)).toEqual([cmd('a', 'ID'), cmd('b', 'NOOP')]);
    expect(parse('a ID ("open\r\nb NOOP\r\n', limits)).toEqual([{ kind: 'bad', tag: 'a', message: 'Missing \'"\'' }, cmd('b', 'NOOP')]);
    expect(parse(`a ID (${'"x" '.repeat(40_000)})\r\n`, limits)[0]).toEqual({ kind: 'bad', tag: 'a', message: 'Command too long' });
    // Other commands keep their limits.
    expect(parse(`c LOGIN ${'u'.repeat(200)} p\r\n`, limits)[0]).toEqual({ kind: 'bad', tag: 'c', message: 'Command too long' });
  });

  it('reads a raw line when asked (IDLE, SASL) and can give it back', () => {
    const p = new CommandParser();
    p.feed(Buffer.from('a IDLE\r\n'));
    expect(drain(p)).toEqual([cmd('a', 'IDLE')]);
    p.expectLine();
    p.feed(Buffer.from('DONE\nx2 CREATE PWNED\r\n'));
    expect(drain(p)).toEqual([{ kind: 'line', text: 'DONE' }, cmd('x2', 'CREATE', A('PWNED'))]);
    p.expectLine();
    p.feed(Buffer.from('b NO'));
    expect(drain(p)).toEqual([]);
    p.cancelLine();
    p.feed(Buffer.from('OP\r\n'));
    expect(drain(p)).toEqual([cmd('b', 'NOOP')]);
  });

  it('gives the same events however the bytes are split', () => {
    const text = 'a LOGIN {5}\r\nalice "p\\"w"\r\nb APPEND x (\\Seen) {4+}\r\nabcd {1+}\r\nZ\r\nc FETCH 1 (BODY[HEADER.FIELDS (A)]<0.5>)\nd NOOP\r\n';
    const whole = parse(text);
    const merge = (evs: ParserEvent[]): unknown[] => {
      const out: unknown[] = [];
      for (const e of evs) {
        const last = out[out.length - 1] as { kind: string; chunk: Buffer } | undefined;
        if (e.kind === 'data' && last?.kind === 'data') last.chunk = Buffer.concat([last.chunk, e.chunk]);
        else out.push(e.kind === 'data' ? { kind: 'data', chunk: Buffer.from(e.chunk) } : e);
      }
      return out;
    };
    for (let cut = 1; cut < text.length; cut++) {
      for (const second of [cut + 1, cut + 7]) {
        const p = new CommandParser();
        const evs: ParserEvent[] = [];
        for (const part of [text.slice(0, cut), text.slice(cut, second), text.slice(second)]) {
          p.feed(Buffer.from(part));
          evs.push(...drain(p));
        }
        expect(merge(evs)).toEqual(merge(whole));
      }
    }
  });

  it('never throws, whatever the bytes, and holds no more than its limits', () => {
    const limits = { ...POST_LOGIN_LIMITS, maxCommand: 512, maxLiterals: 4 };
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        const p = new CommandParser(limits);
        for (const c of chunks) {
          p.feed(Buffer.from(c));
          for (let e = p.next(); e; e = p.next()) {
            if (e.kind === 'command') expect(Buffer.byteLength(wireAll(e.args), 'latin1')).toBeLessThanOrEqual(4 * 512);
          }
          expect(p.buffered).toBe(0);
        }
      }),
      { numRuns: 500 },
    );
  });
});

/** Values as the writer may be given them (the parser's, or the gateway's own). */
const value: fc.Arbitrary<ImapValue> = fc.letrec<{ v: ImapValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.stringMatching(/^[!#$&'*+,\-./0-9:;<=>?@A-Z[\\\]^_`a-z|}~%]{1,12}$/).filter((s) => !s.startsWith('~{')).map((s): ImapValue => ({ type: 'atom', value: s })),
    fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 20 }).map((s): ImapValue => ({ type: 'string', value: s })),
    fc.tuple(fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 20 }), fc.boolean()).map(([s, binary]): ImapValue => ({ type: 'literal', value: s, binary })),
    fc.array(tie('v'), { maxLength: 4 }).map((items): ImapValue => ({ type: 'list', items })),
  ),
})).v;

/** What the parser makes of a value: a quoted string carrying CR/LF/NUL (or long) is written as a literal. */
function normalize(v: ImapValue): ImapValue {
  if (v.type === 'string' && (/[\r\n\0]/.test(v.value) || v.value.length > 1024)) return { type: 'literal', value: v.value, binary: false };
  if (v.type === 'list') return { type: 'list', items: v.items.map(normalize) };
  return v;
}

describe('IMAP writer', () => {
  it('writes any values as exactly one command that parses back to them', () => {
    fc.assert(
      fc.property(fc.array(value, { maxLength: 6 }), (args) => {
        const line = command('m1', 'X', args);
        const p = new CommandParser({ ...POST_LOGIN_LIMITS, maxCommand: 1 << 20, maxLiterals: 1000, streamAppend: false });
        p.feed(Buffer.from(line, 'latin1'));
        const evs = drain(p).filter((e) => e.kind !== 'continue');
        expect(evs).toEqual([{ kind: 'command', tag: 'm1', name: 'X', args: args.map(normalize) }]);
        expect(p.buffered).toBe(0);
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses to write what is not an atom, tag or command name', () => {
    expect(() => command('m1', 'X', [{ type: 'atom', value: 'a b' }])).toThrow(/not an atom/);
    expect(() => command('m1', 'X', [{ type: 'atom', value: 'a\r\nb' }])).toThrow(/not an atom/);
    expect(() => command('m 1', 'X', [])).toThrow(/tag/);
    expect(() => command('m1', 'X\nY', [])).toThrow(/command name/);
    expect(quote('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(quote('line\nbreak')).toBe('{10+}\r\nline\nbreak');
  });
});
