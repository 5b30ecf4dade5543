import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadServerConfig } from '../../src/config/server-config.js';
import { tempDir } from '../harness/tmp.js';

const tmp = tempDir('mailshare-config-');
afterAll(() => tmp.remove());

function file(name: string, content: string): string {
  const p = path.join(tmp.path, name);
  writeFileSync(p, content);
  return p;
}

const load = (flags: Record<string, unknown> = {}, env: Record<string, string> = {}, configFile?: string) =>
  loadServerConfig({ flags, env, configFile, cwd: tmp.path });

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('server configuration', () => {
  it('has documented defaults', () => {
    const c = load();
    expect(c.listen).toBe('127.0.0.1:7400');
    expect(c.etcd.endpoints).toEqual([]);
    expect(c.etcd.prefix).toBe('/mailshare/');
    expect(c.dataDir).toBe(path.join(tmp.path, '.mailshare'));
    expect(c.credentialsFile).toBe(path.join(tmp.path, '.mailshare', 'credentials.json'));
    expect(c.log).toEqual({ level: 'info', format: 'auto' });
    expect(c.etcdBinary).toBe('etcd');
    expect(c.shutdownTimeoutMs).toBe(10_000);
    expect(c.placementEpsilon).toBe(0.25);
    expect(c.auditRetentionMs).toBe(90 * 86_400_000);
    expect(load({ placementEpsilon: '0.5', auditRetention: '7d' })).toMatchObject({ placementEpsilon: 0.5, auditRetentionMs: 7 * 86_400_000 });
    expect(c.placementAllowedAddresses).toContain('10.0.0.0/8');
    expect(load({ placementAllowedAddresses: '10.1.0.0/16, imap1.example.net' }).placementAllowedAddresses).toEqual(['10.1.0.0/16', 'imap1.example.net']);
    expect(load({}, { MAILSHARE_PLACEMENT_ALLOWED_ADDRESSES: '192.0.2.0/24' }).placementAllowedAddresses).toEqual(['192.0.2.0/24']);
    expect(c.http.listen).toBeUndefined();
    expect(c.eventsSnapshotCopy).toBe(true);
    expect(load({ eventsSnapshotCopy: 'off' }).eventsSnapshotCopy).toBe(false);
    expect(load({}, { MAILSHARE_EVENTS_SNAPSHOT_COPY: 'false' }).eventsSnapshotCopy).toBe(false);
    expect(load({}, {}, file('copy.yaml', 'events:\n  snapshotCopy: false\n')).eventsSnapshotCopy).toBe(false);
    expect(c.eventsSharedWatch).toBe(true);
    expect(load({ eventsSharedWatch: 'off' }).eventsSharedWatch).toBe(false);
    expect(load({}, { MAILSHARE_EVENTS_SHARED_WATCH: 'no' }).eventsSharedWatch).toBe(false);
    expect(load({}, {}, file('hub.yaml', 'events:\n  sharedWatch: off\n')).eventsSharedWatch).toBe(false);
    expect(load({ httpListen: '127.0.0.1:7480' }).http.listen).toBe('127.0.0.1:7480');
    expect(load({}, { MAILSHARE_HTTP_LISTEN: '[::1]:7480' }).http.listen).toBe('[::1]:7480');
    expect(load({}, {}, file('http.yaml', 'http:\n  listen: 0.0.0.0:7480\n')).http.listen).toBe('0.0.0.0:7480');
    expect(Object.isFrozen(c) && Object.isFrozen(c.etcd) && Object.isFrozen(c.tls)).toBe(true);
  });

  it('takes flags over env over file over defaults', () => {
    const yaml = file('prec.yaml', 'listen: 127.0.0.1:1111\nlog:\n  level: warn\n  format: json\netcd:\n  endpoints: [http://127.0.0.1:2379]\n  prefix: /from-file/\n');
    const fromFile = load({}, {}, yaml);
    expect(fromFile.listen).toBe('127.0.0.1:1111');
    expect(fromFile.log).toEqual({ level: 'warn', format: 'json' });
    expect(fromFile.etcd.endpoints).toEqual(['http://127.0.0.1:2379']);
    expect(fromFile.etcd.prefix).toBe('/from-file/');

    const fromEnv = load({}, { MAILSHARE_LISTEN: '127.0.0.1:2222', MAILSHARE_LOG_LEVEL: 'debug' }, yaml);
    expect(fromEnv.listen).toBe('127.0.0.1:2222');
    expect(fromEnv.log.level).toBe('debug');
    expect(fromEnv.log.format).toBe('json');

    const fromFlag = load({ listen: '127.0.0.1:3333' }, { MAILSHARE_LISTEN: '127.0.0.1:2222' }, yaml);
    expect(fromFlag.listen).toBe('127.0.0.1:3333');
    expect(fromFlag.log.level).toBe('warn');
  });

  it('reads JSON files and resolves their paths against the file', () => {
    const sub = path.join(tmp.path, 'sub');
    mkdirSync(sub, { recursive: true });
    const json = path.join(sub, 'c.json');
    writeFileSync(json, JSON.stringify({ dataDir: 'state', shutdownTimeout: '2s', etcd: { endpoints: 'http://a:1,http://b:2' } }));
    const c = load({}, {}, json);
    expect(c.dataDir).toBe(path.join(sub, 'state'));
    expect(c.credentialsFile).toBe(path.join(sub, 'state', 'credentials.json'));
    expect(c.shutdownTimeoutMs).toBe(2000);
    expect(c.etcd.endpoints).toEqual(['http://a:1', 'http://b:2']);
  });

  it.each([
    [{ listen: 'nope' }, {}, '--listen'],
    [{ listen: '127.0.0.1:70000' }, {}, '--listen'],
    [{}, { MAILSHARE_LISTEN: 'x:y' }, 'MAILSHARE_LISTEN'],
    [{ etcd: 'localhost:2379' }, {}, '--etcd'],
    [{ etcd: 'ftp://h:1' }, {}, '--etcd'],
    [{ etcd: ',' }, {}, '--etcd'],
    [{ etcdPrefix: 'noslash' }, {}, '--etcd-prefix'],
    [{ logLevel: 'loud' }, {}, '--log-level'],
    [{ logFormat: 'xml' }, {}, '--log-format'],
    [{ shutdownTimeout: 'soon' }, {}, '--shutdown-timeout'],
    [{ placementEpsilon: 'lots' }, {}, '--placement-epsilon'],
    [{ eventsSnapshotCopy: 'maybe' }, {}, '--events-snapshot-copy'],
    [{ eventsSharedWatch: 'sometimes' }, {}, '--events-shared-watch'],
    [{}, { MAILSHARE_PLACEMENT_EPSILON: '0' }, 'MAILSHARE_PLACEMENT_EPSILON'],
    [{ auditRetention: '10s' }, {}, '--audit-retention'],
    [{ placementAllowedAddresses: '10.0.0.0/33' }, {}, '--placement-allowed-addresses'],
    [{ placementAllowedAddresses: ',' }, {}, '--placement-allowed-addresses'],
    [{ tlsCert: 'cert.pem' }, {}, 'tls.key'],
    [{ tlsClientCa: 'ca.pem' }, {}, 'tls.clientCa'],
    [{ tlsCert: 'missing.pem', tlsKey: 'missing.key' }, {}, '--tls-cert'],
    [{ httpListen: 'web' }, {}, '--http-listen'],
    [{ httpListen: '127.0.0.1:7400' }, {}, 'is the gRPC listen address too'],
    [{}, { MAILSHARE_HTTP_LISTEN: ':80' }, 'MAILSHARE_HTTP_LISTEN'],
  ] as Array<[Record<string, unknown>, Record<string, string>, string]>)('rejects %j %j naming %s', (flags, env, where) => {
    const e = errorOf(() => load(flags, env));
    expect(e.code).toBe('invalid_argument');
    expect(e.message).toContain(where);
    expect(e.message.split('\n')).toHaveLength(1);
  });

  it('rejects unknown keys, bad syntax and unreadable files', () => {
    expect(errorOf(() => load({}, {}, file('typo.yaml', 'lissen: 1\n'))).message).toMatch(/lissen: unknown setting/);
    expect(errorOf(() => load({}, {}, file('bad.yaml', 'listen: [\n'))).message).toMatch(/not valid YAML or JSON/);
    expect(errorOf(() => load({}, {}, file('list.yaml', '- a\n- b\n'))).message).toMatch(/mapping/);
    expect(errorOf(() => load({}, {}, file('dup.yaml', 'listen: a:1\nlisten: b:2\n'))).message).toMatch(/not valid/);
    expect(errorOf(() => load({}, {}, path.join(tmp.path, 'nope.yaml'))).message).toMatch(/cannot read .*ENOENT/);
    expect(errorOf(() => load({}, {}, file('num.yaml', 'listen: 7400\n'))).message).toMatch(/listen: must be a string/);
  });
});

describe('deploy/server.example.yaml', () => {
  it('is a valid configuration', () => {
    const example = path.join(__dirname, '..', '..', 'deploy', 'server.example.yaml');
    const c = loadServerConfig({ flags: {}, env: {}, configFile: example, cwd: tmp.path });
    expect(c.listen).toBe('0.0.0.0:7400');
    expect(c.etcd.endpoints).toHaveLength(3);
    expect(c.log).toEqual({ level: 'info', format: 'json' });
    expect(c.shutdownTimeoutMs).toBe(10_000);
    expect(c.http.listen).toBe('0.0.0.0:7480');
  });
});
