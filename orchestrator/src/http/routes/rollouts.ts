import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { Store } from '../../db/store.js';
import { requireAdmin, type AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const CreateRollout = Type.Object({
  buildId: Type.String({ minLength: 1 }),
  target: Type.Object({
    deviceIds: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    tags: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    profiles: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
  }),
});
const IdParams = Type.Object({ id: Type.String() });

export function rolloutView(store: Store, id: string) {
  const r = store.getRollout(id);
  if (!r) throw new HttpError(404, 'ROLLOUT_NOT_FOUND', `rollout ${id} not found`);
  const actions = store.listActions(id);
  const counts: Record<string, number> = {};
  for (const a of actions) counts[a.state] = (counts[a.state] ?? 0) + 1;
  return {
    id: r.id, buildId: r.buildId, status: r.status, target: r.target, createdAt: r.createdAt, finishedAt: r.finishedAt, counts,
    groups: [...new Set(actions.map((a) => a.groupPosition))].map((position) => ({ position })),
    devices: actions.map((a) => ({
      deviceId: a.deviceId, group: a.groupPosition, bundleId: a.bundleId, state: a.state, updatedAt: a.updatedAt,
      ...(a.result ? { result: a.result } : {}), ...(a.code ? { code: a.code } : {}), ...(a.reason ? { reason: a.reason } : {}),
    })),
  };
}

export function registerRolloutRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.post<{ Body: Static<typeof CreateRollout> }>('/v1/rollouts', { schema: { body: CreateRollout } }, async (req, reply) => {
    requireAdmin(req);
    const r = await deps.rollouts.create(req.body.buildId, req.body.target);
    return reply.status(201).send({ rollout: rolloutView(deps.store, r.id) });
  });

  app.get('/v1/rollouts', async (req) => {
    requireAdmin(req);
    return { rollouts: deps.store.listRollouts().map((r) => ({ id: r.id, buildId: r.buildId, status: r.status, createdAt: r.createdAt, finishedAt: r.finishedAt })) };
  });

  app.get<{ Params: Static<typeof IdParams> }>('/v1/rollouts/:id', { schema: { params: IdParams } }, async (req) => {
    requireAdmin(req);
    return { rollout: rolloutView(deps.store, req.params.id) };
  });
}
