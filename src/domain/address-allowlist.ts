import { invalidArgument } from './errors.js';
import { printable } from './ids.js';

/**
 * Which node addresses the cluster vouches for (config
 * placement.allowedAddresses): CIDRs (IPv4 or IPv6) and exact host names.
 * Gateways send users' passwords, and the Dovecot master password, to the
 * address a node registers, so a node may register only one of these.
 */
export type AllowEntry = { kind: 'cidr'; bits: bigint; mask: bigint; v6: boolean } | { kind: 'host'; name: string };

/** Loopback and private ranges: what a cluster on one site uses; anything else must be configured. */
export const DEFAULT_ALLOWED_ADDRESSES = ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'];

function parseIpv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
}

function parseIpv6(s: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.split('::').length > 2) return undefined;
  let text = s;
  // An embedded IPv4 address ends the text (::ffff:10.0.0.1): written as its two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    const v4 = parseIpv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const groups = (g: string): bigint[] | undefined => {
    if (g === '') return [];
    const out: bigint[] = [];
    for (const x of g.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(x)) return undefined;
      out.push(BigInt(`0x${x}`));
    }
    return out;
  };
  const a = groups(head);
  const b = rest === undefined ? [] : groups(rest);
  if (!a || !b) return undefined;
  const given = a.length + b.length;
  if (rest === undefined ? given !== 8 : given > 7) return undefined;
  return [...a, ...Array<bigint>(8 - given).fill(0n), ...b].reduce((acc, g) => (acc << 16n) | g, 0n);
}

export function parseAllowList(entries: readonly string[], field = 'placement.allowedAddresses'): AllowEntry[] {
  return entries.map((e, i) => {
    const slash = e.indexOf('/');
    if (slash < 0) {
      if (!/^[A-Za-z0-9.-]{1,253}$/.test(e) && parseIpv6(e) === undefined) throw invalidArgument(`${field}[${i}]`, `"${printable(e)}" is not a CIDR or host name`);
      const v4 = parseIpv4(e);
      const v6 = v4 === undefined ? parseIpv6(e) : undefined;
      if (v4 !== undefined) return { kind: 'cidr', bits: v4, mask: (1n << 32n) - 1n, v6: false };
      if (v6 !== undefined) return { kind: 'cidr', bits: v6, mask: (1n << 128n) - 1n, v6: true };
      return { kind: 'host', name: e.toLowerCase() };
    }
    const ip = e.slice(0, slash);
    const len = Number(e.slice(slash + 1));
    const v4 = parseIpv4(ip);
    const v6 = v4 === undefined ? parseIpv6(ip) : undefined;
    const width = v4 !== undefined ? 32 : 128;
    if ((v4 === undefined && v6 === undefined) || !/^\d{1,3}$/.test(e.slice(slash + 1)) || len > width) {
      throw invalidArgument(`${field}[${i}]`, `"${printable(e)}" is not a CIDR (address/prefix length)`);
    }
    const mask = len === 0 ? 0n : (((1n << BigInt(len)) - 1n) << BigInt(width - len));
    return { kind: 'cidr', bits: (v4 ?? v6)! & mask, mask, v6: v4 === undefined };
  });
}

/** Whether host:port (host an IPv4, [IPv6] or a name) is on the list. */
export function addressAllowed(hostPort: string, list: readonly AllowEntry[]): boolean {
  const host = hostPort.slice(0, hostPort.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  const v4 = parseIpv4(host);
  const v6 = v4 === undefined ? parseIpv6(host) : undefined;
  for (const e of list) {
    if (e.kind === 'host') {
      if (host.toLowerCase() === e.name) return true;
    } else if (v4 !== undefined && !e.v6) {
      if ((v4 & e.mask) === e.bits) return true;
    } else if (v6 !== undefined && e.v6) {
      if ((v6 & e.mask) === e.bits) return true;
    }
  }
  return false;
}
