import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { DEFAULT_ALLOWED_ADDRESSES, parseAllowList } from '../domain/address-allowlist.js';
import { DomainError } from '../domain/errors.js';

/** Options of `mailshare server`, after validation. Frozen. */
export interface ServerConfig {
  /** host:port the gRPC server binds; port 0 picks a free port. */
  readonly listen: string;
  readonly etcd: {
    /** Client URLs of an existing etcd cluster; empty = start the embedded etcd. */
    readonly endpoints: readonly string[];
    /** Every key mailshare writes starts with this. */
    readonly prefix: string;
  };
  /** Embedded etcd data and the credentials file live here. */
  readonly dataDir: string;
  /** Where the server writes the bootstrap admin credentials (mode 0600). */
  readonly credentialsFile: string;
  readonly tls: {
    readonly cert: string | undefined;
    readonly key: string | undefined;
    /** CA bundle that client certificates must chain to (mutual TLS). */
    readonly clientCa: string | undefined;
  };
  readonly log: {
    readonly level: LogLevel;
    readonly format: 'auto' | 'json' | 'pretty';
  };
  /** etcd executable for the embedded mode. */
  readonly etcdBinary: string;
  /** How long graceful shutdown waits for in-flight calls, in ms. */
  readonly shutdownTimeoutMs: number;
  /** How long audit records are kept, in ms. */
  readonly auditRetentionMs: number;
  /** Bounded-load slack ε: no node takes more than (1+ε)× its weighted share of users. */
  readonly placementEpsilon: number;
  /** Addresses nodes may register (CIDRs and host names): gateways send passwords there. */
  readonly placementAllowedAddresses: readonly string[];
  /** Bytes an event watcher may have queued (client not reading) before it is cut off as too slow. */
  readonly eventsBufferLimit: number;
  /** Keep a watch-fed copy of every entity to serve agents' snapshots from (default true). */
  readonly eventsSnapshotCopy: boolean;
  /** Serve every event stream from one shared etcd watch (default true). */
  readonly eventsSharedWatch: boolean;
  readonly http: {
    /** host:port of the HTTP listener (/metrics); undefined = off. HTTPS when tls is set. */
    readonly listen: string | undefined;
  };
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULT_LISTEN = '127.0.0.1:7400';
export const DEFAULT_DATA_DIR = '.mailshare';
export const DEFAULT_ETCD_PREFIX = '/mailshare/';

interface Setting {
  /** Dotted key in the config file. */
  key: string;
  flag: string;
  env: string;
  /** Whether the value is a file path (resolved against the config file's directory). */
  isPath?: boolean;
  /** Value is a list (comma separated in flags and env). */
  isList?: boolean;
}

/** Every server setting with its flag, environment variable and file key. */
export const SERVER_SETTINGS: readonly Setting[] = [
  { key: 'listen', flag: 'listen', env: 'MAILSHARE_LISTEN' },
  { key: 'etcd.endpoints', flag: 'etcd', env: 'MAILSHARE_ETCD', isList: true },
  { key: 'etcd.prefix', flag: 'etcdPrefix', env: 'MAILSHARE_ETCD_PREFIX' },
  { key: 'dataDir', flag: 'dataDir', env: 'MAILSHARE_DATA_DIR', isPath: true },
  { key: 'credentialsFile', flag: 'credentialsFile', env: 'MAILSHARE_CREDENTIALS', isPath: true },
  { key: 'tls.cert', flag: 'tlsCert', env: 'MAILSHARE_TLS_CERT', isPath: true },
  { key: 'tls.key', flag: 'tlsKey', env: 'MAILSHARE_TLS_KEY', isPath: true },
  { key: 'tls.clientCa', flag: 'tlsClientCa', env: 'MAILSHARE_TLS_CLIENT_CA', isPath: true },
  { key: 'log.level', flag: 'logLevel', env: 'MAILSHARE_LOG_LEVEL' },
  { key: 'log.format', flag: 'logFormat', env: 'MAILSHARE_LOG_FORMAT' },
  { key: 'etcdBinary', flag: 'etcdBinary', env: 'MAILSHARE_ETCD_BINARY' },
  { key: 'shutdownTimeout', flag: 'shutdownTimeout', env: 'MAILSHARE_SHUTDOWN_TIMEOUT' },
  { key: 'audit.retention', flag: 'auditRetention', env: 'MAILSHARE_AUDIT_RETENTION' },
  { key: 'placement.epsilon', flag: 'placementEpsilon', env: 'MAILSHARE_PLACEMENT_EPSILON' },
  { key: 'placement.allowedAddresses', flag: 'placementAllowedAddresses', env: 'MAILSHARE_PLACEMENT_ALLOWED_ADDRESSES', isList: true },
  { key: 'events.bufferLimit', flag: 'eventsBufferLimit', env: 'MAILSHARE_EVENTS_BUFFER_LIMIT' },
  { key: 'events.snapshotCopy', flag: 'eventsSnapshotCopy', env: 'MAILSHARE_EVENTS_SNAPSHOT_COPY' },
  { key: 'events.sharedWatch', flag: 'eventsSharedWatch', env: 'MAILSHARE_EVENTS_SHARED_WATCH' },
  { key: 'http.listen', flag: 'httpListen', env: 'MAILSHARE_HTTP_LISTEN' },
];

export interface ConfigSources {
  /** Parsed command-line options (commander camelCase names); undefined = not given. */
  flags: Readonly<Record<string, unknown>>;
  env: Readonly<Record<string, string | undefined>>;
  /** --config FILE (or MAILSHARE_CONFIG). */
  configFile?: string | undefined;
  cwd: string;
}

export class ConfigError extends DomainError {
  constructor(where: string, message: string) {
    super('invalid_argument', `config: ${where}: ${message}`, { field: where });
  }
}

interface Raw {
  value: unknown;
  /** Human name of where the value came from, for error messages. */
  source: string;
  /** Directory relative paths are resolved against. */
  base: string;
}

/**
 * Loads the server configuration once: flags > environment > config file >
 * defaults. Every problem is reported as a ConfigError naming the setting.
 */
export function loadServerConfig(src: ConfigSources): ServerConfig {
  const file = src.configFile ? readConfigFile(path.resolve(src.cwd, src.configFile)) : undefined;
  const raw = new Map<string, Raw>();
  for (const s of SERVER_SETTINGS) {
    const fromFlag = src.flags[s.flag];
    const fromEnv = src.env[s.env];
    if (fromFlag !== undefined) {
      raw.set(s.key, { value: fromFlag, source: `--${kebab(s.flag)}`, base: src.cwd });
    } else if (fromEnv !== undefined && fromEnv !== '') {
      raw.set(s.key, { value: fromEnv, source: s.env, base: src.cwd });
    } else if (file && file.values.has(s.key)) {
      raw.set(s.key, { value: file.values.get(s.key), source: `${file.name}: ${s.key}`, base: file.dir });
    }
  }

  const str = (key: string): string | undefined => {
    const r = raw.get(key);
    if (r === undefined) return undefined;
    if (typeof r.value !== 'string') throw new ConfigError(r.source, 'must be a string');
    return r.value;
  };
  const filePath = (key: string): string | undefined => {
    const v = str(key);
    if (v === undefined) return undefined;
    if (v.trim() === '') throw new ConfigError(raw.get(key)!.source, 'must not be empty');
    return path.resolve(raw.get(key)!.base, v);
  };

  const listen = str('listen') ?? DEFAULT_LISTEN;
  checkListen(listen, raw.get('listen')?.source ?? 'listen');

  const httpListen = str('http.listen');
  if (httpListen !== undefined) checkListen(httpListen, raw.get('http.listen')!.source);
  if (httpListen !== undefined && httpListen === listen && !listen.endsWith(":0")) throw new ConfigError(raw.get('http.listen')!.source, `"${httpListen}" is the gRPC listen address too; give the HTTP listener its own port`);

  const endpoints = parseEndpoints(raw.get('etcd.endpoints'));
  const prefix = str('etcd.prefix') ?? DEFAULT_ETCD_PREFIX;
  if (!/^\/[\x21-\x7e]*\/$/.test(prefix) || prefix.includes('//')) {
    throw new ConfigError(raw.get('etcd.prefix')?.source ?? 'etcd.prefix', 'must start and end with "/" and contain printable ASCII only');
  }

  const dataDir = filePath('dataDir') ?? path.resolve(src.cwd, DEFAULT_DATA_DIR);
  const credentialsFile = filePath('credentialsFile') ?? path.join(dataDir, 'credentials.json');

  const cert = filePath('tls.cert');
  const key = filePath('tls.key');
  const clientCa = filePath('tls.clientCa');
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(cert === undefined ? 'tls.cert' : 'tls.key', 'tls.cert and tls.key must be given together');
  }
  if (clientCa !== undefined && cert === undefined) {
    throw new ConfigError('tls.clientCa', 'mutual TLS needs tls.cert and tls.key as well');
  }
  for (const [k, p] of [['tls.cert', cert], ['tls.key', key], ['tls.clientCa', clientCa]] as const) {
    if (p !== undefined) checkReadable(p, raw.get(k)!.source);
  }

  const level = str('log.level') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(raw.get('log.level')!.source, `"${level}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const format = str('log.format') ?? 'auto';
  if (format !== 'auto' && format !== 'json' && format !== 'pretty') {
    throw new ConfigError(raw.get('log.format')!.source, `"${format}" is not one of auto, json, pretty`);
  }

  const etcdBinary = str('etcdBinary') ?? 'etcd';
  if (etcdBinary.trim() === '') throw new ConfigError(raw.get('etcdBinary')!.source, 'must not be empty');

  const shutdownTimeoutMs = parseDuration(raw.get('shutdownTimeout'), 10_000);
  const auditRetentionMs = parseDuration(raw.get('audit.retention'), 90 * 24 * 3600_000);
  if (auditRetentionMs < 60_000) throw new ConfigError(raw.get('audit.retention')!.source, 'must be at least 1m');
  const bl = raw.get('events.bufferLimit');
  const eventsBufferLimit = bl === undefined ? 8 * 1024 * 1024 : Number(bl.value);
  if (bl !== undefined && (typeof bl.value === 'boolean' || bl.value === '' || !Number.isInteger(eventsBufferLimit) || eventsBufferLimit < 1024 || eventsBufferLimit > 1024 ** 3)) {
    throw new ConfigError(bl.source, `"${String(bl.value)}" is not a byte count from 1024 to 1073741824`);
  }
  const onOff = (key: string, fallback: boolean): boolean => {
    const setting = raw.get(key);
    if (setting === undefined) return fallback;
    const v = typeof setting.value === 'boolean' ? String(setting.value) : String(setting.value).trim().toLowerCase();
    if (['true', 'on', 'yes', '1'].includes(v)) return true;
    if (['false', 'off', 'no', '0'].includes(v)) return false;
    throw new ConfigError(setting.source, `"${String(setting.value)}" is not on or off`);
  };
  const eventsSnapshotCopy = onOff('events.snapshotCopy', true);
  const eventsSharedWatch = onOff('events.sharedWatch', true);
  const eps = raw.get('placement.epsilon');
  const placementEpsilon = eps === undefined ? 0.25 : Number(eps.value);
  if (eps !== undefined && (typeof eps.value === 'boolean' || eps.value === '' || !Number.isFinite(placementEpsilon) || placementEpsilon <= 0 || placementEpsilon > 10)) {
    throw new ConfigError(eps.source, `"${String(eps.value)}" is not a number > 0 and ≤ 10`);
  }

  const allowed = raw.get('placement.allowedAddresses');
  let placementAllowedAddresses = DEFAULT_ALLOWED_ADDRESSES;
  if (allowed !== undefined) {
    const list = typeof allowed.value === 'string' ? allowed.value.split(',') : allowed.value;
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) throw new ConfigError(allowed.source, 'must be a list of CIDRs and host names or a comma-separated string');
    placementAllowedAddresses = list.map((x: string) => x.trim()).filter((x) => x !== '');
    try {
      parseAllowList(placementAllowedAddresses);
    } catch (err) {
      throw new ConfigError(allowed.source, (err as Error).message.replace(/^[^:]*: /, ''));
    }
    if (placementAllowedAddresses.length === 0) throw new ConfigError(allowed.source, 'must name at least one CIDR or host name');
  }

  return deepFreeze({
    listen,
    etcd: { endpoints, prefix },
    dataDir,
    credentialsFile,
    tls: { cert, key, clientCa },
    log: { level: level as LogLevel, format },
    etcdBinary,
    shutdownTimeoutMs,
    auditRetentionMs,
    placementEpsilon,
    placementAllowedAddresses,
    eventsBufferLimit,
    eventsSnapshotCopy,
    eventsSharedWatch,
    http: { listen: httpListen },
  });
}

function readConfigFile(file: string): { name: string; dir: string; values: Map<string, unknown> } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    // YAML is a superset of JSON, so one parser reads both.
    doc = text.trim() === '' ? {} : YAML.parse(text, { uniqueKeys: true });
  } catch (err) {
    throw new ConfigError(file, `not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(file, 'must be a mapping of settings');
  const values = new Map<string, unknown>();
  flatten(doc as Record<string, unknown>, '', values);
  const known = new Set(SERVER_SETTINGS.map((s) => s.key));
  for (const k of values.keys()) {
    if (!known.has(k)) throw new ConfigError(`${path.basename(file)}: ${k}`, 'unknown setting');
  }
  return { name: path.basename(file), dir: path.dirname(file), values };
}

function flatten(obj: Record<string, unknown>, prefix: string, out: Map<string, unknown>): void {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix + k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && ['etcd', 'tls', 'log', 'audit', 'placement', 'events', 'http'].includes(key)) {
      flatten(v as Record<string, unknown>, `${key}.`, out);
    } else {
      out.set(key, v);
    }
  }
}

function checkListen(listen: string, source: string): void {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[2]) > 65535) {
    throw new ConfigError(source, `"${listen}" is not host:port (e.g. 127.0.0.1:7400, [::1]:7400, 0.0.0.0:7400)`);
  }
}

function parseEndpoints(r: Raw | undefined): string[] {
  if (r === undefined) return [];
  let list: unknown[];
  if (typeof r.value === 'string') list = r.value.split(',');
  else if (Array.isArray(r.value)) list = r.value;
  else throw new ConfigError(r.source, 'must be a list of URLs or a comma-separated string');
  const out: string[] = [];
  for (const item of list) {
    if (typeof item !== 'string') throw new ConfigError(r.source, 'every endpoint must be a string');
    const u = item.trim();
    if (u === '') continue;
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new ConfigError(r.source, `"${u}" is not a URL (expected http://host:port or https://host:port)`);
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '' || url.pathname !== '/') {
      throw new ConfigError(r.source, `"${u}" is not an etcd client URL (expected http://host:port or https://host:port)`);
    }
    out.push(`${url.protocol}//${url.host}`);
  }
  if (out.length === 0) throw new ConfigError(r.source, 'must name at least one endpoint');
  return out;
}

/** Accepts milliseconds as a number, or "500ms", "10s", "2m", "12h", "90d". */
export function parseDuration(r: Raw | undefined, fallback: number): number {
  if (r === undefined) return fallback;
  const v = r.value;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'string') {
    const m = /^(\d+)(ms|s|m|h|d)?$/.exec(v.trim());
    const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
    if (m) return Number(m[1]) * unit[m[2] ?? 'ms']!;
  }
  throw new ConfigError(r.source, `"${String(v)}" is not a duration (e.g. 500ms, 10s, 2m, 12h, 90d)`);
}

function checkReadable(file: string, source: string): void {
  try {
    readFileSync(file);
  } catch (err) {
    throw new ConfigError(source, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function deepFreeze<T>(obj: T): T {
  if (obj !== null && typeof obj === 'object') {
    for (const v of Object.values(obj)) deepFreeze(v);
    Object.freeze(obj);
  }
  return obj;
}
