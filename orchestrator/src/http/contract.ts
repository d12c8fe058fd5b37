import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify';
import { ERROR_CATALOGUE, type ErrorCode } from '@edgepack/protocol';
import type { Audience } from './access.js';
import { ErrorResponseSchema, StrictObject } from './schemas.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The catalogue codes this route's own logic raises (not-found, conflicts, …). The common
     * ones (validation, authentication, internal) are added for every route; together they are
     * the route's documented error responses.
     */
    errors?: readonly ErrorCode[];
  }
}

/** Query strings refuse what they do not name, like bodies: a route without query parameters takes none. */
const NoQuery = StrictObject({});

/** The codes every route can answer with, given what it takes and who may call it. */
export function commonErrors(method: string, access: readonly Audience[], hasBody: boolean): ErrorCode[] {
  const codes: ErrorCode[] = ['VALIDATION_FAILED', 'INTERNAL_ERROR', 'QUERY_TOO_LONG'];
  // Authenticated routes also answer the token table's refusals and the per-token and failed-authentication limits.
  if (!access.includes('public')) codes.push('UNAUTHORIZED', 'FORBIDDEN', 'TOKEN_EXPIRED', 'TOKEN_REVOKED', 'RATE_LIMITED');
  if (hasBody) codes.push('BODY_INVALID', 'BODY_TOO_DEEP', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE');
  if (method !== 'GET' && method !== 'HEAD') codes.push('STORAGE_FULL');
  return codes;
}

/** Every route's error codes, grouped by the status the catalogue gives them. */
export function errorResponses(codes: readonly ErrorCode[]): Record<string, unknown> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const { status } = ERROR_CATALOGUE[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries([...byStatus].sort(([a], [b]) => a - b).map(([status, list]) => [
    String(status),
    { ...ErrorResponseSchema, 'x-response-description': list.map((c) => `${c}: ${ERROR_CATALOGUE[c].meaning}`).join('; ') },
  ]));
}

/** A 2xx answer without a description of its own reads as its status line ("202 Accepted"). */
function successDescriptions(responses: Record<string, Record<string, unknown>> | undefined): Record<string, unknown> {
  return Object.fromEntries(Object.entries(responses ?? {}).map(([status, s]) => [
    status,
    s.description || s['x-response-description'] ? s : { ...s, 'x-response-description': `${status} ${STATUS_CODES[Number(status)] ?? ''}`.trim() },
  ]));
}

/** How a route's access list reads as OpenAPI security requirements. */
function security(access: readonly Audience[]): Record<string, string[]>[] {
  if (access.includes('public')) return [];
  return access.includes('device') ? [{ bearerToken: [] }, { deviceCredential: [] }] : [{ bearerToken: [] }];
}

/**
 * What the contract adds to every route as it is registered: a strict empty querystring where
 * the route names none, its error responses (from the catalogue), and its access and security
 * for the OpenAPI document. Registered before any route, after access control has settled
 * `config.access`.
 */
export function installRouteContract(app: FastifyInstance): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    if ((route.schema as { hide?: boolean } | undefined)?.hide) return; // the docs UI and the document itself: not API routes
    const access = route.config?.access ?? [];
    const schema: FastifySchema & Record<string, unknown> = { ...(route.schema ?? {}) };
    const method = String(route.method);
    if (!schema.querystring) schema.querystring = NoQuery;
    const hasBody = schema.body !== undefined || Array.isArray(schema.consumes);
    const codes = [...commonErrors(method, access, hasBody), ...(route.config?.errors ?? [])];
    schema.response = { ...errorResponses(codes), ...successDescriptions(schema.response as Record<string, Record<string, unknown>> | undefined) };
    schema.security = security(access);
    schema['x-access'] = [...access];
    route.schema = schema;
  });
}
