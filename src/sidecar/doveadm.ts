import { execFile } from 'node:child_process';

/** How `mailshare agent` reaches the local Dovecot: its doveadm and the config it runs from. */
export interface DoveadmOptions {
  /** The doveadm executable; default "doveadm". */
  readonly binary?: string;
  /** Dovecot's config file (doveadm -c): where its sockets are. Default: Dovecot's own default. */
  readonly config?: string;
  /** One call's time limit in ms; default 10 s. */
  readonly timeoutMs?: number;
}

/** A session Dovecot reports (doveadm who): the login name, the protocol, and its count. */
export interface DovecotSession {
  readonly user: string;
  readonly protocol: string;
  readonly connections: number;
}

export class DoveadmError extends Error {
  override readonly name = 'DoveadmError';
}

/**
 * The local Dovecot through doveadm: who is logged in (`who`, from anvil,
 * which counts every login of every protocol) and ending a user's sessions
 * (`kick`, which reaches IMAP, POP3, ManageSieve and submission processes).
 */
export class Doveadm {
  private syntax: Promise<'2.3' | '2.4'> | undefined;

  constructor(private readonly opts: DoveadmOptions = {}) {}

  /**
   * Which doveadm this is, from its own usage text: 2.4's kick takes `-f <passdb field>` (and
   * always ends every matching connection); 2.3's `-f` means force.
   */
  private version(): Promise<'2.3' | '2.4'> {
    this.syntax ??= new Promise((resolve) => {
      execFile(this.opts.binary ?? 'doveadm', ['help'], { timeout: this.opts.timeoutMs ?? 10_000 }, (_err, stdout, stderr) => {
        resolve(/kick .*-f <passdb field>/.test(`${stdout}${stderr}`) ? '2.4' : '2.3');
      });
    });
    return this.syntax;
  }

  /** Every user logged in now, one entry per user and protocol. */
  async who(): Promise<DovecotSession[]> {
    const out = await this.run(['who', '-1']);
    const sessions: DovecotSession[] = [];
    for (const line of out.split('\n')) {
      // -1: one line per connection: "username proto (pid) (ip)"; the header says "username".
      const [user, protocol] = line.trim().split(/\s+/);
      if (!user || !protocol || user === 'username') continue;
      const known = sessions.find((s) => s.user === user && s.protocol === protocol);
      if (known) (known as { connections: number }).connections++;
      else sessions.push({ user, protocol, connections: 1 });
    }
    return sessions;
  }

  /** Ends every session of `user` (a Dovecot login name, exactly: wildcards are refused). */
  async kick(user: string): Promise<void> {
    if (!/^[^\s*?]+$/.test(user)) throw new DoveadmError(`kick: "${user}" is not one user's login name`);
    await this.run(['kick', ...(await this.force()), user]);
  }

  /** Ends every session on this Dovecot (the node lost its lease). */
  async kickAll(): Promise<void> {
    await this.run(['kick', ...(await this.force()), '*']);
  }

  /** 2.3: -f, so that a process serving others too is ended as well. */
  private async force(): Promise<string[]> {
    return (await this.version()) === '2.3' ? ['-f'] : [];
  }

  private run(args: string[]): Promise<string> {
    const argv = [...(this.opts.config ? ['-c', this.opts.config] : []), ...args];
    return new Promise((resolve, reject) => {
      execFile(this.opts.binary ?? 'doveadm', argv, { timeout: this.opts.timeoutMs ?? 10_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        // kick exits 68 (EX_NOHOST) and says "no users kicked" when nobody matched: done all the same.
        if (err && !(args[0] === 'kick' && err.code === 68 && /no users kicked/.test(stdout))) {
          reject(new DoveadmError(`doveadm ${args[0]}: ${(stderr || stdout || err.message).trim().split('\n')[0]}`));
        } else resolve(stdout);
      });
    });
  }
}
