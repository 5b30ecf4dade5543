import net from 'node:net';

/** A message an SmtpSink accepted. */
export interface SunkMessage {
  from: string;
  to: string[];
  data: string;
}

/**
 * A minimal SMTP server on a free loopback port that accepts every message
 * and keeps it: the relay a test Dovecot's submission service hands mail
 * to. EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no extensions beyond
 * 8BITMIME and PIPELINING.
 */
export async function startSmtpSink(): Promise<{ address: string; messages: SunkMessage[]; stop(): Promise<void> }> {
  const messages: SunkMessage[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    let inData = false;
    let cur: SunkMessage = { from: '', to: [], data: '' };
    s.write('220 sink.mailshare.test ESMTP\r\n');
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      for (;;) {
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            messages.push(cur);
            cur = { from: '', to: [], data: '' };
            s.write('250 2.0.0 queued\r\n');
          } else cur.data += `${line.startsWith('.') ? line.slice(1) : line}\r\n`;
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') s.write('250-sink.mailshare.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n');
        else if (verb === 'HELO') s.write('250 sink.mailshare.test\r\n');
        else if (verb === 'MAIL') {
          cur = { from: /<([^>]*)>/.exec(line)?.[1] ?? '', to: [], data: '' };
          s.write('250 2.1.0 ok\r\n');
        } else if (verb === 'RCPT') {
          cur.to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          s.write('250 2.1.5 ok\r\n');
        } else if (verb === 'DATA') {
          inData = true;
          s.write('354 go on\r\n');
        } else if (verb === 'QUIT') {
          s.end('221 2.0.0 bye\r\n');
        } else if (verb === 'RSET' || verb === 'NOOP') s.write('250 2.0.0 ok\r\n');
        else s.write('502 5.5.2 not here\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    messages,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
