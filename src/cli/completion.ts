import { type Command, type Option } from 'commander';
import { DirectoryServiceClient } from '../gen/mailshare/v1/directory.js';
import { PlacementServiceClient } from '../gen/mailshare/v1/placement.js';
import type { ConnectionFlags } from './connection.js';
import { CliError } from './errors.js';
import type { CliIo } from './io.js';
import { withService } from './run.js';

/**
 * Shell completion: `mailshare completion bash|zsh|fish` prints a script
 * that asks the binary itself (`mailshare __complete WORDS…`) for the
 * candidates at the cursor: the subcommands and flags of the command typed
 * so far, the choices of a flag that has them, and tenant and node names
 * from the server for arguments that take one (within a second; nothing
 * when the server cannot be reached).
 */
export function registerCompletion(program: Command, io: CliIo): void {
  program
    .command('completion')
    .description('print a shell completion script: eval "$(mailshare completion bash)", or see the README for zsh and fish')
    .argument('<shell>', 'bash, zsh or fish')
    .action((shell: string) => {
      const script = SCRIPTS[shell];
      if (!script) throw new CliError(`shell: "${shell.slice(0, 20)}" is not one of bash, zsh, fish`, 2);
      io.out(script);
    });

  program
    .command('__complete', { hidden: true })
    .description('completion candidates for the words typed so far (used by the completion scripts)')
    .argument('[words...]', 'the words after "mailshare", the last one being completed')
    .allowUnknownOption()
    .helpOption(false)
    .action(async (words: string[]) => {
      const out = await candidates(program, words, io);
      if (out.length) io.out(`${out.join('\n')}\n`);
    });
}

const longFlags = (cmd: Command): string[] => cmd.options.map((o: Option) => o.long).filter((l): l is string => l !== undefined && l !== '--version');

/** What may come at the last word, given the words before it. */
async function candidates(program: Command, words: string[], io: CliIo): Promise<string[]> {
  const before = words.slice(0, -1);
  const current = words[words.length - 1] ?? '';
  let cmd = program;
  const flags: Record<string, string> = {};
  let positional = 0;
  let pendingOption: Option | undefined;
  for (const w of before) {
    if (pendingOption) {
      flags[pendingOption.attributeName()] = w;
      pendingOption = undefined;
      continue;
    }
    if (w.startsWith('--')) {
      const [name, value] = w.split('=', 2);
      const opt = [...cmd.options, ...program.options].find((o) => o.long === name);
      if (opt && (opt.required || opt.optional) && value === undefined) pendingOption = opt;
      else if (opt && value !== undefined) flags[opt.attributeName()] = value;
      continue;
    }
    const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
    if (sub && positional === 0) {
      cmd = sub;
      continue;
    }
    positional++;
  }
  const filter = (list: string[]): string[] => list.filter((c) => c.startsWith(current));
  const conn = { ...flags, timeout: flags.timeout ?? '1s' } as ConnectionFlags;
  if (pendingOption) {
    const kind = /<(tenant|node)>/.exec(pendingOption.flags)?.[1];
    return filter(kind ? await serverNames(kind as 'tenant' | 'node', conn, io) : (pendingOption.argChoices ?? []));
  }
  if (current.startsWith('-')) return filter(longFlags(cmd));
  const subs = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => c.name());
  if (subs.length > 0) return filter(subs);
  const arg = cmd.registeredArguments[Math.min(positional, cmd.registeredArguments.length - 1)];
  if (!arg || (positional >= cmd.registeredArguments.length && !arg.variadic)) return [];
  const kind = arg.name();
  return kind === 'tenant' || kind === 'node' ? filter(await serverNames(kind, conn, io)) : [];
}

/** Tenant ids or node names, from the server (none when it cannot be asked: no noise either). */
async function serverNames(kind: 'tenant' | 'node', conn: ConnectionFlags, io: CliIo): Promise<string[]> {
  let names: string[] = [];
  try {
    if (kind === 'tenant') {
      await withService(io, conn, DirectoryServiceClient, async (api) => {
        names = (await api.listTenants({ pageSize: 1000, pageToken: '' })).tenants.map((t) => t.id);
      });
    } else {
      await withService(io, conn, PlacementServiceClient, async (api) => {
        names = (await api.listNodes({})).nodes.map((n) => n.name);
      });
    }
  } catch {
    names = [];
  }
  return names;
}

const SCRIPTS: Record<string, string> = {
  bash: `# mailshare completion for bash: eval "$(mailshare completion bash)" (e.g. in ~/.bashrc)
_mailshare() {
  local IFS=$'\\n'
  COMPREPLY=($(mailshare __complete -- "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _mailshare mailshare
`,
  zsh: `#compdef mailshare
# mailshare completion for zsh: mailshare completion zsh > "\${fpath[1]}/_mailshare"
_mailshare() {
  local -a candidates
  candidates=("\${(@f)$(mailshare __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -- "\${candidates[@]}"
}
compdef _mailshare mailshare
`,
  fish: `# mailshare completion for fish: mailshare completion fish > ~/.config/fish/completions/mailshare.fish
complete -c mailshare -f -a '(mailshare __complete -- (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
`,
};
