import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { BuildOptions, BuildRecord } from '../../records.js';
import { newId } from '../../ids.js';
import { requireAdmin, type AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const CreateBuild = Type.Object({
  modelId: Type.String({ minLength: 1 }),
  profiles: Type.Optional(Type.Array(Type.String(), { minItems: 1, maxItems: 64 })),
  /** Tightens (or loosens) the on-device acceptance check for this build's bundles. */
  acceptance: Type.Optional(Type.Object({ p95LatencyMs: Type.Optional(Type.Number({ exclusiveMinimum: 0 })) }, { additionalProperties: false })),
  /** Dataset ids; each defaults to the model's latest dataset of that kind. */
  datasets: Type.Optional(Type.Object({
    calibration: Type.Optional(Type.String()), evaluation: Type.Optional(Type.String()), labels: Type.Optional(Type.String()),
  }, { additionalProperties: false })),
});
const IdParams = Type.Object({ id: Type.String() });

export function buildView(b: BuildRecord) {
  return {
    id: b.id, modelId: b.modelId, options: b.options, status: b.status, progress: b.progress, error: b.error, createdAt: b.createdAt, finishedAt: b.finishedAt,
    artifacts: b.artifacts.map((a) => ({
      profile: a.profile, status: a.status, format: a.format, precision: a.precision, bundleId: a.bundleId, sizeBytes: a.sizeBytes,
      ...(a.reason ? { reason: a.reason } : {}), ...a.details,
    })),
  };
}

export function registerBuildRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, now } = deps;

  app.post<{ Body: Static<typeof CreateBuild> }>('/v1/builds', { schema: { body: CreateBuild } }, async (req, reply) => {
    requireAdmin(req);
    const model = store.getModel(req.body.modelId);
    if (!model) throw new HttpError(404, 'MODEL_NOT_FOUND', `model ${req.body.modelId} not found`);
    const known = deps.profiles.map((p) => p.id);
    const profiles = req.body.profiles ? [...new Set(req.body.profiles)] : known;
    const unknown = profiles.filter((p) => !known.includes(p));
    if (unknown.length) throw new HttpError(400, 'PROFILE_NOT_FOUND', `unknown profiles ${unknown.join(', ')}; known: ${known.join(', ')}`);
    const datasets: NonNullable<BuildOptions['datasets']> = {};
    for (const kind of ['calibration', 'evaluation', 'labels'] as const) {
      const given = req.body.datasets?.[kind];
      const d = given ? store.getDataset(given) : store.latestDataset(model.id, kind);
      if (given && (!d || d.modelId !== model.id || d.kind !== kind)) throw new HttpError(400, 'DATASET_NOT_FOUND', `${kind} dataset ${given} not found for model ${model.id}`);
      if (d) datasets[kind] = d.id;
    }
    if (datasets.labels && !datasets.evaluation) throw new HttpError(400, 'DATASET_MISMATCH', 'labels need evaluation data to go with them');
    if (datasets.labels && datasets.evaluation) {
      const n = store.getDataset(datasets.evaluation)!.shape[0];
      const m = store.getDataset(datasets.labels)!.shape[0];
      if (n !== m) throw new HttpError(400, 'DATASET_MISMATCH', `evaluation data has ${n} samples but the labels have ${m}`);
    }
    const id = newId('bld');
    const options: BuildOptions = { ...(req.body.acceptance ? { acceptance: req.body.acceptance } : {}), ...(Object.keys(datasets).length ? { datasets } : {}) };
    store.insertBuild({ id, modelId: model.id, profiles, options, createdAt: now().toISOString() });
    deps.builds.enqueue(id);
    return reply.status(201).send({ build: buildView(store.getBuild(id)!) });
  });

  app.get<{ Params: Static<typeof IdParams> }>('/v1/builds/:id', { schema: { params: IdParams } }, async (req) => {
    requireAdmin(req);
    const b = store.getBuild(req.params.id);
    if (!b) throw new HttpError(404, 'BUILD_NOT_FOUND', `build ${req.params.id} not found`);
    return { build: buildView(b) };
  });
}
