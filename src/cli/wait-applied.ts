import { Option } from 'commander';
import { PlacementServiceClient, type WaitAppliedResponse } from '../gen/mailshare/v1/placement.js';
import { type ConnectionFlags, parseTimeout } from './connection.js';
import { CliError } from './errors.js';
import type { CliIo } from './io.js';
import { withService } from './run.js';

export type WaitFlags = { waitApplied?: string | true };

/** `--wait-applied[=TIMEOUT]` on a write verb. */
export function waitAppliedOption(): Option {
  return new Option('--wait-applied [timeout]', 'return only once every live node (gateway or mailshare agent) has applied the change; default 10s, then list those that have not (exit 1)');
}

/**
 * After a write answered with `revision`: waits (WaitApplied) until every
 * live node applied it, when the flag was given; undefined otherwise.
 */
export async function waitApplied(io: CliIo, flags: ConnectionFlags & WaitFlags, revision: number): Promise<WaitAppliedResponse | undefined> {
  if (flags.waitApplied === undefined) return undefined;
  let timeoutMs: number;
  try {
    timeoutMs = flags.waitApplied === true ? 10_000 : parseTimeout(flags.waitApplied);
  } catch {
    throw new CliError(`--wait-applied: "${String(flags.waitApplied).slice(0, 20)}" is not a duration (e.g. 5s, 500ms, 2m)`, 2);
  }
  let res: WaitAppliedResponse | undefined;
  // The call itself may take the whole wait: its deadline is beyond it.
  await withService(io, { ...flags, timeout: `${timeoutMs + 10_000}ms` }, PlacementServiceClient, async (api) => {
    res = await api.waitApplied({ revision, timeoutMs });
  });
  return res;
}

/** The line a text answer ends with. */
export function appliedLine(r: WaitAppliedResponse): string {
  const done = r.nodes.filter((n) => n.revision > 0).map((n) => n.node);
  return `applied on ${done.length} of ${r.nodes.length} live nodes${done.length ? `: ${done.join(', ')}` : ''}\n`;
}

/** Exit 1 naming the laggards when not every node applied the change in time. */
export function requireApplied(r: WaitAppliedResponse | undefined): void {
  if (!r || r.complete) return;
  const late = r.nodes.filter((n) => n.revision === 0).map((n) => n.node);
  throw new CliError(`not applied in time on ${late.length} of ${r.nodes.length} nodes: ${late.join(', ')}`, 1);
}
