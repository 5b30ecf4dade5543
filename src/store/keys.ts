/**
 * The only place that builds etcd key strings. Everything lives under one
 * configurable prefix (default "/mailshare/") and a schema version segment:
 *
 *   <prefix>v1/meta/bootstrap        admin bootstrap marker (token id)
 *   <prefix>v1/tokens/<token-id>     bearer token record (hash, role)
 */
export interface Keys {
  readonly root: string;
  readonly tokensPrefix: string;
  token(id: string): string;
  tokenIdFromKey(key: string): string;
  readonly bootstrap: string;
  /** Probed by health checks; never written. */
  readonly healthProbe: string;
}

export function createKeys(prefix: string): Keys {
  const root = `${prefix}v1/`;
  const tokensPrefix = `${root}tokens/`;
  return Object.freeze({
    root,
    tokensPrefix,
    token: (id: string) => `${tokensPrefix}${id}`,
    tokenIdFromKey: (key: string) => key.slice(tokensPrefix.length),
    bootstrap: `${root}meta/bootstrap`,
    healthProbe: `${root}meta/health`,
  });
}
