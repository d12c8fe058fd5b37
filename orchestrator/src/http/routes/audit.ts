import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import type { AuditRecord } from '../../audit-log.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { Id, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, encodeCursor, pageRequest } from '../schemas.js';

export const AuditEntryView = Type.Object({
  id: Type.String(),
  at: Timestamp,
  actor: Type.Object({
    kind: StringEnum(['token', 'device', 'anonymous'], { description: 'an API token (of any role, device tokens too), a device by its own credential, or no accepted credential' }),
    id: Nullable(Type.String({ description: 'the token id, or the device id' })),
    name: Nullable(Type.String({ description: 'the token\'s name' })),
    role: Nullable(Type.String({ description: 'the token\'s role' })),
  }),
  method: Type.String(),
  route: Type.String({ description: 'the route pattern, e.g. /v1/rollouts/:id' }),
  targetId: Nullable(Type.String({ description: 'the resource acted on: the path id, or the id of what was created' })),
  status: Type.Integer({ description: 'the HTTP status answered' }),
  code: Nullable(Type.String({ description: 'the error catalogue code answered, if the call failed' })),
  requestId: Type.String(),
  ip: Nullable(Type.String()),
}, { title: 'AuditEntry', description: 'one mutating call: who, what, on what, when, and the result' });

export function auditEntryView(a: AuditRecord): Static<typeof AuditEntryView> {
  return {
    id: a.id, at: a.at, actor: { kind: a.actor.kind, id: a.actor.id, name: a.actor.name, role: a.actor.role },
    method: a.method, route: a.route, targetId: a.targetId, status: a.status, code: a.code, requestId: a.requestId, ip: a.ip,
  };
}

const AuditList = Type.Object({ entries: Type.Array(AuditEntryView), next: Next }, { title: 'AuditList' });
const ListQuery = StrictObject({
  ...PageQuery,
  actor: Type.Optional(Id),
  target: Type.Optional(Id),
  since: Type.Optional(Type.String({ format: 'date-time', description: 'entries at or after this time' })),
  until: Type.Optional(Type.String({ format: 'date-time', description: 'entries before this time' })),
});

/** Timestamps compare as text in the database; the stored form is toISOString's, so the filter must be too. */
const iso = (t: string | undefined) => (t === undefined ? undefined : new Date(t).toISOString());

export const auditRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  app.get('/audit', {
    config: { access: Access.admin, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'The audit log of mutating calls, oldest first; filter by actor, target and time', tags: ['access'], querystring: ListQuery, response: { 200: AuditList } },
  }, async (req) => {
    const { actor, target } = req.query;
    const since = iso(req.query.since);
    const until = iso(req.query.until);
    const page = deps.audit.page({ ...(actor ? { actor } : {}), ...(target ? { target } : {}), ...(since ? { since } : {}), ...(until ? { until } : {}) }, pageRequest(req.query));
    return { entries: page.items.map(auditEntryView), next: encodeCursor(page.next) };
  });
};
