import { BackendConnector, type BackendTls, backendLogin, connectBackend } from './backend.js';

export interface BackendHealthOptions {
  /** Time between probes; default 1 s. */
  intervalMs?: number;
  /** Consecutive failed probes before the server counts as down; default 3. The same number of passes brings it back. */
  failures?: number;
  /** How long a probe waits for the greeting (or the login); default 2 s. */
  timeoutMs?: number;
  /** With a master user: every `loginEvery` probes, log in as this user through the master user (default every 10th). */
  loginUser?: string;
  loginEvery?: number;
}

/**
 * Watches this node's own IMAP server (Dovecot), as Dovecot Pro's dovemon
 * or the director's poolmon do: a cheap probe (connect, read the greeting)
 * every interval, and now and then a master-user login. After `failures`
 * consecutive failures the server is down (onChange(false)); it is up again
 * only after as many consecutive passes, so a server that answers slowly
 * but within the timeout never flaps, and one that died is noticed within
 * about failures × interval.
 */
export class BackendHealth {
  private timer: NodeJS.Timeout | undefined;
  private healthy = true;
  private streak = 0;
  private probes = 0;
  private running = false;
  private readonly intervalMs: number;
  private readonly failures: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly address: string,
    private readonly opts: BackendHealthOptions & { tls?: BackendTls; master?: { user: string; password: string } },
    private readonly onChange: (healthy: boolean, reason: string) => void,
  ) {
    this.intervalMs = opts.intervalMs ?? 1000;
    this.failures = opts.failures ?? 3;
    this.timeoutMs = opts.timeoutMs ?? 2000;
  }

  get up(): boolean {
    return this.healthy;
  }

  start(): void {
    this.timer ??= setInterval(() => void this.tick(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    // A probe that outlasts the interval is not overtaken by the next one.
    if (this.running) return;
    this.running = true;
    try {
      const failure = await this.probe();
      const passed = failure === undefined;
      if (passed === this.healthy) {
        this.streak = 0;
        return;
      }
      this.streak++;
      if (this.streak < this.failures) return;
      this.streak = 0;
      this.healthy = passed;
      this.onChange(passed, passed ? `${this.address} answers again` : `IMAP server ${this.address} ${failure}`);
    } finally {
      this.running = false;
    }
  }

  /** One probe: undefined when it passed, else what went wrong. */
  private async probe(): Promise<string | undefined> {
    this.probes++;
    const { loginUser, master } = this.opts;
    if (loginUser && master && this.probes % (this.opts.loginEvery ?? 10) === 0) {
      try {
        const login = await backendLogin(this.address, 'mailshare.health', `${loginUser}*${master.user}`, master.password, { timeoutMs: this.timeoutMs, via: new BackendConnector(this.opts.tls, { pool: 0 }) });
        login.socket.end('mailshare.bye LOGOUT\r\n');
        return login.ok ? undefined : 'refuses the master login';
      } catch (err) {
        return `fails a login (${(err as Error).message})`;
      }
    }
    return this.greeting();
  }

  private greeting(): Promise<string | undefined> {
    return new Promise((resolve) => {
      const { socket } = connectBackend(this.address, this.opts.tls);
      let got = '';
      const done = (why: string | undefined): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve(why);
      };
      const timer = setTimeout(() => done(`sent no greeting within ${this.timeoutMs} ms`), this.timeoutMs);
      socket.on('data', (c: Buffer) => {
        got += c.toString('latin1');
        if (got.includes('\n')) done(got.startsWith('* OK') ? undefined : `greets with ${JSON.stringify(got.slice(0, 40))}`);
      });
      socket.on('error', (err) => done(`cannot be reached (${err.message})`));
      socket.on('close', () => done('closed the connection'));
    });
  }
}
