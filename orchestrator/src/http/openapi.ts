import swagger, { type FastifyDynamicSwaggerOptions, type SwaggerTransformObject } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { Access } from './access.js';

const NAMED = /^[A-Z][A-Za-z0-9]*$/;

/**
 * Moves every schema that has a title (the view types, the error shape) into
 * components/schemas and refers to it by $ref, so each view type is named once in the document
 * and clients generated from it get one type per view. Two different schemas under one title
 * are a bug in the route definitions and fail the document.
 */
export function hoistNamedSchemas<T extends { paths?: unknown; components?: { schemas?: Record<string, unknown> } }>(doc: T): T {
  const schemas: Record<string, unknown> = { ...(doc.components?.schemas ?? {}) };
  const seen = new Map<string, string>();
  const visit = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(visit);
    if (typeof node !== 'object' || node === null) return node;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = visit(v);
    const title = out.title;
    if (typeof title !== 'string' || !NAMED.test(title) || !('type' in out || 'anyOf' in out)) return out;
    const json = JSON.stringify(out);
    const before = seen.get(title);
    if (before !== undefined && before !== json) throw new Error(`the OpenAPI document has two different schemas named ${title}`);
    seen.set(title, json);
    schemas[title] = out;
    return { $ref: `#/components/schemas/${title}` };
  };
  const paths = visit(doc.paths);
  return { ...doc, paths, components: { ...doc.components, schemas } };
}

/**
 * A model or dataset upload takes the raw file (a stream straight to the blob store), which no
 * body schema can validate; the document still says what the body is.
 */
function documentRawBodies(schema: FastifySchema): FastifySchema {
  const consumes = (schema as { consumes?: string[] }).consumes;
  if (schema.body || !consumes?.includes('application/octet-stream')) return schema;
  return { ...schema, body: { content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary', description: 'the raw file' } } } } };
}

type Document = ReturnType<SwaggerTransformObject>;

/**
 * OpenAPI 3.1 at GET /openapi.json, generated from the route schemas (@fastify/swagger), and
 * Swagger UI at /docs, served from the orchestrator's own files (no CDN, a CSP of 'self').
 * Register before the routes, so the document sees every one of them.
 */
export function registerOpenApi(app: FastifyInstance): void {
  const options: FastifyDynamicSwaggerOptions = {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'edgepack orchestrator API',
        version: '1.0.0',
        description: 'Builds one artifact per device hardware profile, signs it as a bundle and rolls it out to devices. '
          + 'Every error is {"error":{"code","message"}} with a code from the error catalogue; lists are keyset pages (limit, cursor → next).',
      },
      tags: [
        { name: 'fleet', description: 'enrollment and devices' }, { name: 'models', description: 'models and their datasets' },
        { name: 'builds', description: 'one signed bundle per profile' }, { name: 'rollouts', description: 'bundles to devices' },
        { name: 'bundles', description: 'signed manifests and files' }, { name: 'access', description: 'API tokens and the audit log' },
        { name: 'health', description: 'liveness' },
      ],
      components: {
        securitySchemes: {
          bearerToken: { type: 'http', scheme: 'bearer', description: 'an API token of a role (POST /v1/tokens); the first start writes an admin token to <data-dir>/admin-token' },
          deviceCredential: {
            type: 'apiKey', in: 'header', name: 'Authorization',
            description: '`Device <deviceId>:<timestamp>.<signature>`: an ed25519 signature by the device key, minutes old at most',
          },
        },
      },
    },
    transform: ({ schema, url }) => ({ schema: documentRawBodies(schema), url }),
    transformObject: (documents) => ('openapiObject' in documents ? hoistNamedSchemas(documents.openapiObject as { paths?: unknown }) : documents.swaggerObject) as Document,
  };
  void app.register(swagger, options);
  void app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'self'; base-uri 'self'",
    theme: { title: 'edgepack API' },
    uiConfig: { deepLinking: true },
  });
  app.get('/openapi.json', { config: { access: Access.public }, schema: { hide: true } }, async () => app.swagger());
}
