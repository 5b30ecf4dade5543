/**
 * The watchdog of `mailshare agent`: a small process of its own that the
 * agent starts with a pipe on its stdin. While the agent lives, the pipe
 * stays open and the watchdog does nothing. When the pipe closes without
 * the agent having said "stop" first (kill -9, a crash, the OOM killer),
 * the node's lease runs out and its users will be assigned elsewhere, while
 * the local Dovecot would go on serving their open sessions: the watchdog
 * kicks every session, once at once and once more a moment later (a login
 * that passed the login check just before the agent died). New logins fail
 * by themselves then: the login check (deploy/dovecot/mailshare-check.lua)
 * asks the agent, which is gone.
 *
 * argv[2]: JSON of DoveadmOptions. Signals that reach the whole process
 * group (Ctrl-C in a terminal, a service manager's SIGTERM) are ignored:
 * only the pipe decides.
 */
import { Doveadm, type DoveadmOptions } from './doveadm.js';
import { WATCHDOG_STOP } from './watchdog-stop.js';
/** The second kick, after the first: ms. */
const AGAIN_MS = 1000;

function say(msg: string): void {
  process.stderr.write(`${JSON.stringify({ level: 'warn', component: 'agent-watchdog', time: Date.now(), msg })}\n`);
}

async function main(): Promise<void> {
  const opts = JSON.parse(process.argv[2] ?? '{}') as DoveadmOptions;
  const doveadm = new Doveadm(opts);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => undefined);
  let heard = '';
  process.stdin.on('data', (c: Buffer) => {
    heard = (heard + c.toString('latin1')).slice(-WATCHDOG_STOP.length);
  });
  await new Promise<void>((resolve) => {
    process.stdin.once('close', resolve);
    process.stdin.once('end', resolve);
    process.stdin.once('error', () => resolve());
  });
  if (heard === WATCHDOG_STOP) return;
  say('the agent exited without letting its users go: kicking every Dovecot session');
  const kick = async (): Promise<void> => {
    try {
      await doveadm.kickAll();
    } catch (err) {
      say(`kicking every session failed: ${String(err)}`);
    }
  };
  await kick();
  await new Promise((r) => setTimeout(r, AGAIN_MS));
  await kick();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    say(`watchdog failed: ${String(err)}`);
    process.exit(1);
  },
);
