/**
 * The body of POST /v1/rollouts, as the operator writes it. Every field is optional except
 * buildId and target; `default` annotations are the values core/rollout-plan-normalize.ts
 * applies (shown by @fastify/swagger). Unknown fields are refused everywhere
 * (additionalProperties: false), so a typo such as `maxFailureRate` is a 400 naming the field,
 * not a gate silently left at its default.
 *
 * Note for the route: Fastify's default Ajv options include removeAdditional, which strips
 * unknown fields instead of refusing them. Validate with normalizePlan (TypeBox's compiler,
 * which refuses them) or configure Ajv with removeAdditional: false.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TRIAL_LIMITS } from '@edgepack/protocol';
import { DEFAULT_ROLLOUT } from './rollout-defaults.js';

const D = DEFAULT_ROLLOUT;
const Ratio = (dflt?: number) => Type.Number({ minimum: 0, maximum: 1, ...(dflt !== undefined ? { default: dflt } : {}) });
const Seconds = (dflt: number, max = 7 * 24 * 3600) => Type.Integer({ minimum: 1, maximum: max, default: dflt });
const Code = Type.String({ pattern: '^[A-Z][A-Z0-9_]{0,63}$' });
const Name = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._%-]*$' });
/** ISO 8601 with a zone; core/rollout-schedule.ts ISO_INSTANT is the same pattern. */
const Instant = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:\\d{2})$', description: 'ISO 8601 instant with Z or an offset' });

export const GateRequestSchema = Type.Object({
  minExecuted: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'default: half of the group, rounded up' })),
  minSuccessRatio: Type.Optional(Ratio(D.gate.minSuccessRatio)),
  maxFailureRatio: Type.Optional(Ratio(D.gate.maxFailureRatio)),
  maxFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'default: floor(maxFailureRatio x group)' })),
  maxP95Regression: Type.Optional(Type.Number({ minimum: 0, maximum: 100, default: D.gate.maxP95Regression })),
  maxGoldenFailures: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000, default: D.gate.maxGoldenFailures })),
  maxLostRatio: Type.Optional(Ratio(D.gate.maxLostRatio)),
  live: Type.Optional(Type.Object({
    maxErrorRateIncrease: Type.Optional(Type.Number({ minimum: 0, maximum: 1, default: D.live.maxErrorRateIncrease, description: 'median over devices of (live error rate on the new bundle − on the previous one)' })),
    maxP95Regression: Type.Optional(Type.Number({ minimum: 0, maximum: 100, default: D.live.maxP95Regression, description: 'median over devices of (live p95 new ÷ live p95 previous − 1)' })),
    minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000, default: D.live.minRequests, description: 'requests a device must have served on each bundle before its live figures count' })),
  }, {
    additionalProperties: false,
    description: 'during bake, also judge each device\'s live inference telemetry on the new bundle against its own on the previous bundle (the hour before the rollout touched it); absent: not judged',
  })),
}, { additionalProperties: false });

/** Exactly one of count or percent (a union would make errors name the union, not the field). */
export const WaveSizeRequestSchema = Type.Object({
  count: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100 })),
}, { additionalProperties: false, minProperties: 1, maxProperties: 1 });

export const WaveRequestSchema = Type.Object({
  name: Type.Optional(Name),
  size: WaveSizeRequestSchema,
  requireApproval: Type.Optional(Type.Boolean({ default: false })),
  bakeSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 24 * 3600, default: D.bakeSec })),
  gate: Type.Optional(GateRequestSchema),
}, { additionalProperties: false });

export const WindowRequestSchema = Type.Object({
  cron: Type.String({ minLength: 1, maxLength: 128 }),
  durationMin: Type.Integer({ minimum: 1, maximum: 7 * 24 * 60 }),
  /** Required: a night window in UTC by accident would open in the middle of someone's day. */
  tz: Type.String({ minLength: 1, maxLength: 64 }),
}, { additionalProperties: false });

export const RolloutRequestSchema = Type.Object({
  buildId: Type.String({ minLength: 1, maxLength: 128 }),
  target: Type.Object({
    deviceIds: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { minItems: 1, maxItems: 100_000 })),
    tags: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 64 })),
    profiles: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 64 })),
  }, { additionalProperties: false }),
  stream: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'default: the model id of the build' })),
  membership: Type.Optional(Type.Union([Type.Literal('snapshot'), Type.Literal('continuous')], { default: 'snapshot' })),
  waves: Type.Optional(Type.Array(WaveRequestSchema, { minItems: 1, maxItems: 32, description: 'default: canary {count: max(3, 1 per targeted profile)}, 10%, 50%, rest' })),
  gate: Type.Optional(GateRequestSchema),
  rate: Type.Optional(Type.Object({
    maxPerMinute: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, default: D.rate.maxPerMinute })),
    maxInFlight: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, default: D.rate.maxInFlight })),
  }, { additionalProperties: false })),
  timeouts: Type.Optional(Type.Object({
    ackSec: Type.Optional(Seconds(D.timeouts.ackSec)),
    inProgressSec: Type.Optional(Seconds(D.timeouts.inProgressSec)),
    quorumSec: Type.Optional(Seconds(D.timeouts.quorumSec, 30 * 24 * 3600)),
  }, { additionalProperties: false })),
  retry: Type.Optional(Type.Object({
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 20, default: D.retry.maxAttempts })),
    backoffSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 24 * 3600, default: D.retry.backoffSec })),
    retryOn: Type.Optional(Type.Array(Code, { maxItems: 32, uniqueItems: true, default: [...D.retry.retryOn] })),
  }, { additionalProperties: false })),
  schedule: Type.Optional(Type.Object({
    startAt: Type.Optional(Instant),
    endAt: Type.Optional(Instant),
    endBehavior: Type.Optional(Type.Union([Type.Literal('pause'), Type.Literal('cancel')], { default: 'pause' })),
    windows: Type.Optional(Type.Array(WindowRequestSchema, { minItems: 1, maxItems: 16 })),
  }, { additionalProperties: false })),
  onBreach: Type.Optional(Type.Union([Type.Literal('pause'), Type.Literal('rollback')], { default: 'pause' })),
  supersede: Type.Optional(Type.Boolean({ default: false })),
  trial: Type.Optional(Type.Object({
    rounds: Type.Optional(Type.Integer({ minimum: 1, maximum: TRIAL_LIMITS.maxRounds, default: D.trial.rounds, description: 'interleaved rounds each canary device runs (one benchmark per candidate per round)' })),
    timeoutSec: Type.Optional(Seconds(D.trial.timeoutSec, 24 * 3600)),
    measureAgain: Type.Optional(Type.Boolean({ default: D.trial.measureAgain, description: 'trial on the canary even when stored results of these bundles exist' })),
  }, {
    additionalProperties: false,
    description: 'for a build made with selection \'device\': how the canary devices trial the candidates before the profile\'s variant is chosen (ignored for host builds)',
  })),
}, { additionalProperties: false });

export type RolloutRequest = Static<typeof RolloutRequestSchema>;
export type GateRequest = Static<typeof GateRequestSchema>;
export type WaveRequest = Static<typeof WaveRequestSchema>;
