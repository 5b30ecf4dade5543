import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { DomainError } from '../domain/errors.js';
import { type Role, formatRole, parseRole } from '../domain/role.js';
import { etcdOp } from './errors.js';
import { type Keys, prefixEnd } from './keys.js';
import { type PrefixCache, createPrefixCache } from './prefix-cache.js';

/** A stored token: never the secret itself, only its SHA-256. */
export interface TokenRecord {
  readonly id: string;
  readonly role: Role;
  /** Hex SHA-256 of the secret part of the token. */
  readonly secretHash: string;
  readonly description: string;
  readonly createdAt: Date;
  readonly createdBy: string;
  /** etcd mod revision of the record. */
  readonly revision: number;
}

interface StoredToken {
  role: string;
  secretHash: string;
  description: string;
  createdAt: string;
  createdBy: string;
}

export interface TokenPage {
  tokens: TokenRecord[];
  /** Key to continue after, or undefined on the last page. */
  lastKey: string | undefined;
}

/** Lookups of ids the token cache does not know that may read etcd, per second (a burst as large). */
const MISS_READS_PER_SECOND = 50;

export class TokenStore {
  private cache: PrefixCache<TokenRecord> | undefined;
  private missBudget = MISS_READS_PER_SECOND;
  private missAt = Date.now();

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly logger: Logger,
  ) {}

  /** Creates a record; fails with already_exists if the id is taken. */
  async create(rec: Omit<TokenRecord, 'revision'>): Promise<TokenRecord> {
    const key = this.keys.token(rec.id);
    const res = await etcdOp('creating a token', () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(toStored(rec))))
        .commit(),
    );
    if (!res.succeeded) throw new DomainError('already_exists', `token ${rec.id} already exists`, { field: 'id' });
    return { ...rec, revision: Number(res.header.revision) };
  }

  /**
   * Creates the bootstrap admin token unless one was already created: the
   * marker key and the token are written in one transaction, so concurrent
   * coordinators starting on an empty etcd mint exactly one.
   */
  async createBootstrap(rec: Omit<TokenRecord, 'revision'>): Promise<TokenRecord | undefined> {
    const key = this.keys.token(rec.id);
    const res = await etcdOp('creating the bootstrap token', () =>
      this.client
        .if(this.keys.bootstrap, 'Create', '==', 0)
        .and(key, 'Create', '==', 0)
        .then(
          this.client.put(this.keys.bootstrap).value(rec.id),
          this.client.put(key).value(JSON.stringify(toStored(rec))),
        )
        .commit(),
    );
    return res.succeeded ? { ...rec, revision: Number(res.header.revision) } : undefined;
  }

  /**
   * Replaces the bootstrap token (the embedded server lost its credentials
   * file): guarded on the marker's current value and revision.
   */
  async replaceBootstrap(rec: Omit<TokenRecord, 'revision'>): Promise<TokenRecord | undefined> {
    const cur = await etcdOp('reading the bootstrap marker', () =>
      this.client.get(this.keys.bootstrap).exec(),
    );
    const kv = cur.kvs[0];
    if (!kv) return this.createBootstrap(rec);
    const oldId = kv.value.toString();
    const res = await etcdOp('replacing the bootstrap token', () =>
      this.client
        .if(this.keys.bootstrap, 'Mod', '==', Number(kv.mod_revision))
        .and(this.keys.token(rec.id), 'Create', '==', 0)
        .then(
          this.client.put(this.keys.bootstrap).value(rec.id),
          this.client.delete().key(this.keys.token(oldId)),
          this.client.put(this.keys.token(rec.id)).value(JSON.stringify(toStored(rec))),
        )
        .commit(),
    );
    return res.succeeded ? { ...rec, revision: Number(res.header.revision) } : undefined;
  }

  async get(id: string): Promise<TokenRecord | undefined> {
    const res = await etcdOp('reading a token', () => this.client.get(this.keys.token(id)).exec());
    const kv = res.kvs[0];
    return kv ? decode(id, kv.value, Number(kv.mod_revision)) : undefined;
  }

  async list(limit: number, afterKey: string | undefined): Promise<TokenPage> {
    const start = afterKey !== undefined ? `${afterKey}\0` : this.keys.tokensPrefix;
    const end = prefixEnd(this.keys.tokensPrefix);
    if (afterKey !== undefined && !afterKey.startsWith(this.keys.tokensPrefix)) {
      throw new DomainError('invalid_argument', 'page_token: is not a token from a previous page', { field: 'page_token' });
    }
    const res = await etcdOp('listing tokens', () =>
      this.client.getAll().inRange({ start, end }).limit(limit + 1).exec(),
    );
    const tokens: TokenRecord[] = [];
    for (const kv of res.kvs.slice(0, limit)) {
      const id = this.keys.tokenIdFromKey(kv.key.toString());
      const rec = decode(id, kv.value, Number(kv.mod_revision));
      if (rec) tokens.push(rec);
    }
    const more = res.kvs.length > limit;
    return { tokens, lastKey: more ? res.kvs[limit - 1]!.key.toString() : undefined };
  }

  /** Deletes a token; not_found if it does not exist. */
  async delete(id: string): Promise<void> {
    const res = await etcdOp('revoking a token', () => this.client.delete().key(this.keys.token(id)).exec());
    if (Number(res.deleted) === 0) throw new DomainError('not_found', `token ${id} does not exist`, { field: 'id' });
  }

  /**
   * Starts the watch-fed cache used to authenticate calls without an etcd
   * read per call. Revocations reach it within one watch round trip.
   */
  startCache(): Promise<void> {
    this.cache ??= createPrefixCache({
      client: this.client,
      prefix: this.keys.tokensPrefix,
      logger: this.logger,
      decode: (key, value) => decode(this.keys.tokenIdFromKey(key), value, 0),
    });
    return this.cache.ready;
  }

  /**
   * Cached lookup; falls back to etcd when the cache is not running, and for
   * an id the cache does not know: a token created a moment ago (here or at
   * another coordinator) may not have reached the cache yet. Those reads are
   * limited (MISS_READS_PER_SECOND), so made-up ids cannot turn into an etcd
   * read each; over the limit an unknown id is unknown.
   */
  async lookup(id: string): Promise<TokenRecord | undefined> {
    if (!this.cache) return this.get(id);
    const hit = this.cache.get(this.keys.token(id));
    if (hit) return hit;
    const now = Date.now();
    this.missBudget = Math.min(MISS_READS_PER_SECOND, this.missBudget + ((now - this.missAt) / 1000) * MISS_READS_PER_SECOND);
    this.missAt = now;
    if (this.missBudget < 1) return undefined;
    this.missBudget--;
    return this.get(id);
  }

  async close(): Promise<void> {
    await this.cache?.close();
  }
}

function toStored(rec: Omit<TokenRecord, 'revision'>): StoredToken {
  return {
    role: formatRole(rec.role),
    secretHash: rec.secretHash,
    description: rec.description,
    createdAt: rec.createdAt.toISOString(),
    createdBy: rec.createdBy,
  };
}

function decode(id: string, value: Buffer, revision: number): TokenRecord | undefined {
  try {
    const s = JSON.parse(value.toString()) as StoredToken;
    if (typeof s.secretHash !== 'string' || !/^[0-9a-f]{64}$/.test(s.secretHash)) return undefined;
    return {
      id,
      role: parseRole(s.role),
      secretHash: s.secretHash,
      description: String(s.description ?? ''),
      createdAt: new Date(s.createdAt),
      createdBy: String(s.createdBy ?? ''),
      revision,
    };
  } catch {
    return undefined;
  }
}
