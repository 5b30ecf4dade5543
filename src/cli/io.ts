import { type Command, Option } from 'commander';
import { CliError } from './errors.js';

/** What a command may touch: injected so commands stay testable. */
export interface CliIo {
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  out(text: string): void;
  /** Progress and notices for humans (never data). */
  err(text: string): void;
  /** True when stdout is a terminal (progress bars, colours). */
  readonly isTty: boolean;
}

export type OutputFormat = 'text' | 'json';

export function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text');
}

/** Adds the flags every command that talks to a server accepts. */
export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--addr <host:port>', 'server address (env MAILSHARE_ADDR; default from credentials, else 127.0.0.1:7400)')
    .option('--credentials <file>', 'credentials file (env MAILSHARE_CREDENTIALS; default ./.mailshare/credentials.json, then ~/.config/mailshare/credentials.json)')
    .option('--tls', 'use TLS with the system CA roots')
    .option('--tls-ca <file>', 'CA bundle to verify the server (env MAILSHARE_TLS_CA; implies --tls)')
    .option('--tls-cert <file>', 'client certificate for mutual TLS (env MAILSHARE_TLS_CLIENT_CERT)')
    .option('--tls-key <file>', 'client key for mutual TLS (env MAILSHARE_TLS_CLIENT_KEY)')
    .option('--tls-server-name <name>', 'expected server name in its certificate')
    .option('--timeout <duration>', 'deadline per call, e.g. 5s (env MAILSHARE_TIMEOUT)', undefined);
}

export function printJson(io: CliIo, value: unknown): void {
  io.out(JSON.stringify(value, null, 2) + '\n');
}

/** Renders rows as aligned columns under a header. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function usage(message: string): CliError {
  return new CliError(message, 2);
}
