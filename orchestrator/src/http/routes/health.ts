import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';

const HealthView = Type.Object({ status: Type.Literal('ok') }, { title: 'Health' });

export const healthRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app) => {
  app.get('/health', {
    config: { access: Access.public },
    schema: { summary: 'Liveness: answers while the orchestrator serves requests', tags: ['health'], response: { 200: HealthView } },
  }, async () => ({ status: 'ok' as const }));
};
