import { parseTenantId } from '../domain/ids.js';
import { decodePageToken, encodePageToken, parsePageSize } from '../domain/paging.js';
import type { AuditServiceServer } from '../gen/mailshare/v1/audit.js';
import type { AuditStore } from '../store/audit-store.js';
import { requireTenantRole } from './access.js';
import { auditToPb } from './convert.js';
import { type RpcDeps, unary } from './rpc.js';

export interface AuditServiceDeps extends RpcDeps {
  readonly audit: AuditStore;
}

export function createAuditService(deps: AuditServiceDeps): AuditServiceServer {
  return {
    listAudit: unary(deps, 'ListAudit', ['admin', 'tenant-admin'], async (req, ctx) => {
      const tenant = parseTenantId(req.tenant);
      const size = parsePageSize(req.pageSize);
      const after = decodePageToken(req.pageToken);
      requireTenantRole(ctx.principal.role, tenant, ['admin', 'tenant-admin']);
      const page = await deps.audit.list(tenant, size, after);
      return { records: page.records.map(auditToPb), nextPageToken: page.lastKey ? encodePageToken(page.lastKey) : '' };
    }),
  };
}
