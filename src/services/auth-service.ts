import { parsePageSize, decodePageToken, encodePageToken } from '../domain/paging.js';
import { formatRole, parseRole } from '../domain/role.js';
import { parseTokenDescription, parseTokenId } from '../domain/token.js';
import type { AuthServiceServer, TokenInfo } from '../gen/mailshare/v1/auth.js';
import type { TokenRecord, TokenStore } from '../store/token-store.js';
import { mintToken } from './auth.js';
import { ANY_ROLE, type RpcDeps, unary } from './rpc.js';

export interface AuthServiceDeps extends RpcDeps {
  readonly tokens: TokenStore;
}

export function createAuthService(deps: AuthServiceDeps): AuthServiceServer {
  return {
    createToken: unary(deps, 'CreateToken', ['admin'], async (req, ctx) => {
      const role = parseRole(req.role, 'role');
      const description = parseTokenDescription(req.description, 'description');
      const minted = mintToken();
      const rec = await deps.tokens.create({
        id: minted.id,
        role,
        secretHash: minted.secretHash,
        description,
        createdAt: new Date(),
        createdBy: `${formatRole(ctx.principal.role)} (token ${ctx.principal.tokenId})`,
      });
      ctx.log.info({ token: rec.id, role: formatRole(role) }, 'token created');
      return { token: minted.token, info: toInfo(rec) };
    }),

    listTokens: unary(deps, 'ListTokens', ['admin'], async (req) => {
      const size = parsePageSize(req.pageSize);
      const after = decodePageToken(req.pageToken);
      const page = await deps.tokens.list(size, after);
      return {
        tokens: page.tokens.map(toInfo),
        nextPageToken: page.lastKey ? encodePageToken(page.lastKey) : '',
      };
    }),

    revokeToken: unary(deps, 'RevokeToken', ['admin'], async (req, ctx) => {
      const id = parseTokenId(req.id, 'id');
      await deps.tokens.delete(id);
      ctx.log.info({ token: id }, 'token revoked');
      return {};
    }),

    whoAmI: unary(deps, 'WhoAmI', ANY_ROLE, async (_req, ctx) => ({
      tokenId: ctx.principal.tokenId,
      role: formatRole(ctx.principal.role),
    })),
  };
}

function toInfo(rec: TokenRecord): TokenInfo {
  return {
    id: rec.id,
    role: formatRole(rec.role),
    description: rec.description,
    createdAt: rec.createdAt,
    createdBy: rec.createdBy,
    revision: rec.revision,
  };
}
