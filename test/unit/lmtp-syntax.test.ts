import { PassThrough } from 'node:stream';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ClientInput } from '../../src/gateway/lmtp/input.js';
import { formatParams, formatReply, parseLmtpCommand, parseMailbox } from '../../src/gateway/lmtp/syntax.js';

describe('LMTP command grammar', () => {
  it('parses and rebuilds the envelope', () => {
    expect(parseLmtpCommand('MAIL FROM:<a@b.example> SIZE=100 body=8bitmime')).toEqual({ verb: 'MAIL', from: 'a@b.example', params: [{ key: 'SIZE', value: '100' }, { key: 'BODY', value: '8bitmime' }] });
    expect(parseLmtpCommand('mail from:<>')).toEqual({ verb: 'MAIL', from: '', params: [] });
    expect(parseLmtpCommand('RCPT TO:<@relay.example:bob@b.example> ORCPT=rfc822;bob@b.example')).toEqual({ verb: 'RCPT', to: 'bob@b.example', params: [{ key: 'ORCPT', value: 'rfc822;bob@b.example' }] });
    expect(parseLmtpCommand('RCPT TO:<alice>')).toMatchObject({ verb: 'RCPT', to: 'alice' });
    expect(parseLmtpCommand('BDAT 12 LAST')).toEqual({ verb: 'BDAT', size: 12, last: true });
    expect(formatParams([{ key: 'SIZE', value: '1' }, { key: 'SMTPUTF8' }])).toBe(' SIZE=1 SMTPUTF8');
  });

  it('refuses what is not the grammar, naming the problem', () => {
    for (const [line, reply] of [
      ['MAIL FROM:a@b.example', /^501 .*angle brackets/],
      ['MAIL FROM:<a@b.example>x', /^501 .*junk/],
      ['MAIL FROM:<a@b.example> SIZE=1 SIZE=2', /^501 .*duplicate/],
      ['RCPT TO:<>', /^501 .*empty path/],
      ['RCPT TO:<a@@b>', /^501 .*invalid address/],
      ['RCPT TO:<a@b> X=\x01', /^501 .*invalid parameter/],
      ['BDAT x', /^501 /],
      ['DATA now', /^501 /],
      ['LHLO', /^501 /],
      ['XYZZY', /^500 /],
    ] as const) {
      const c = parseLmtpCommand(line);
      expect(c.verb, line).toBe('bad');
      expect((c as { reply: string }).reply, line).toMatch(reply);
    }
    expect(parseMailbox('"a b"@example.com')).toBe('"a b"@example.com');
    expect(parseMailbox('a..b@example.com')).toBeUndefined();
    expect(parseMailbox('alice')).toBeUndefined();
    expect(parseMailbox('alice', { domainOptional: true })).toBe('alice');
  });

  it('sends replies on as printable text with our line end', () => {
    expect(formatReply({ code: 550, enhanced: '5.1.1', text: 'no\r\nsuch\x00user' })).toBe('550 5.1.1 no??such?user\r\n');
  });
});

describe('message data as the gateway rebuilds it', () => {
  async function collect(chunks: string[]): Promise<{ data: string; rest: string | undefined }> {
    const socket = new PassThrough();
    const input = new ClientInput(socket as unknown as net.Socket);
    for (const c of chunks) socket.write(Buffer.from(c, 'latin1'));
    let data = '';
    for (;;) {
      const p = await input.data();
      if (!p) throw new Error('ended');
      data += p.data.toString('latin1');
      if (p.end) break;
    }
    socket.end();
    const rest = await input.line(1000);
    return { data, rest };
  }

  it('ends at CRLF.CRLF only, even split across chunks, and leaves what follows for the next command', async () => {
    expect(await collect(['a\r\nb\r\n.\r\nQUIT\r\n'])).toEqual({ data: 'a\r\nb\r\n', rest: 'QUIT' });
    expect(await collect(['a\r\nb\r', '\n.', '\r', '\nRSET\r\n'])).toEqual({ data: 'a\r\nb\r\n', rest: 'RSET' });
    expect(await collect(['.\r\n'])).toEqual({ data: '', rest: undefined });
  });

  it('turns bare LFs into CRLF, keeps dot-stuffing, and makes a bare-LF dot line harmless', async () => {
    const r = await collect(['one\ntwo\r\n..stuffed\r\n.\nMAIL FROM:<x@y>\r\n.\r\n']);
    expect(r.data).toBe('one\r\ntwo\r\n..stuffed\r\n..\r\nMAIL FROM:<x@y>\r\n');
  });

  it('passes a very long line on in pieces without taking it for the end', async () => {
    const long = 'x'.repeat(200_000);
    const r = await collect([long.slice(0, 70_000), long.slice(70_000), '\r\n.\r\n']);
    expect(r.data).toBe(`${long}\r\n`);
  });
});
