/**
 * The only place that builds etcd key strings. Everything lives under one
 * configurable prefix (default "/mailshare/") and a schema version segment:
 *
 *   <prefix>v1/meta/bootstrap                        admin bootstrap marker (token id)
 *   <prefix>v1/meta/health                           probed by health checks, never written
 *   <prefix>v1/meta/snapshot-mark                    written by a coordinator to bring its copy for
 *                                                    snapshots up to the current revision
 *   <prefix>v1/tokens/<token-id>                     bearer token record (hash, role)
 *   <prefix>v1/tenants/<tenant>                      tenant record (settings)
 *   <prefix>v1/t/<tenant>/meta                       touched by every create inside the tenant
 *   <prefix>v1/t/<tenant>/groups/<group>             group record (members)
 *   <prefix>v1/t/<tenant>/mbox/<owner>/<name>        mailbox record, with its ACL
 *   <prefix>v1/t/<tenant>/shared/<grantee>/<owner>/<name>
 *                                                    "shared with" index entry: the ACL has a
 *                                                    positive entry with "l" for grantee
 *                                                    (a user, group:NAME, anyone, authenticated);
 *                                                    holds a copy of the mailbox record, written
 *                                                    with it (older entries: the mailbox id only)
 *   <prefix>v1/nodes/<node>                          node configuration (weight, zone, state)
 *   <prefix>v1/nodes-live/<node>                     node liveness, attached to the node's lease
 *   <prefix>v1/assign/<tenant>/<user>                user → node assignment, attached to the
 *                                                    node's lease; its create revision is the epoch
 *   <prefix>v1/moves/<tenant>/<user>                 move/kick request to the node holding the user
 *   <prefix>v1/holds/<tenant>/<user>/<node>          a node serving sessions of a user assigned
 *                                                    elsewhere (on that node's lease)
 *   <prefix>v1/move-acks/<tenant>/<user>/<node>      that node stopped its sessions of the user for
 *                                                    the move of the epoch it holds (on its lease)
 *   <prefix>v1/barriers/<id>[/<node>]                a revision an operator waits for every node to
 *                                                    apply, and each node's answer (on a lease)
 *   <prefix>v1/audit/<tenant>/<time>-<random>        audit record
 *   <prefix>v1/audit-tenants/<tenant>                tenants that have audit records (for pruning)
 *
 * User ids, group names and tenant ids never contain "/", so "<owner>/"
 * and "<grantee>/" prefixes never overlap.
 */
export interface Keys {
  readonly root: string;
  readonly tokensPrefix: string;
  token(id: string): string;
  tokenIdFromKey(key: string): string;
  readonly bootstrap: string;
  readonly healthProbe: string;
  /** Written by a coordinator whose copy for snapshots must see a revision at least as recent as now. */
  readonly snapshotMark: string;

  readonly tenantsPrefix: string;
  tenant(tenant: string): string;
  /** A login domain's owner (value: the tenant id); outside any tenant's data, unique in the cluster. */
  domain(domain: string): string;
  readonly domainsPrefix: string;
  tenantFromKey(key: string): string;
  /** Everything owned by a tenant (not its audit trail). */
  tenantData(tenant: string): string;
  tenantMeta(tenant: string): string;

  groupsPrefix(tenant: string): string;
  group(tenant: string, group: string): string;
  groupFromKey(tenant: string, key: string): string;

  mailboxesPrefix(tenant: string): string;
  ownerMailboxesPrefix(tenant: string, owner: string): string;
  mailbox(tenant: string, owner: string, name: string): string;
  /** "owner/name" from a mailbox key. */
  mailboxRefFromKey(tenant: string, key: string): string;

  sharedPrefix(tenant: string, grantee: string): string;
  /** Every "shared with" index entry of a tenant. */
  sharedTenantPrefix(tenant: string): string;
  shared(tenant: string, grantee: string, owner: string, name: string): string;
  /** "owner/name" from an index key of this grantee. */
  sharedRefFromKey(tenant: string, grantee: string, key: string): string;

  readonly nodesPrefix: string;
  node(name: string): string;
  readonly liveNodesPrefix: string;
  liveNode(name: string): string;
  readonly assignmentsPrefix: string;
  assignment(tenant: string, user: string): string;
  /** [tenant, user] from an assignment key. */
  assignmentFromKey(key: string): [string, string];

  /** Nodes serving sessions of a user assigned elsewhere (HoldUser). */
  holdsPrefix(tenant: string, user: string): string;
  hold(tenant: string, user: string, node: string): string;
  moveAcksPrefix(tenant: string, user: string): string;
  moveAck(tenant: string, user: string, node: string): string;

  readonly movesPrefix: string;
  /** `barriers/<id>` (the revision an operator waits for) and `barriers/<id>/<node>` (a node's answer). */
  readonly barriersPrefix: string;
  barrier(id: string): string;
  move(tenant: string, user: string): string;
  moveFromKey(key: string): [string, string];

  auditPrefix(tenant: string): string;
  audit(tenant: string, time: Date, suffix: string): string;
  /** Key bound for "older than time" range deletes. */
  auditBefore(tenant: string, time: Date): string;
  readonly auditTenantsPrefix: string;
  auditTenant(tenant: string): string;
}

export function createKeys(prefix: string): Keys {
  const root = `${prefix}v1/`;
  const tokensPrefix = `${root}tokens/`;
  const tenantsPrefix = `${root}tenants/`;
  const t = (tenant: string) => `${root}t/${tenant}/`;
  const auditTenantsPrefix = `${root}audit-tenants/`;
  // Fixed-width milliseconds keep audit keys in time order.
  const ts = (time: Date) => String(time.getTime()).padStart(15, '0');
  return Object.freeze({
    root,
    tokensPrefix,
    token: (id: string) => `${tokensPrefix}${id}`,
    tokenIdFromKey: (key: string) => key.slice(tokensPrefix.length),
    bootstrap: `${root}meta/bootstrap`,
    healthProbe: `${root}meta/health`,
    snapshotMark: `${root}meta/snapshot-mark`,

    tenantsPrefix,
    tenant: (tenant: string) => `${tenantsPrefix}${tenant}`,
    domainsPrefix: `${root}domains/`,
    domain: (domain: string) => `${root}domains/${domain}`,
    tenantFromKey: (key: string) => key.slice(tenantsPrefix.length),
    tenantData: t,
    tenantMeta: (tenant: string) => `${t(tenant)}meta`,

    groupsPrefix: (tenant: string) => `${t(tenant)}groups/`,
    group: (tenant: string, group: string) => `${t(tenant)}groups/${group}`,
    groupFromKey: (tenant: string, key: string) => key.slice(`${t(tenant)}groups/`.length),

    mailboxesPrefix: (tenant: string) => `${t(tenant)}mbox/`,
    ownerMailboxesPrefix: (tenant: string, owner: string) => `${t(tenant)}mbox/${owner}/`,
    mailbox: (tenant: string, owner: string, name: string) => `${t(tenant)}mbox/${owner}/${name}`,
    mailboxRefFromKey: (tenant: string, key: string) => key.slice(`${t(tenant)}mbox/`.length),

    sharedPrefix: (tenant: string, grantee: string) => `${t(tenant)}shared/${grantee}/`,
    sharedTenantPrefix: (tenant: string) => `${t(tenant)}shared/`,
    shared: (tenant: string, grantee: string, owner: string, name: string) => `${t(tenant)}shared/${grantee}/${owner}/${name}`,
    sharedRefFromKey: (tenant: string, grantee: string, key: string) => key.slice(`${t(tenant)}shared/${grantee}/`.length),

    nodesPrefix: `${root}nodes/`,
    node: (name: string) => `${root}nodes/${name}`,
    liveNodesPrefix: `${root}nodes-live/`,
    liveNode: (name: string) => `${root}nodes-live/${name}`,
    assignmentsPrefix: `${root}assign/`,
    assignment: (tenant: string, user: string) => `${root}assign/${tenant}/${user}`,
    assignmentFromKey: (key: string): [string, string] => {
      const rest = key.slice(`${root}assign/`.length);
      const slash = rest.indexOf('/');
      return [rest.slice(0, slash), rest.slice(slash + 1)];
    },

    holdsPrefix: (tenant: string, user: string) => `${root}holds/${tenant}/${user}/`,
    hold: (tenant: string, user: string, node: string) => `${root}holds/${tenant}/${user}/${node}`,
    moveAcksPrefix: (tenant: string, user: string) => `${root}move-acks/${tenant}/${user}/`,
    moveAck: (tenant: string, user: string, node: string) => `${root}move-acks/${tenant}/${user}/${node}`,

    movesPrefix: `${root}moves/`,
    barriersPrefix: `${root}barriers/`,
    barrier: (id: string) => `${root}barriers/${id}`,
    move: (tenant: string, user: string) => `${root}moves/${tenant}/${user}`,
    moveFromKey: (key: string): [string, string] => {
      const rest = key.slice(`${root}moves/`.length);
      const slash = rest.indexOf('/');
      return [rest.slice(0, slash), rest.slice(slash + 1)];
    },

    auditPrefix: (tenant: string) => `${root}audit/${tenant}/`,
    audit: (tenant: string, time: Date, suffix: string) => `${root}audit/${tenant}/${ts(time)}-${suffix}`,
    auditBefore: (tenant: string, time: Date) => `${root}audit/${tenant}/${ts(time)}`,
    auditTenantsPrefix,
    auditTenant: (tenant: string) => `${auditTenantsPrefix}${tenant}`,
  });
}

/** The smallest key greater than every key with this prefix (prefixes are ASCII). */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
