import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError, PrecisionSchema, type Precision } from '@edgepack/protocol';
import type { ArtifactRecord, BuildCandidateRecord, BuildOptions, BuildRecord } from '../../records.js';
import type { StoredChoice } from '../../db/rollout-store.js';
import { newId } from '../../ids.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { Id, IdParams, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, encodeCursor, named, pageRequest } from '../schemas.js';
import { VariantChoiceView, variantChoiceView } from '../variant-views.js';

const BUILD_STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;
const ARTIFACT_STATUSES = ['pending', 'built', 'skipped', 'failed'] as const;
const FORMATS = ['onnx', 'tflite'] as const;
const SELECTIONS = ['host', 'device'] as const;

const num = Type.Optional(Type.Number());
/** What evaluating a candidate against the fp32 reference measured; a figure not measured is absent. */
const CandidateMetricsView = Type.Object({
  sizeBytes: num, sizeRatio: num, estimatedRamBytes: num, samples: num,
  data: Type.Optional(StringEnum(['evaluation', 'calibration', 'synthetic'], { description: 'where the evaluation inputs came from' })),
  top1Agreement: num, referenceTop1: num, candidateTop1: num, top1DropPoints: num, maxAbsError: num, cosineMin: num,
  latencyRatio: Type.Optional(Type.Number({ description: 'candidate p50 / fp32 p50 on the build host, single-threaded, measured side by side' })),
}, { title: 'CandidateMetrics' });
type MetricsView = Static<typeof CandidateMetricsView>;

const DecisionView = Type.Object({
  format: StringEnum(FORMATS),
  precision: PrecisionSchema,
  accepted: Type.Boolean(),
  reason: Type.String(),
  metrics: Type.Optional(CandidateMetricsView),
  ms: Type.Optional(Type.Number({ description: 'time spent on this candidate' })),
}, { title: 'CandidateDecision', description: 'one candidate variant tried for a profile, and why it was taken or refused' });
type DecisionView = Static<typeof DecisionView>;

/** A candidate a device build kept: a signed bundle of its own, with the host's figures. */
const BuildCandidateView = Type.Object({
  bundleId: Type.String(),
  format: StringEnum(FORMATS),
  precision: PrecisionSchema,
  accepted: Type.Boolean({ description: 'met the host-side budgets (accuracy, size, RAM): always true for a kept candidate' }),
  reason: Type.String(),
  hostPick: Type.Boolean({ description: 'what host selection would have chosen' }),
  reference: Type.Boolean({ description: 'the trial\'s reference (fp32): always a candidate, wins ties' }),
  metrics: CandidateMetricsView,
}, { title: 'BuildCandidate' });

const ArtifactView = Type.Object({
  profile: Type.String(),
  status: StringEnum(ARTIFACT_STATUSES),
  format: Nullable(StringEnum(FORMATS)),
  precision: Nullable(PrecisionSchema),
  bundleId: Nullable(Type.String()),
  sizeBytes: Nullable(Type.Integer()),
  reason: Nullable(Type.String({ description: 'why nothing was built, when nothing was' })),
  layout: Nullable(Type.String({ description: 'tensor layout of the built model\'s image inputs' })),
  decisions: Type.Array(DecisionView),
  candidates: Type.Array(BuildCandidateView, { description: 'a device build: every candidate kept as a bundle of its own (empty for a host build)' }),
  hostPick: Nullable(Type.Object({ bundleId: Type.String(), format: StringEnum(FORMATS), precision: PrecisionSchema }, { description: 'what the build host chose (for a host build, the artifact itself)' })),
  devicePick: Nullable(named('VariantChoice', VariantChoiceView, 'the devices\' pick, once a rollout of this build chose (the newest), with its figures')),
}, { title: 'Artifact', description: 'what one build made for one firmware profile' });

const BuildOptionsView = Type.Object({
  acceptance: Type.Optional(Type.Object({ p95LatencyMs: Type.Optional(Type.Number()) })),
  datasets: Type.Optional(Type.Object({ calibration: Type.Optional(Type.String()), evaluation: Type.Optional(Type.String()), labels: Type.Optional(Type.String()) })),
}, { title: 'BuildOptions' });

const ProgressView = Type.Object({ step: Type.String(), done: Type.Integer(), total: Type.Integer() }, { title: 'BuildProgress' });

const buildFields = {
  id: Type.String(),
  modelId: Type.String(),
  status: StringEnum(BUILD_STATUSES),
  profiles: Type.Array(Type.String()),
  options: BuildOptionsView,
  progress: Nullable(ProgressView),
  error: Nullable(Type.String()),
  createdAt: Timestamp,
  finishedAt: Nullable(Timestamp),
  selection: StringEnum(SELECTIONS, { description: 'host: the build host picks each profile\'s variant; device: every candidate is kept and a rollout\'s canary devices measure them to choose' }),
};
export const BuildSummaryView = Type.Object(buildFields, { title: 'BuildSummary' });
export const BuildView = Type.Object({ ...buildFields, artifacts: Type.Array(ArtifactView) }, { title: 'Build' });
export type BuildView = Static<typeof BuildView>;

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const PRECISIONS: readonly unknown[] = PrecisionSchema.anyOf.map((s) => s.const);

function metricsView(m: Record<string, unknown>): MetricsView {
  const out: MetricsView = {};
  for (const k of ['sizeBytes', 'sizeRatio', 'estimatedRamBytes', 'samples', 'top1Agreement', 'referenceTop1', 'candidateTop1', 'top1DropPoints', 'maxAbsError', 'cosineMin', 'latencyRatio'] as const) {
    if (isNum(m[k])) out[k] = m[k];
  }
  if (m.data === 'evaluation' || m.data === 'calibration' || m.data === 'synthetic') out.data = m.data;
  return out;
}

/** Decisions are stored as JSON in the artifact's details; each field is picked and checked. */
function decisionsView(stored: unknown): DecisionView[] {
  if (!Array.isArray(stored)) return [];
  return stored.flatMap((d: Record<string, unknown>) => {
    if (typeof d !== 'object' || d === null || (d.format !== 'onnx' && d.format !== 'tflite') || !PRECISIONS.includes(d.precision)) return [];
    return [{
      format: d.format, precision: d.precision as Precision, accepted: d.accepted === true, reason: typeof d.reason === 'string' ? d.reason : '',
      ...(typeof d.metrics === 'object' && d.metrics !== null ? { metrics: metricsView(d.metrics as Record<string, unknown>) } : {}),
      ...(isNum(d.ms) ? { ms: d.ms } : {}),
    }];
  });
}

const isFormat = (x: unknown): x is 'onnx' | 'tflite' => x === 'onnx' || x === 'tflite';

function candidateView(c: BuildCandidateRecord): Static<typeof BuildCandidateView>[] {
  if (!isFormat(c.format) || !PRECISIONS.includes(c.precision)) return [];
  return [{
    bundleId: c.bundleId, format: c.format, precision: c.precision as Precision, accepted: true, reason: c.reason, hostPick: c.hostPick,
    reference: c.reference, metrics: metricsView(c.metrics),
  }];
}

/** What one build's rollouts chose and kept: per profile, its candidates and the newest choice. */
export interface BuildVariants {
  candidates: BuildCandidateRecord[];
  choices: StoredChoice[];
}

function artifactView(a: ArtifactRecord, variants?: BuildVariants): Static<typeof ArtifactView> {
  const cands = (variants?.candidates ?? []).filter((c) => c.profile === a.profile);
  const latest = (variants?.choices ?? []).filter((c) => c.profile === a.profile).at(-1);
  const host = cands.length ? cands.find((c) => c.hostPick) : undefined;
  const hostPick = cands.length
    ? (host && isFormat(host.format) && PRECISIONS.includes(host.precision) ? { bundleId: host.bundleId, format: host.format, precision: host.precision as Precision } : null)
    : a.status === 'built' && a.bundleId && isFormat(a.format) && PRECISIONS.includes(a.precision) ? { bundleId: a.bundleId, format: a.format, precision: a.precision as Precision } : null;
  return {
    profile: a.profile, status: a.status,
    format: a.format === 'onnx' || a.format === 'tflite' ? a.format : null,
    precision: PRECISIONS.includes(a.precision) ? (a.precision as Precision) : null,
    bundleId: a.bundleId, sizeBytes: a.sizeBytes, reason: a.reason,
    layout: typeof a.details.layout === 'string' ? a.details.layout : null,
    decisions: decisionsView(a.details.decisions),
    candidates: cands.flatMap(candidateView),
    hostPick,
    devicePick: latest ? variantChoiceView(latest) : null,
  };
}

function optionsView(o: BuildOptions): Static<typeof BuildOptionsView> {
  const out: Static<typeof BuildOptionsView> = {};
  if (o.acceptance) out.acceptance = o.acceptance.p95LatencyMs !== undefined ? { p95LatencyMs: o.acceptance.p95LatencyMs } : {};
  if (o.datasets) {
    const { calibration, evaluation, labels } = o.datasets;
    out.datasets = { ...(calibration ? { calibration } : {}), ...(evaluation ? { evaluation } : {}), ...(labels ? { labels } : {}) };
  }
  return out;
}

export function buildSummaryView(b: BuildRecord): Static<typeof BuildSummaryView> {
  return {
    id: b.id, modelId: b.modelId, status: b.status, profiles: [...b.profiles], options: optionsView(b.options),
    progress: b.progress ? { step: b.progress.step, done: b.progress.done, total: b.progress.total } : null,
    error: b.error, createdAt: b.createdAt, finishedAt: b.finishedAt, selection: b.selection,
  };
}

export function buildView(b: BuildRecord, variants?: BuildVariants): BuildView {
  return { ...buildSummaryView(b), artifacts: b.artifacts.map((a) => artifactView(a, variants)) };
}

const BuildResponse = Type.Object({ build: BuildView }, { title: 'BuildResponse' });
const BuildList = Type.Object({ builds: Type.Array(BuildSummaryView), next: Next }, { title: 'BuildList' });

const CreateBuildBody = StrictObject({
  modelId: Id,
  profiles: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 64, description: 'default: every profile' })),
  /** Tightens (or loosens) the on-device acceptance check for this build's bundles. */
  acceptance: Type.Optional(StrictObject({ p95LatencyMs: Type.Optional(Type.Number({ exclusiveMinimum: 0 })) })),
  /** Dataset ids; each defaults to the model's latest dataset of that kind. */
  datasets: Type.Optional(StrictObject({ calibration: Type.Optional(Id), evaluation: Type.Optional(Id), labels: Type.Optional(Id) }, {
    description: 'dataset ids; each defaults to the model\'s latest dataset of that kind',
  })),
  selection: Type.Optional(StringEnum(SELECTIONS, {
    default: 'host',
    description: 'host (default): one variant per profile, chosen on the build host; device: every candidate that meets the accuracy, size and RAM budgets is kept as a bundle, and a rollout\'s canary devices trial them to choose',
  })),
});
const ListQuery = StrictObject({ ...PageQuery, modelId: Type.Optional(Id), status: Type.Optional(StringEnum(BUILD_STATUSES)) });

export const buildRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store, now } = deps;

  app.post('/builds', {
    config: { access: Access.operate, errors: ['MODEL_NOT_FOUND', 'PROFILE_NOT_FOUND', 'DATASET_NOT_FOUND', 'DATASET_MISMATCH'] },
    schema: {
      summary: 'Queue a build: one artifact per profile, each a signed bundle; poll the Location for progress',
      tags: ['builds'], body: CreateBuildBody,
      response: { 202: { ...BuildResponse, headers: { Location: Type.String({ description: 'the build\'s URL, to poll' }) } } },
    },
  }, async (req, reply) => {
    const model = store.getModel(req.body.modelId);
    if (!model) throw new EdgepackError('MODEL_NOT_FOUND', `model ${req.body.modelId} not found`);
    const known = deps.profiles.map((p) => p.id);
    const profiles = req.body.profiles ? [...new Set(req.body.profiles)] : known;
    const unknown = profiles.filter((p) => !known.includes(p));
    if (unknown.length) throw new EdgepackError('PROFILE_NOT_FOUND', `unknown profiles ${unknown.join(', ')}; known: ${known.join(', ')}`);
    const datasets: NonNullable<BuildOptions['datasets']> = {};
    for (const kind of ['calibration', 'evaluation', 'labels'] as const) {
      const given = req.body.datasets?.[kind];
      const d = given ? store.getDataset(given) : store.latestDataset(model.id, kind);
      if (given && (!d || d.modelId !== model.id || d.kind !== kind)) throw new EdgepackError('DATASET_NOT_FOUND', `${kind} dataset ${given} not found for model ${model.id}`);
      if (d) datasets[kind] = d.id;
    }
    if (datasets.labels && !datasets.evaluation) throw new EdgepackError('DATASET_MISMATCH', 'labels need evaluation data to go with them');
    if (datasets.labels && datasets.evaluation) {
      const n = store.getDataset(datasets.evaluation)!.shape[0];
      const m = store.getDataset(datasets.labels)!.shape[0];
      if (n !== m) throw new EdgepackError('DATASET_MISMATCH', `evaluation data has ${n} samples but the labels have ${m}`);
    }
    const id = newId('bld');
    const options: BuildOptions = { ...(req.body.acceptance ? { acceptance: req.body.acceptance } : {}), ...(Object.keys(datasets).length ? { datasets } : {}) };
    store.insertBuild({ id, modelId: model.id, profiles, options, createdAt: now().toISOString(), selection: req.body.selection ?? 'host' });
    deps.builds.enqueue(id);
    // Accepted, not done: the work runs in a worker; the build's own URL reports its progress.
    return reply.status(202).header('Location', `/v1/builds/${id}`).send({ build: buildView(store.getBuild(id)!) });
  });

  app.get('/builds', {
    config: { access: Access.read, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List builds, oldest first', tags: ['builds'], querystring: ListQuery, response: { 200: BuildList } },
  }, async (req) => {
    const { modelId, status } = req.query;
    const page = store.pageBuilds({ ...(modelId ? { modelId } : {}), ...(status ? { status } : {}) }, pageRequest(req.query));
    return { builds: page.items.map(buildSummaryView), next: encodeCursor(page.next) };
  });

  app.get('/builds/:id', {
    config: { access: Access.read, errors: ['BUILD_NOT_FOUND'] },
    schema: { summary: 'One build, with every artifact and the figures behind each choice', tags: ['builds'], params: IdParams, response: { 200: BuildResponse } },
  }, async (req) => {
    const b = store.getBuild(req.params.id);
    if (!b) throw new EdgepackError('BUILD_NOT_FOUND', `build ${req.params.id} not found`);
    return { build: buildView(b, deps.rollouts.variantsOfBuild(b.id)) };
  });
};
