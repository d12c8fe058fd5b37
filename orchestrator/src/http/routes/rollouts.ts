import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { DEVICE_STATES, DeviceStateSchema, EdgepackError } from '@edgepack/protocol';
import type { Store } from '../../db/store.js';
import type { ActionRecord, RolloutRecord, RolloutTarget } from '../../records.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import {
  BenchmarkResultView, Id, IdParams, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, benchmarkView, encodeCursor, pageRequest,
} from '../schemas.js';

// Every status a rollout can be in (records.ts RolloutStatus); 'failed' is the legacy one-wave outcome.
const ROLLOUT_STATUSES = ['scheduled', 'running', 'paused', 'succeeded', 'cancelled', 'rolling_back', 'rolled_back', 'failed'] as const;

const TargetView = Type.Object({
  deviceIds: Type.Optional(Type.Array(Type.String())),
  tags: Type.Optional(Type.Array(Type.String())),
  profiles: Type.Optional(Type.Array(Type.String())),
}, { title: 'RolloutTarget', description: 'which devices: all of the given criteria must hold; none given means every device' });

const RolloutDeviceView = Type.Object({
  deviceId: Type.String(),
  group: Type.Integer({ description: 'position of the rollout group (wave) the device is in' }),
  bundleId: Nullable(Type.String()),
  state: DeviceStateSchema,
  code: Nullable(Type.String({ description: 'error catalogue code of a failure' })),
  reason: Nullable(Type.String()),
  result: Nullable(BenchmarkResultView),
  updatedAt: Timestamp,
}, { title: 'RolloutDevice', description: 'one device\'s action in the rollout' });

/** How many devices are in each state; states no device is in are absent. */
const CountsView = Type.Object(Object.fromEntries(DEVICE_STATES.map((s) => [s, Type.Optional(Type.Integer({ minimum: 1 }))])), { title: 'RolloutCounts' });

const summaryFields = {
  id: Type.String(),
  buildId: Type.String(),
  status: StringEnum(ROLLOUT_STATUSES),
  target: TargetView,
  createdAt: Timestamp,
  finishedAt: Nullable(Timestamp),
};
export const RolloutSummaryView = Type.Object(summaryFields, { title: 'RolloutSummary' });
export const RolloutView = Type.Object({
  ...summaryFields,
  counts: CountsView,
  groups: Type.Array(Type.Object({ position: Type.Integer() }, { title: 'RolloutGroup' })),
  devices: Type.Array(RolloutDeviceView),
}, { title: 'Rollout' });
export type RolloutView = Static<typeof RolloutView>;

function targetView(t: RolloutTarget): Static<typeof TargetView> {
  return { ...(t.deviceIds ? { deviceIds: [...t.deviceIds] } : {}), ...(t.tags ? { tags: [...t.tags] } : {}), ...(t.profiles ? { profiles: [...t.profiles] } : {}) };
}

export function rolloutSummaryView(r: RolloutRecord): Static<typeof RolloutSummaryView> {
  return { id: r.id, buildId: r.buildId, status: r.status, target: targetView(r.target), createdAt: r.createdAt, finishedAt: r.finishedAt };
}

function rolloutDeviceView(a: ActionRecord): Static<typeof RolloutDeviceView> {
  return {
    deviceId: a.deviceId, group: a.groupPosition, bundleId: a.bundleId, state: a.state, code: a.code, reason: a.reason,
    result: a.result ? benchmarkView(a.result) : null, updatedAt: a.updatedAt,
  };
}

export function rolloutView(r: RolloutRecord, actions: ActionRecord[]): RolloutView {
  const counts: Record<string, number> = {};
  for (const a of actions) counts[a.state] = (counts[a.state] ?? 0) + 1;
  return {
    ...rolloutSummaryView(r), counts,
    groups: [...new Set(actions.map((a) => a.groupPosition))].map((position) => ({ position })),
    devices: actions.map(rolloutDeviceView),
  };
}

function loadRollout(store: Store, id: string): RolloutView {
  const r = store.getRollout(id);
  if (!r) throw new EdgepackError('ROLLOUT_NOT_FOUND', `rollout ${id} not found`);
  return rolloutView(r, store.listActions(id));
}

const RolloutResponse = Type.Object({ rollout: RolloutView }, { title: 'RolloutResponse' });
const RolloutList = Type.Object({ rollouts: Type.Array(RolloutSummaryView), next: Next }, { title: 'RolloutList' });

const Names = Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { minItems: 1, maxItems: 1000 });
const CreateRolloutBody = StrictObject({
  buildId: Id,
  target: StrictObject({ deviceIds: Type.Optional(Names), tags: Type.Optional(Names), profiles: Type.Optional(Names) }, {
    description: 'all given criteria must hold; {} targets every device',
  }),
});
const ListQuery = StrictObject({ ...PageQuery, buildId: Type.Optional(Id), status: Type.Optional(StringEnum(ROLLOUT_STATUSES)) });

export const rolloutRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store } = deps;

  app.post('/rollouts', {
    config: { access: Access.operate, errors: ['BUILD_NOT_FOUND', 'BUILD_NOT_READY', 'DEVICE_NOT_FOUND', 'ROLLOUT_NO_TARGETS'] },
    schema: { summary: 'Roll a build out to devices: each gets a signed desired state naming its profile\'s bundle', tags: ['rollouts'], body: CreateRolloutBody, response: { 201: RolloutResponse } },
  }, async (req, reply) => {
    const r = await deps.rollouts.create(req.body.buildId, req.body.target);
    return reply.status(201).send({ rollout: loadRollout(store, r.id) });
  });

  app.get('/rollouts', {
    config: { access: Access.read, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List rollouts, oldest first', tags: ['rollouts'], querystring: ListQuery, response: { 200: RolloutList } },
  }, async (req) => {
    const { buildId, status } = req.query;
    const page = store.pageRollouts({ ...(buildId ? { buildId } : {}), ...(status ? { status } : {}) }, pageRequest(req.query));
    return { rollouts: page.items.map(rolloutSummaryView), next: encodeCursor(page.next) };
  });

  app.get('/rollouts/:id', {
    config: { access: Access.read, errors: ['ROLLOUT_NOT_FOUND'] },
    schema: { summary: 'One rollout, with every device\'s state and benchmark result', tags: ['rollouts'], params: IdParams, response: { 200: RolloutResponse } },
  }, async (req) => ({ rollout: loadRollout(store, req.params.id) }));
};
