import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CommandReader, imapString } from '../../src/gateway/command-reader.js';

const feed = (r: CommandReader, s: string) => r.push(Buffer.from(s));

describe('IMAP command reader', () => {
  it('parses atoms, quoted strings and literals', () => {
    const r = new CommandReader();
    expect(feed(r, 'a1 LOGIN alice "p a\\"ss"\r\n')).toEqual([{ kind: 'command', command: { tag: 'a1', name: 'LOGIN', args: ['alice', 'p a"ss'] } }]);
    expect(feed(r, 'a2 login {5}\r\n')).toEqual([{ kind: 'continue' }]);
    expect(feed(r, 'alice {3+}\r\npw!\r\n')).toEqual([{ kind: 'command', command: { tag: 'a2', name: 'LOGIN', args: ['alice', 'pw!'] } }]);
    expect(feed(r, 'a3 NOOP\r\na4 CAPABILITY\r\n').map((o) => o.kind === 'command' && o.command.name)).toEqual(['NOOP', 'CAPABILITY']);
  });

  it('handles bytes split anywhere', () => {
    const text = 'a LOGIN {5}\r\nalice "pw"\r\nb NOOP\r\n';
    for (let cut = 1; cut < text.length; cut++) {
      const r = new CommandReader();
      const out = [...feed(r, text.slice(0, cut)), ...feed(r, text.slice(cut))].filter((o) => o.kind === 'command');
      expect(out.map((o) => o.kind === 'command' && [o.command.name, ...o.command.args])).toEqual([['LOGIN', 'alice', 'pw'], ['NOOP']]);
    }
  });

  it('answers malformed input with BAD and keeps going', () => {
    const r = new CommandReader();
    expect(feed(r, '\r\n')).toEqual([{ kind: 'bad', tag: '*', message: 'missing or invalid tag' }]);
    expect(feed(r, 'x\r\n')).toEqual([{ kind: 'bad', tag: 'x', message: 'missing command' }]);
    expect(feed(r, 'y LOGIN "open\r\n')).toEqual([{ kind: 'bad', tag: 'y', message: 'unterminated quoted string' }]);
    expect(feed(r, 'z NOOP\r\n')[0]).toMatchObject({ kind: 'command' });
  });

  it('enforces line and literal limits', () => {
    const r = new CommandReader({ maxLine: 100, maxLiteral: 10 });
    expect(feed(r, `a NOOP ${'x'.repeat(200)}`)).toEqual([{ kind: 'bad', tag: '*', message: 'line too long' }]);
    expect(feed(r, 'b LOGIN {11}\r\n')).toEqual([{ kind: 'bad', tag: 'b', message: 'literal too large' }]);
    expect(feed(r, 'c NOOP\r\n')[0]).toMatchObject({ kind: 'command', command: { tag: 'c' } });
  });

  it('leaves the bytes after a command unread', () => {
    const r = new CommandReader();
    r.feed(Buffer.from('a LOGIN u p\r\nb SELECT INBOX\r\n'));
    expect(r.next()).toMatchObject({ kind: 'command', command: { name: 'LOGIN' } });
    expect(r.rest().toString()).toBe('b SELECT INBOX\r\n');
  });

  it('never throws and never holds more than its limits, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        const r = new CommandReader({ maxLine: 512, maxLiteral: 256 });
        for (const c of chunks) {
          r.push(Buffer.from(c));
          expect(r.rest().length).toBeLessThanOrEqual(512 + 300);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('quotes strings for commands', () => {
    expect(imapString('alice')).toBe('"alice"');
    expect(imapString('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(imapString('line\nbreak')).toBe('{10+}\r\nline\nbreak');
  });
});
