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

/**
 * The connection flags before the command too (`mailshare --credentials F
 * node list`): the program takes them, and each command that talks to a
 * server gets those it was not given itself (its own win). A command that
 * has no such flag (`server`, `gateway`) refuses them rather than ignore them.
 */
export function addGlobalConnectionOptions(program: Command): Command {
  addConnectionOptions(program);
  const names = program.options.map((o) => o.attributeName());
  program.hook('preAction', (_program, action) => {
    if (action === program) return;
    const given = program.opts();
    for (const name of names) {
      if (given[name] === undefined) continue;
      const flag = program.options.find((o) => o.attributeName() === name)!.long!;
      if (!action.options.some((o) => o.attributeName() === name)) {
        throw new CliError(`${flag}: not an option of "mailshare ${commandPath(action)}"; give it after the command`, 2);
      }
      if (action.getOptionValue(name) === undefined) action.setOptionValueWithSource(name, given[name], 'cli');
    }
  });
  return program;
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

const DASH_OPERAND = '\u0000';

/**
 * Lets a command's operands start with "-": negative ACL identifiers
 * (`-bob`, `-group:team`) and rights to remove (`-w`) work without "--".
 * A single-dash word is an operand unless it is exactly one of the
 * command's short options (`-o`, `-h`) or one glued to a value it accepts
 * (`-ojson`); "--" still ends the options as usual.
 */
export function allowDashOperands(cmd: Command): Command {
  const parse = cmd.parseOptions.bind(cmd);
  cmd.parseOptions = (args: string[]) => {
    const shorts = new Map(cmd.options.filter((o) => o.short).map((o) => [o.short!, o]));
    const takesValue = (a: string): boolean => cmd.options.some((o) => (o.long === a || o.short === a) && (o.required || o.optional));
    const marked: string[] = [];
    let literal = false;
    for (const [i, a] of args.entries()) {
      if (a === '--') literal = true;
      const glued = shorts.get(a.slice(0, 2));
      const isOption = a === '-h' || shorts.has(a) || (glued?.argChoices?.includes(a.slice(2)) ?? false);
      const operand = !literal && /^-[^-]/.test(a) && !isOption && !(i > 0 && takesValue(args[i - 1]!));
      marked.push(operand ? DASH_OPERAND + a : a);
    }
    const r = parse(marked);
    const unmark = (x: string): string => (x.startsWith(DASH_OPERAND) ? x.slice(DASH_OPERAND.length) : x);
    return { operands: r.operands.map(unmark), unknown: r.unknown.map(unmark) };
  };
  return cmd;
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
