import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { TOKEN_ROLES, type TokenRecord } from '../../db/token-store.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { Id, IdParams, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, encodeCursor, pageRequest } from '../schemas.js';

export const DEFAULT_TOKEN_TTL_SEC = 90 * 86400;
const MAX_TOKEN_TTL_SEC = 365 * 86400;

export const ApiTokenView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: StringEnum(TOKEN_ROLES),
  deviceId: Nullable(Type.String({ description: 'the device a device token speaks for' })),
  createdAt: Timestamp,
  createdBy: Nullable(Type.String({ description: 'id of the admin token that created it; null for the admin-token file' })),
  expiresAt: Nullable(Timestamp),
  lastUsedAt: Nullable(Timestamp),
  revokedAt: Nullable(Timestamp),
}, { title: 'ApiToken', description: 'an API token; its secret is shown once, when it is created, and never stored' });
export type ApiTokenView = Static<typeof ApiTokenView>;

export function apiTokenView(t: TokenRecord): ApiTokenView {
  return {
    id: t.id, name: t.name, role: t.role, deviceId: t.deviceId, createdAt: t.createdAt, createdBy: t.createdBy,
    expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt, revokedAt: t.revokedAt,
  };
}

const CreatedTokenView = Type.Object({
  token: ApiTokenView,
  secret: Type.String({ description: 'the bearer token itself; shown this once, keep it safe' }),
}, { title: 'CreatedApiToken' });
const TokenList = Type.Object({ tokens: Type.Array(ApiTokenView), next: Next }, { title: 'ApiTokenList' });

const CreateTokenBody = StrictObject({
  name: Type.String({ minLength: 1, maxLength: 128, description: 'who or what holds it' }),
  role: StringEnum(TOKEN_ROLES, { description: 'admin: everything; operator: models, builds, rollouts; viewer: read only; device: one device\'s own resources' }),
  deviceId: Type.Optional(Id),
  ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: MAX_TOKEN_TTL_SEC, description: `lifetime in seconds (default ${DEFAULT_TOKEN_TTL_SEC / 86400} days)` })),
});
const ListQuery = StrictObject({
  ...PageQuery,
  role: Type.Optional(StringEnum(TOKEN_ROLES)),
  revoked: Type.Optional(Type.Boolean({ description: 'include revoked tokens (default false)' })),
});

export const tokenRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { tokens } = deps;

  app.post('/tokens', {
    config: { access: Access.admin, errors: ['DEVICE_NOT_FOUND'] },
    schema: { summary: 'Create an API token with a role; the answer holds its secret, shown this once', tags: ['access'], body: CreateTokenBody, response: { 201: CreatedTokenView } },
  }, async (req, reply) => {
    const { name, role, deviceId, ttlSec } = req.body;
    const { token, secret } = tokens.create({ name, role, ...(deviceId ? { deviceId } : {}), ttlSec: ttlSec ?? DEFAULT_TOKEN_TTL_SEC, createdBy: req.caller?.tokenId ?? null });
    return reply.status(201).send({ token: apiTokenView(token), secret });
  });

  app.get('/tokens', {
    config: { access: Access.admin, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List API tokens, oldest first (never their secrets)', tags: ['access'], querystring: ListQuery, response: { 200: TokenList } },
  }, async (req) => {
    const page = tokens.list({ ...(req.query.role ? { role: req.query.role } : {}), includeRevoked: req.query.revoked === true }, pageRequest(req.query));
    return { tokens: page.items.map(apiTokenView), next: encodeCursor(page.next) };
  });

  app.delete('/tokens/:id', {
    config: { access: Access.admin, errors: ['TOKEN_NOT_FOUND', 'LAST_ADMIN_TOKEN'] },
    schema: { summary: 'Revoke an API token: it stops working at once', tags: ['access'], params: IdParams, response: { 204: Type.Null({ description: 'revoked' }) } },
  }, async (req, reply) => {
    tokens.revoke(req.params.id);
    return reply.status(204).send(null);
  });
};
