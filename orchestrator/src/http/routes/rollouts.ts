import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EdgepackError, type ErrorCode } from '@edgepack/protocol';
import type { RolloutCommand } from '../../core/rollout-commands.js';
import { RolloutRequestSchema } from '../../core/rollout-request.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { ROLLOUT_STATUSES, RolloutEventView, RolloutSummaryView, RolloutView, eventView, rolloutSummaryView, rolloutView } from '../rollout-views.js';
import { Id, IdParams, MAX_PAGE_LIMIT, DEFAULT_PAGE_LIMIT, Next, PageQuery, StrictObject, StringEnum, encodeCursor, named, pageRequest } from '../schemas.js';

const RolloutResponse = Type.Object({ rollout: RolloutView }, { title: 'RolloutResponse' });
const RolloutList = Type.Object({ rollouts: Type.Array(RolloutSummaryView), next: Next }, { title: 'RolloutList' });
const EventList = Type.Object({ events: Type.Array(RolloutEventView), next: Next }, { title: 'RolloutEventList' });

const CreateRolloutBody = named('RolloutRequest', RolloutRequestSchema,
  'the rollout plan: every field optional except buildId and target; defaults as documented on each field');
const ListQuery = StrictObject({ ...PageQuery, buildId: Type.Optional(Id), status: Type.Optional(StringEnum(ROLLOUT_STATUSES)) });
const EventQuery = StrictObject({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT, default: DEFAULT_PAGE_LIMIT, description: `events per page (1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT})` })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'the `next` of the previous page' })),
  kind: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'only events of this kind (dispatch, pause, command:resume, …)' })),
  deviceId: Type.Optional(Id),
});

/** Events page by their seq: the cursor is the last seq seen, opaque to clients. */
function encodeSeq(seq: number | null): string | null {
  return seq === null ? null : Buffer.from(JSON.stringify(['seq', seq])).toString('base64url');
}
function decodeSeq(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v[0] === 'seq' && Number.isInteger(v[1]) && (v[1] as number) >= 0) return v[1] as number;
  } catch { /* fall through */ }
  throw new EdgepackError('CURSOR_INVALID', 'cursor is not one this server issued; start again without it');
}

const Force = Type.Optional(Type.Boolean({ description: 'go on although a gate breach still holds (recorded as an override)', default: false }));
const COMMANDS: { kind: RolloutCommand['kind']; summary: string; body: ReturnType<typeof StrictObject>; errors: ErrorCode[] }[] = [
  {
    kind: 'pause', summary: 'Pause a rollout: nothing new is dispatched; devices under way finish',
    body: StrictObject({ note: Type.Optional(Type.String({ minLength: 1, maxLength: 500, description: 'why, for the pause reason' })) }), errors: ['ROLLOUT_FINISHED', 'ROLLOUT_ROLLING_BACK'],
  },
  {
    kind: 'resume', summary: 'Resume a paused rollout; the gates are checked again, and a breach that still holds needs force: true',
    body: StrictObject({ force: Force }), errors: ['ROLLOUT_FINISHED', 'ROLLOUT_ROLLING_BACK', 'ROLLOUT_NOT_PAUSED', 'ROLLOUT_AWAITING_APPROVAL', 'ROLLOUT_SCHEDULE_ENDED', 'ROLLOUT_BREACH_HOLDS'],
  },
  {
    kind: 'approve', summary: 'Approve the wave the rollout waits for; it opens at once',
    body: StrictObject({ force: Force }), errors: ['ROLLOUT_FINISHED', 'ROLLOUT_ROLLING_BACK', 'ROLLOUT_NOT_AWAITING_APPROVAL', 'ROLLOUT_SCHEDULE_ENDED', 'ROLLOUT_BREACH_HOLDS'],
  },
  {
    kind: 'cancel', summary: 'Cancel a rollout: devices that have not started are withdrawn; started ones finish',
    body: StrictObject({}), errors: ['ROLLOUT_FINISHED', 'ROLLOUT_ROLLING_BACK'],
  },
  {
    kind: 'rollback', summary: 'Fleet rollback: every device the rollout touched gets its previous bundle back (offline ones when they return)',
    body: StrictObject({}), errors: [],
  },
];

export const rolloutRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { rollouts } = deps;

  app.post('/rollouts', {
    config: { access: Access.operate, errors: ['BUILD_NOT_FOUND', 'BUILD_NOT_READY', 'DEVICE_NOT_FOUND', 'ROLLOUT_NO_TARGETS', 'ROLLOUT_PLAN_INVALID', 'ROLLOUT_CONFLICT'] },
    schema: {
      summary: 'Start a staged rollout of a build: waves, gates on install outcome and on-device latency, timeouts, retries, windows',
      tags: ['rollouts'], body: CreateRolloutBody, response: { 201: RolloutResponse },
    },
  }, async (req, reply) => reply.status(201).send({ rollout: rolloutView(await rollouts.create(req.body)) }));

  app.get('/rollouts', {
    config: { access: Access.read, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List rollouts, oldest first', tags: ['rollouts'], querystring: ListQuery, response: { 200: RolloutList } },
  }, async (req) => {
    const { buildId, status } = req.query;
    const page = rollouts.list({ ...(buildId ? { buildId } : {}), ...(status ? { status } : {}) }, pageRequest(req.query));
    return { rollouts: page.items.map(rolloutSummaryView), next: encodeCursor(page.next) };
  });

  app.get('/rollouts/:id', {
    config: { access: Access.read, errors: ['ROLLOUT_NOT_FOUND'] },
    schema: {
      summary: 'One rollout: its state and pause reason, each wave with its counts and gate figures (per profile too), each device\'s outcome',
      tags: ['rollouts'], params: IdParams, response: { 200: RolloutResponse },
    },
  }, async (req) => ({ rollout: rolloutView(rollouts.get(req.params.id)) }));

  app.get('/rollouts/:id/events', {
    config: { access: Access.read, errors: ['ROLLOUT_NOT_FOUND', 'CURSOR_INVALID'] },
    schema: {
      summary: 'Every command and engine decision of a rollout, oldest first, with the figures that caused it',
      tags: ['rollouts'], params: IdParams, querystring: EventQuery, response: { 200: EventList },
    },
  }, async (req) => {
    const { kind, deviceId } = req.query;
    const afterSeq = decodeSeq(req.query.cursor);
    const page = rollouts.events(req.params.id, {
      limit: req.query.limit ?? DEFAULT_PAGE_LIMIT, ...(afterSeq !== undefined ? { afterSeq } : {}), ...(kind ? { kind } : {}), ...(deviceId ? { deviceId } : {}),
    });
    return { events: page.items.map(eventView), next: encodeSeq(page.nextSeq) };
  });

  for (const c of COMMANDS) {
    app.post(`/rollouts/:id/${c.kind}`, {
      config: { access: Access.operate, errors: ['ROLLOUT_NOT_FOUND', ...c.errors] },
      schema: { summary: c.summary, tags: ['rollouts'], params: IdParams, body: c.body, response: { 200: RolloutResponse } },
      // The body is optional: no body is the command without options.
      preValidation: async (req) => { if (req.body === undefined || req.body === null) req.body = {}; },
    }, async (req) => {
      const body = req.body as { note?: string; force?: boolean };
      const cmd: RolloutCommand = c.kind === 'pause' ? { kind: 'pause', ...(body.note ? { note: body.note } : {}) }
        : c.kind === 'resume' || c.kind === 'approve' ? { kind: c.kind, force: body.force === true }
          : { kind: c.kind };
      return { rollout: rolloutView(await rollouts.command(req.params.id, cmd)) };
    });
  }
};
