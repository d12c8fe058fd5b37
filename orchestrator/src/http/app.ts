import { randomBytes } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ApiTokens } from '../api-tokens.js';
import { AuditLog } from '../audit-log.js';
import { resolveLimits } from '../limits.js';
import { createAuthenticator, installAccessControl } from './access.js';
import type { AppDeps, ResolvedAppDeps } from './app-deps.js';
import { installAuditHook } from './audit-hook.js';
import { installRouteContract } from './contract.js';
import { clientErrorHandler, frameworkErrors, installErrorHandling, schemaErrorFormatter } from './errors.js';
import { registerOpenApi } from './openapi.js';
import { installRequestLimits } from './request-limits.js';
import { createValidatorCompiler } from './validation.js';
import { createLogger } from '../logger.js';
import { buildRoutes } from './routes/builds.js';
import { bundleRoutes } from './routes/bundles.js';
import { datasetRoutes } from './routes/datasets.js';
import { deviceRoutes } from './routes/devices.js';
import { enrollmentRoutes } from './routes/enrollment.js';
import { healthRoutes } from './routes/health.js';
import { inferenceHealthRoutes } from './routes/inference-health.js';
import { metricsRoutes } from './routes/metrics.js';
import { modelRoutes } from './routes/models.js';
import { rolloutRoutes } from './routes/rollouts.js';
import { auditRoutes } from './routes/audit.js';
import { tokenRoutes } from './routes/tokens.js';

export type { AppDeps } from './app-deps.js';

/** The route plugins, one per resource, each mounted under /v1. A new resource is one more line. */
const V1_PLUGINS = [healthRoutes, enrollmentRoutes, deviceRoutes, modelRoutes, datasetRoutes, buildRoutes, rolloutRoutes, bundleRoutes, tokenRoutes, auditRoutes, inferenceHealthRoutes];

/** What a client may send as its own request id. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const newRequestId = () => `req_${randomBytes(8).toString('hex')}`;

/**
 * Builds the Fastify app without listening, so tests drive it with inject() and the server
 * adapter decides where it listens.
 */
export function buildApp(given: AppDeps, server: { https?: { key: string; cert: string } } = {}): FastifyInstance {
  const log = given.logger ?? createLogger('silent');
  const deps: ResolvedAppDeps = {
    ...given,
    tokens: given.tokens ?? new ApiTokens({ store: given.store, now: given.now }),
    audit: given.audit ?? new AuditLog({ db: given.store.db, log, now: given.now }),
    limits: resolveLimits({ http: given.limits ?? {} }).http,
  };
  // The admin-token file's secret is one row of the token table (role admin, no expiry).
  deps.tokens.registerBootstrapAdmin(deps.adminToken);
  const app = Fastify({
    // HTTPS when given a certificate (server.ts); tests that inject() build it without.
    ...(server.https ? { https: server.https } : {}),
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: 1 << 20,
    // A caller's own X-Request-Id is kept (so a client or proxy can correlate), if it is a
    // plain token; otherwise one is made. Every response carries it back in the same header.
    requestIdHeader: 'x-request-id',
    genReqId: newRequestId,
    // One line per request (the onResponse hook below) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    schemaErrorFormatter,
    frameworkErrors,
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Unknown fields are refused (every object schema says additionalProperties: false), never
  // silently removed as Fastify's default validator would; bodies are not type-coerced.
  app.setValidatorCompiler(createValidatorCompiler());
  installErrorHandling(app);
  // Before access control, so a 401 carries its request id too.
  app.addHook('onRequest', async (req, reply) => {
    if (!REQUEST_ID.test(req.id)) (req as { id: string }).id = newRequestId();
    reply.header('x-request-id', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    // Refusals by a rate limit come by the thousand; the limits log one summary line per interval for them.
    if (reply.statusCode === 429) return;
    req.log.info({ method: req.method, url: req.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });
  // Before access control: the limits' own hooks (query length) and the guard access consults.
  const guard = installRequestLimits(app, deps.limits, log, deps.now);
  installAccessControl(app, createAuthenticator(deps), guard);
  installRouteContract(app);
  installAuditHook(app, deps.audit);

  // Model and dataset uploads arrive as raw bytes; hand the stream itself to the route so it goes
  // straight to the blob store with the size limit enforced as it streams.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  registerOpenApi(app);
  for (const plugin of V1_PLUGINS) void app.register(plugin, { prefix: '/v1', deps });
  // Prometheus scrapes /metrics by convention, outside the versioned API.
  void app.register(metricsRoutes, { deps });
  return app;
}
