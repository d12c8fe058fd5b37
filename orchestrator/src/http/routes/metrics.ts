import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';

const CONTENT_TYPE = 'text/plain; version=0.0.4';

const PrometheusText = Type.String({
  title: 'PrometheusText',
  description: 'Prometheus text exposition format 0.0.4: edgepack_devices{status,profile}, edgepack_inference_requests_total{outcome,bundle,profile}, '
    + 'edgepack_inference_duration_seconds{bundle,profile} (a histogram whose le bounds are protocol\'s TELEMETRY_BUCKET_BOUNDS_MS ÷ 1000, '
    + 'exact merges of the devices\' window histograms), edgepack_telemetry_lag_seconds{profile}, edgepack_telemetry_dropped_windows_total{reason,profile}, '
    + 'edgepack_telemetry_windows_total{result}, edgepack_telemetry_commit_seconds, and the process\'s own metrics (process_*, nodejs_*). '
    + 'No per-device series: those are in GET /v1/devices/{id}/health.',
});

/**
 * GET /metrics, outside /v1 (Prometheus' conventional path), for a scraper holding a viewer
 * token: fleet figures are not public, and Prometheus sends a bearer token
 * (`authorization.credentials_file`) as easily as none.
 */
export const metricsRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  app.get('/metrics', {
    config: { access: Access.read },
    schema: {
      summary: 'Prometheus metrics: devices, inference requests and latency by bundle and profile, telemetry lag and loss, the process',
      tags: ['health'],
      response: { 200: { title: 'PrometheusText', description: 'the exposition', content: { [CONTENT_TYPE]: { schema: PrometheusText } } } },
    },
  }, async (_req, reply) => {
    const text = await deps.metrics.text();
    return reply.type(deps.metrics.contentType).send(text);
  });
};
