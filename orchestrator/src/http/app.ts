import Fastify, { type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { createAuthenticator, installAccessControl } from './access.js';
import type { AppDeps } from './app-deps.js';
import { installRouteContract } from './contract.js';
import { clientErrorHandler, frameworkErrors, installErrorHandling, schemaErrorFormatter } from './errors.js';
import { registerOpenApi } from './openapi.js';
import { createValidatorCompiler } from './validation.js';
import { buildRoutes } from './routes/builds.js';
import { bundleRoutes } from './routes/bundles.js';
import { datasetRoutes } from './routes/datasets.js';
import { deviceRoutes } from './routes/devices.js';
import { enrollmentRoutes } from './routes/enrollment.js';
import { healthRoutes } from './routes/health.js';
import { modelRoutes } from './routes/models.js';
import { rolloutRoutes } from './routes/rollouts.js';

export type { AppDeps } from './app-deps.js';

/** The route plugins, one per resource, each mounted under /v1. A new resource is one more line. */
const V1_PLUGINS = [healthRoutes, enrollmentRoutes, deviceRoutes, modelRoutes, datasetRoutes, buildRoutes, rolloutRoutes, bundleRoutes];

/**
 * Builds the Fastify app without listening, so tests drive it with inject() and the server
 * adapter decides where it listens.
 */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    logger: deps.logger ?? false,
    bodyLimit: 1 << 20,
    schemaErrorFormatter,
    frameworkErrors,
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Unknown fields are refused (every object schema says additionalProperties: false), never
  // silently removed as Fastify's default validator would; bodies are not type-coerced.
  app.setValidatorCompiler(createValidatorCompiler());
  installErrorHandling(app);
  installAccessControl(app, createAuthenticator(deps));
  installRouteContract(app);

  // Model and dataset uploads arrive as raw bytes; hand the stream itself to the route so it goes
  // straight to the blob store with the size limit enforced as it streams.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  registerOpenApi(app);
  for (const plugin of V1_PLUGINS) void app.register(plugin, { prefix: '/v1', deps });
  return app;
}
