import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { getFreePort } from '../../src/store/etcd-process.js';
import { findProcesses, isAlive, waitFor } from './process.js';
import { tempDir } from './tmp.js';

export interface DovecotInstance {
  readonly address: string;
  /** With `protocols` pop3: its POP3 address. */
  readonly pop3Address?: string;
  /** With `protocols` lmtp: its LMTP address. */
  readonly lmtpAddress?: string;
  /** With `protocols` sieve: its ManageSieve address. */
  readonly sieveAddress?: string;
  /** With `protocols` submission: its submission address. */
  readonly submissionAddress?: string;
  readonly pid: number;
  readonly dir: string;
  stop(): Promise<void>;
  kill(): void;
  /** SIGKILL to the master and every process of the instance (a node's Dovecot gone at once: its clients' connections close). */
  killAll(): void;
  /** Starts it again after kill(), on the same configuration and port. */
  restart(): Promise<void>;
  /** The master process's pid now (it changes with restart()). */
  currentPid(): number;
}

/**
 * The Dovecot the tests run: the system's (Debian's 2.3) by default, or the one installed under
 * MAILSHARE_DOVECOT_PREFIX (e.g. 2.4, built by shared/tools/dovecot24/build.sh).
 */
export const DOVECOT_PREFIX = process.env.MAILSHARE_DOVECOT_PREFIX || undefined;
export const DOVECOT_BIN = DOVECOT_PREFIX ? path.join(DOVECOT_PREFIX, 'sbin', 'dovecot') : 'dovecot';
export const DOVEADM_BIN = DOVECOT_PREFIX ? path.join(DOVECOT_PREFIX, 'bin', 'doveadm') : 'doveadm';
let version: '2.3' | '2.4' | undefined;

/** "2.3" or "2.4": which configuration syntax the Dovecot under test takes. */
export function dovecotVersion(): '2.3' | '2.4' {
  if (version === undefined) {
    const v = execFileSync(DOVECOT_BIN, ['--version']).toString().trim();
    version = /^2\.[4-9]|^[3-9]\./.test(v) ? '2.4' : '2.3';
  }
  return version;
}

/** The directory of the deploy/dovecot files for the Dovecot under test (2.4 has its own syntax). */
export function deployDovecotDir(root: string): string {
  return dovecotVersion() === '2.4' ? path.join(root, 'deploy', 'dovecot', '2.4') : path.join(root, 'deploy', 'dovecot');
}

const handedOut = new Set<number>();
/**
 * A free loopback port no earlier call in this process returned: a port taken by bind(0) and
 * closed again comes back from the kernel now and then, and a test's own ports (an agent's
 * login check, a doveadm server) go into a Dovecot's config beside the Dovecot's own.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const p = await getFreePort();
    if (!handedOut.has(p)) {
      handedOut.add(p);
      return p;
    }
  }
}

/** uid/gid of nobody/nogroup: Dovecot refuses to store mail as root. */
function nobody(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'nobody']).toString().trim());
  const gid = Number(execFileSync('getent', ['group', 'nogroup']).toString().split(':')[2]);
  return { uid, gid };
}

/** A mail root shared by every Dovecot of a test cluster (the shared storage of a real deployment). */
export function mailRoot(): { path: string; remove(): void } {
  const t = tempDir('mailshare-mail-');
  const { uid, gid } = nobody();
  chownSync(t.path, uid, gid);
  return t;
}

/**
 * A real Dovecot 2.3 on a free loopback port, from a config file of our
 * own: plaintext auth on loopback, users from a passwd-file, a master user
 * for gateways ("user*master"), maildir under the shared mail root with "/"
 * as hierarchy separator. Stopped by its own pid.
 */
export async function startDovecot(opts: {
  name: string;
  mailRoot: string;
  users: Record<string, string>;
  master: { user: string; password: string };
  /** Dovecot's own IMAP proxy instead of a backend: every login is forwarded to this host:port (a benchmark baseline). */
  proxyTo?: string;
  /** Dovecot quota rules (count backend), e.g. ["Limited:messages=2"]: saving beyond them fails with NO [OVERQUOTA]. */
  quotaRules?: string[];
  /** Implicit TLS on the IMAP port with this certificate and key (PEM files). */
  tls?: { cert: string; key: string };
  /** Dovecot's mail_max_userip_connections (default here 1000; Dovecot's own default is 10). */
  maxUserIpConnections?: number;
  /** OAUTHBEARER and XOAUTH2 logins, tokens checked by POSTing them to this introspection URL (Dovecot's oauth2 passdb). */
  oauthIntrospection?: string;
  /** Dovecot's own ACLs (the acl plugin, vfile: a dovecot-acl file per folder) and IMAP ACL commands. */
  acl?: boolean;
  /** Also serve these protocols, each on a free port of its own (Dovecot's pop3 and lmtp). */
  protocols?: Array<'pop3' | 'lmtp' | 'sieve' | 'submission'>;
  /** With `protocols` submission: the SMTP server its submission service relays mail to (host:port). */
  submissionRelay?: string;
  /**
   * Authentication of its own instead of the users' passwd-file passdb and userdb (the master
   * passdb stays): given the instance's directory (where users.passwd is), the config text (in
   * the syntax of dovecotVersion()).
   */
  auth?: (dir: string) => string;
}): Promise<DovecotInstance> {
  if (dovecotVersion() === '2.4') {
    const unsupported = (['acl', 'quotaRules', 'oauthIntrospection', 'proxyTo'] as const).filter((k) => opts[k] !== undefined && opts[k] !== false);
    if (opts.protocols?.includes('sieve')) unsupported.push('sieve' as never);
    if (unsupported.length > 0) throw new Error(`startDovecot: ${unsupported.join(', ')} not written for Dovecot 2.4 yet`);
  }
  const t = tempDir(`mailshare-dovecot-${opts.name}-`);
  const dir = t.path;
  // Dovecot's auth process runs as user dovecot and must read the passwd files.
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, 'run'));
  mkdirSync(path.join(dir, 'state'));
  const port = await freePort();
  const instanceName = `mailshare-test-${opts.name}-${port}`;
  const pop3Port = opts.protocols?.includes('pop3') ? await freePort() : undefined;
  const lmtpPort = opts.protocols?.includes('lmtp') ? await freePort() : undefined;
  const sievePort = opts.protocols?.includes('sieve') ? await freePort() : undefined;
  const submissionPort = opts.protocols?.includes('submission') ? await freePort() : undefined;
  writeFileSync(path.join(dir, 'master.passwd'), `${opts.master.user}:{PLAIN}${opts.master.password}\n`, { mode: 0o644 });
  // user:password:uid:gid:gecos:home:shell: the passdb and the userdb (home and uid come from default_fields).
  const { uid, gid } = nobody();
  writeFileSync(path.join(dir, 'users.passwd'), Object.entries(opts.users).map(([u, p]) => `${u}:{PLAIN}${p}:${uid}:${gid}::${opts.mailRoot}/${u}::\n`).join(''), { mode: 0o644 });
  if (opts.oauthIntrospection) {
    writeFileSync(
      path.join(dir, 'oauth2.conf.ext'),
      `introspection_mode = post\nintrospection_url = ${opts.oauthIntrospection}\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n`,
      { mode: 0o644 },
    );
  }
  const defaultAuth = `${
  opts.proxyTo
    ? `passdb {
  driver = static
  args = proxy=y host=${opts.proxyTo.split(':')[0]} port=${opts.proxyTo.split(':')[1]} nopassword=y
}`
    : `passdb {
  driver = passwd-file
  args = ${dir}/users.passwd
}`
}
# Users are the passwd file's (so LMTP knows who does not exist); all store mail as nobody.
userdb {
  driver = passwd-file
  args = ${dir}/users.passwd
  default_fields = uid=nobody gid=nogroup home=${opts.mailRoot}/%u
}
`;
  const conf = path.join(dir, 'dovecot.conf');
  const ports = { port, pop3Port, lmtpPort, submissionPort };
  writeFileSync(
    conf,
    dovecotVersion() === '2.4' ? config24(opts, dir, instanceName, ports) : `base_dir = ${dir}/run
state_dir = ${dir}/state
instance_name = ${instanceName}
log_path = ${dir}/dovecot.log
# Microseconds: tests order sessions on different instances by their log lines.
log_timestamp = "%Y-%m-%d %H:%M:%S.%{usecs} "
protocols = imap${pop3Port ? ' pop3' : ''}${lmtpPort ? ' lmtp' : ''}${sievePort ? ' sieve' : ''}${submissionPort ? ' submission' : ''}
listen = 127.0.0.1
${opts.tls ? `ssl = required
ssl_cert = <${opts.tls.cert}
ssl_key = <${opts.tls.key}` : 'ssl = no'}
disable_plaintext_auth = no
auth_mechanisms = plain login${opts.oauthIntrospection ? ' oauthbearer xoauth2' : ''}
# Tests log in wrongly on purpose: no failure delay, no anvil penalty for loopback.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_location = maildir:${opts.mailRoot}/%u
${imapSettings(opts.maxUserIpConnections, opts.acl ? '  mail_plugins = $mail_plugins acl imap_acl\n' : '')}passdb {
  driver = passwd-file
  args = ${dir}/master.passwd
  master = yes
}
${
  opts.oauthIntrospection
    ? `passdb {
  driver = oauth2
  mechanisms = oauthbearer xoauth2
  args = ${dir}/oauth2.conf.ext
}`
    : ''
}
${opts.auth ? opts.auth(dir) : defaultAuth}
${
  lmtpPort
    ? `postmaster_address = postmaster@mailshare.test
hostname = ${opts.name}.mailshare.test
# Deliveries name the client's address (the MTA's, as the gateway passes it on with XCLIENT).
protocol lmtp {
  mail_log_prefix = "%s(%u)<%{pid}><%{session}> rip=%r: "
}
service lmtp {
  inet_listener lmtp {
    port = ${lmtpPort}
  }
}`
    : ''
}
${
  sievePort
    ? `service managesieve-login {
  inet_listener sieve {
    port = ${sievePort}
  }
}
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
}`
    : ''
}
${
  submissionPort
    ? `${lmtpPort ? '' : `hostname = ${opts.name}.mailshare.test
`}service submission-login {
  inet_listener submission {
    port = ${submissionPort}
  }
}
${opts.submissionRelay ? `submission_relay_host = ${opts.submissionRelay.split(':')[0]}
submission_relay_port = ${opts.submissionRelay.split(':')[1]}
submission_relay_trusted = yes` : ''}`
    : ''
}
${
  pop3Port
    ? `service pop3-login {
  service_count = 0
  process_min_avail = 1
  inet_listener pop3 {
    port = ${pop3Port}
  }
}
protocol pop3 {
  # One POP3 session per maildrop at a time (a second one hears -ERR [IN-USE]).
  pop3_lock_session = yes
  mail_max_userip_connections = ${opts.maxUserIpConnections ?? 1000}
}`
    : ''
}
${
  opts.acl
    ? `mail_plugins = $mail_plugins acl
plugin {
  acl = vfile
  # IMAP SETACL may name anyone and authenticated.
  acl_anyone = allow
}
# Other users' folders as shared/OWNER/NAME (what they are shared with decides).
namespace shared {
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:${opts.mailRoot}/%%u
  subscriptions = no
  list = children
}`
    : ''
}
${
  opts.quotaRules
    ? `mail_plugins = $mail_plugins quota
plugin {
  quota = count:User quota
  quota_vsizes = yes
${opts.quotaRules.map((r, i) => `  quota_rule${i === 0 ? '' : i + 1} = ${r}`).join('\n')}
}`
    : ''
}
# As deploy/local-cluster.sh: login processes that are already running greet at once (the gateway's
# logins wait for the greeting, a client connecting directly does not see it in its LOGIN time).
service imap-login {
  service_count = 0
  process_min_avail = 1
  inet_listener imap {
    port = ${port}${opts.tls ? '\n    ssl = yes' : ''}
  }
}
`,
  );
  // The daemon keeps inherited descriptors open: give it a file, not pipes
  // (spawnSync would wait for the pipes to close, forever).
  const startLog = path.join(dir, 'start.log');
  const pidFile = path.join(dir, 'run', 'master.pid');
  const launch = async (): Promise<number> => {
    const fd = openSync(startLog, 'w');
    const r = spawnSync(DOVECOT_BIN, ['-c', conf], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    if (r.status !== 0) throw new Error(`dovecot failed to start: ${readFileSync(startLog, 'utf8').trim()}`);
    // The file appears before its number is in it: read 0 then, the instance could never be stopped.
    const pidIn = (): number => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) || 0 : 0);
    await waitFor(() => pidIn() > 0, 10_000, 'dovecot pid file');
    const started = pidIn();
    await waitFor(async () => canConnect(port), 10_000, 'dovecot listening');
    return started;
  };
  let current = await launch();
  /**
   * Whether `pid` is still this instance's master: pids are reused (pid_max
   * is 32768 here), and a signal to the pid of a Dovecot that died earlier
   * could reach any other process, another test's or CI's own.
   */
  const ours = (pid: number): boolean => {
    try {
      return isAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(conf);
    } catch {
      return false;
    }
  };
  const signal = (sig: NodeJS.Signals): void => {
    if (!ours(current)) return;
    try {
      process.kill(current, sig);
    } catch {
      // already gone
    }
  };
  const kill = (): void => signal('SIGKILL');
  /** This instance's child processes (Dovecot names them "<instance_name>/<service>"). */
  const children = (): number[] => findProcesses(`${instanceName}/`);
  return {
    address: `127.0.0.1:${port}`,
    ...(pop3Port ? { pop3Address: `127.0.0.1:${pop3Port}` } : {}),
    ...(lmtpPort ? { lmtpAddress: `127.0.0.1:${lmtpPort}` } : {}),
    ...(sievePort ? { sieveAddress: `127.0.0.1:${sievePort}` } : {}),
    ...(submissionPort ? { submissionAddress: `127.0.0.1:${submissionPort}` } : {}),
    pid: current,
    dir,
    kill,
    killAll: () => {
      const procs = children();
      kill();
      for (const pid of procs) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    },
    currentPid: () => current,
    restart: async () => {
      kill();
      await waitFor(() => !ours(current), 10_000, 'dovecot gone');
      rmSync(pidFile, { force: true });
      // Its children let go of the port a moment after the master died.
      let lastErr: unknown;
      for (let i = 0; i < 50; i++) {
        try {
          current = await launch();
          return;
        } catch (err) {
          lastErr = err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      throw lastErr;
    },
    stop: async () => {
      signal('SIGTERM');
      await waitFor(() => !ours(current), 10_000, 'dovecot to stop').catch(() => signal('SIGKILL'));
      // Its children (named after the instance) outlive the master for a moment, or longer when
      // it was killed: one finishing a delivery still writes into the mail root. None may be left.
      await waitFor(() => children().length === 0, 5_000, 'dovecot children to exit').catch(() => undefined);
      for (const pid of children()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      await waitFor(() => children().length === 0, 5_000, 'dovecot children killed').catch(() => {
        // Seen once under a loaded CI run; what they are is worth knowing, the test's result is not theirs.
        const describe = (pid: number): string => {
          try {
            return `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')} (state ${readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.slice(0, 1)})`;
          } catch {
            return `${pid} (gone)`;
          }
        };
        const left = children().map(describe);
        if (left.length > 0) console.warn(`dovecot ${opts.name}: children still there after SIGKILL: ${left.join('; ')}`);
      });
      t.remove();
    },
  };
}

async function canConnect(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** What 2.3 and 2.4 name alike: the master-user separator, the inbox namespace, IMAP's limits. */
function imapSettings(maxUserIpConnections: number | undefined, plugins = ''): string {
  return `auth_master_user_separator = *
namespace inbox {
  inbox = yes
  separator = /
}
# The readers of a shared folder each open a connection as its owner (see deploy/local-cluster.sh).
protocol imap {
  mail_max_userip_connections = ${maxUserIpConnections ?? 1000}
${plugins}}
service imap {
  process_limit = 4096
}
# Every imap process talks to stats: as many as imap may have.
service stats {
  client_limit = 10000
}
`;
}

/** The same test instance in Dovecot 2.4's syntax (shared/tools/dovecot24/README.md). */
function config24(
  opts: { name: string; mailRoot: string; master: unknown; tls?: { cert: string; key: string }; maxUserIpConnections?: number; submissionRelay?: string; auth?: (dir: string) => string },
  dir: string,
  instanceName: string,
  p: { port: number; pop3Port?: number; lmtpPort?: number; submissionPort?: number },
): string {
  const defaultAuth = `passdb users {
  driver = passwd-file
  passwd_file_path = ${dir}/users.passwd
}
# Users are the passwd file's (so LMTP knows who does not exist); all store mail as nobody.
userdb users {
  driver = passwd-file
  passwd_file_path = ${dir}/users.passwd
}
`;
  const relay = opts.submissionRelay?.split(':');
  return `dovecot_config_version = 2.4.4
dovecot_storage_version = 2.4.4
base_dir = ${dir}/run
state_dir = ${dir}/state
instance_name = ${instanceName}
log_path = ${dir}/dovecot.log
# Microseconds: tests order sessions on different instances by their log lines.
log_timestamp = "%Y-%m-%d %H:%M:%S.%{usecs} "
protocols = imap${p.pop3Port ? ' pop3' : ''}${p.lmtpPort ? ' lmtp' : ''}${p.submissionPort ? ' submission' : ''}
listen = 127.0.0.1
${opts.tls ? `ssl = required
ssl_server_cert_file = ${opts.tls.cert}
ssl_server_key_file = ${opts.tls.key}` : 'ssl = no\nauth_allow_cleartext = yes'}
auth_mechanisms = plain login
# Tests log in wrongly on purpose: no failure delay.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_driver = maildir
mail_path = ${opts.mailRoot}/%{user}
mail_home = ${opts.mailRoot}/%{user}
${imapSettings(opts.maxUserIpConnections)}passdb master {
  driver = passwd-file
  passwd_file_path = ${dir}/master.passwd
  master = yes
}
${opts.auth ? opts.auth(dir) : defaultAuth}
${
  p.lmtpPort || p.submissionPort
    ? `postmaster_address = postmaster@mailshare.test
hostname = ${opts.name}.mailshare.test`
    : ''
}
${
  p.lmtpPort
    ? `# Deliveries name the client's address (the MTA's, as the gateway passes it on with XCLIENT).
protocol lmtp {
  mail_log_prefix = "%{protocol}(%{user})<%{process:pid}><%{session}> rip=%{remote_ip}: "
}
service lmtp {
  inet_listener lmtp {
    port = ${p.lmtpPort}
  }
}`
    : ''
}
${
  p.submissionPort
    ? `service submission-login {
  inet_listener submission {
    port = ${p.submissionPort}
  }
  inet_listener submissions {
    port = 0
  }
}
${relay ? `submission_relay_host = ${relay[0]}\nsubmission_relay_port = ${relay[1]}\nsubmission_relay_trusted = yes` : ''}`
    : ''
}
${
  p.pop3Port
    ? `service pop3-login {
  restart_request_count = unlimited
  process_min_avail = 1
  inet_listener pop3 {
    port = ${p.pop3Port}
  }
  inet_listener pop3s {
    port = 0
  }
}
protocol pop3 {
  # One POP3 session per maildrop at a time (a second one hears -ERR [IN-USE]).
  pop3_lock_session = yes
  mail_max_userip_connections = ${opts.maxUserIpConnections ?? 1000}
}`
    : ''
}
# Login processes that are already running greet at once.
service imap-login {
  restart_request_count = unlimited
  process_min_avail = 1
  inet_listener imap {
    port = ${p.port}${opts.tls ? '\n    ssl = yes' : ''}
  }
  inet_listener imaps {
    port = 0
  }
}
`;
}
