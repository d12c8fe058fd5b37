/**
 * What GET /v1/rollouts, GET /v1/rollouts/:id and the events route answer: the rollout's state
 * with its pause reason, each wave with its counts and gate figures (per profile too), and each
 * device's outcome. Views are built field by field from records; stored JSON is never spread
 * into a reply.
 */
import { Type, type Static } from '@sinclair/typebox';
import { DEVICE_STATES } from '@edgepack/protocol';
import type { MemberCategory } from '../core/rollout-counting.js';
import type { GroupVerdict } from '../core/rollout-gates.js';
import { trialPlanOf } from '../core/rollout-trials.js';
import type {
  ActionRecord, GateBreach, GatePolicy, GroupFigures, PauseReason, RolloutEvent, RolloutPlan, RolloutRecord, RolloutTarget,
} from '../records.js';
import type { MemberDetail, RolloutDetail, WaveDetail } from '../services/rollouts.js';
import { BenchmarkResultView, Nullable, StringEnum, Timestamp, benchmarkView } from './schemas.js';
import { VariantChoiceView, variantChoiceView } from './variant-views.js';

export const ROLLOUT_STATUSES = ['scheduled', 'running', 'paused', 'succeeded', 'cancelled', 'rolling_back', 'rolled_back', 'failed'] as const;
const PAUSE_CODES = ['OPERATOR', 'BREACH', 'QUORUM', 'GATE_UNMET', 'AWAITING_APPROVAL', 'SCHEDULE_ENDED'] as const;
const GATE_RULES = ['maxFailures', 'maxFailureRatio', 'maxGoldenFailures', 'maxP95Regression', 'maxLostRatio', 'liveErrorRate', 'liveP95Regression'] as const;
const OUTCOMES = ['waiting', 'waiting_offline', 'unreached', 'dispatched', 'in_progress', 'baking', 'lost', 'succeeded', 'failed', 'skipped', 'cancelled'] as const satisfies readonly MemberCategory[];
const PHASES = ['waiting', 'dispatched', 'succeeded', 'failed', 'skipped', 'cancelled', 'lost'] as const;
const ROLLBACK_STATES = ['dispatched', 'done', 'failed', 'impossible', 'superseded'] as const;
const TRIAL_STATES = ['dispatched', 'running', 'done', 'failed', 'timeout'] as const;

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const int = (description?: string) => Type.Integer(description ? { description } : {});

const TargetView = Type.Object({
  deviceIds: Type.Optional(Type.Array(Type.String())),
  tags: Type.Optional(Type.Array(Type.String())),
  profiles: Type.Optional(Type.Array(Type.String())),
}, { title: 'RolloutTarget', description: 'which devices: all of the given criteria must hold; none given means every device' });

export function targetView(t: RolloutTarget): Static<typeof TargetView> {
  return { ...(t.deviceIds ? { deviceIds: [...t.deviceIds] } : {}), ...(t.tags ? { tags: [...t.tags] } : {}), ...(t.profiles ? { profiles: [...t.profiles] } : {}) };
}

export const GateFiguresView = Type.Object({
  wave: int(),
  profile: Nullable(Type.String({ description: 'null: the whole wave' })),
  members: int('members that count (all but skipped and cancelled)'),
  waiting: int(), waitingOffline: int('not dispatched, device offline: never dispatched while so, never a failure'),
  unreached: int('dispatched without an answer within ackSec: withdrawn, never a failure'),
  dispatched: int(), inProgress: int(), baking: int(), lost: int('went silent during the bake'),
  succeeded: int(), failed: int(), skipped: int(), cancelled: int(), goldenFailures: int(),
  finished: int('succeeded + failed: the divisor of every ratio'),
  minExecuted: int(), maxFailures: int(),
  failureRatio: Type.Number(), successRatio: Nullable(Type.Number()), lostRatio: Type.Number(),
  p95Regression: Nullable(Type.Number({ description: 'median over devices of (p95 new / p95 on its previous bundle - 1)' })),
  p95Devices: int('devices with both figures'),
}, { title: 'GateFigures', description: 'counts of one wave, or of one profile within it, with the ratios its gate judges' });

function figuresView(f: GroupFigures): Static<typeof GateFiguresView> {
  return {
    wave: f.wave, profile: f.profile, members: f.members, waiting: f.waiting, waitingOffline: f.waitingOffline, unreached: f.unreached,
    dispatched: f.dispatched, inProgress: f.inProgress, baking: f.baking, lost: f.lost, succeeded: f.succeeded, failed: f.failed,
    skipped: f.skipped, cancelled: f.cancelled, goldenFailures: f.goldenFailures, finished: f.finished, minExecuted: f.minExecuted,
    maxFailures: f.maxFailures, failureRatio: f.failureRatio, successRatio: f.successRatio, lostRatio: f.lostRatio,
    p95Regression: f.p95Regression, p95Devices: f.p95Devices,
  };
}

export const GateBreachView = Type.Object({
  wave: int(), profile: Nullable(Type.String()), rule: StringEnum(GATE_RULES), value: Type.Number(), limit: Type.Number(), message: Type.String(),
}, { title: 'GateBreach' });

function breachView(b: GateBreach): Static<typeof GateBreachView> {
  return { wave: b.wave, profile: b.profile, rule: b.rule, value: b.value, limit: b.limit, message: b.message };
}

export const PauseView = Type.Object({
  code: StringEnum(PAUSE_CODES),
  message: Type.String(),
  wave: Nullable(int()),
  at: Timestamp,
  breaches: Type.Optional(Type.Array(GateBreachView)),
  figures: Type.Optional(GateFiguresView),
}, { title: 'RolloutPause', description: 'why the rollout is paused, with the figures that caused it' });

function pauseView(p: PauseReason | null): Static<typeof PauseView> | null {
  if (!p) return null;
  return {
    code: p.code, message: p.message, wave: p.wave, at: iso(p.at)!,
    ...(p.breaches ? { breaches: p.breaches.map(breachView) } : {}), ...(p.figures ? { figures: figuresView(p.figures) } : {}),
  };
}

const GatePolicyView = Type.Object({
  minExecuted: Nullable(int('null: half of the group, rounded up')),
  minSuccessRatio: Type.Number(), maxFailureRatio: Type.Number(),
  maxFailures: Nullable(int('null: floor(maxFailureRatio x group)')),
  maxP95Regression: Type.Number(), maxGoldenFailures: int(), maxLostRatio: Type.Number(),
}, { title: 'GatePolicy' });

function policyView(g: GatePolicy): Static<typeof GatePolicyView> {
  return {
    minExecuted: g.minExecuted, minSuccessRatio: g.minSuccessRatio, maxFailureRatio: g.maxFailureRatio, maxFailures: g.maxFailures,
    maxP95Regression: g.maxP95Regression, maxGoldenFailures: g.maxGoldenFailures, maxLostRatio: g.maxLostRatio,
  };
}

const GroupGateView = Type.Object({
  figures: GateFiguresView,
  breaches: Type.Array(GateBreachView),
  pass: Type.Boolean(),
  unmet: Type.Array(Type.String({ description: 'pass conditions not met yet, in words' })),
}, { title: 'GroupGate' });

function groupGateView(v: GroupVerdict): Static<typeof GroupGateView> {
  return { figures: figuresView(v.figures), breaches: v.breaches.map(breachView), pass: v.pass, unmet: [...v.unmet] };
}

export const WaveView = Type.Object({
  position: int(),
  name: Type.String(),
  status: StringEnum(['pending', 'open', 'passed']),
  tail: Type.Boolean({ description: 'the wave after the last, opened for late joiners of a continuous rollout' }),
  size: Type.Object({ count: Type.Optional(int()), percent: Type.Optional(Type.Number()) }),
  requireApproval: Type.Boolean(),
  bakeSec: int(),
  openedAt: Nullable(Timestamp), passedAt: Nullable(Timestamp), approvedAt: Nullable(Timestamp),
  policy: GatePolicyView,
  gate: GroupGateView,
  profiles: Type.Array(GroupGateView, { description: 'the same gate for each profile in the wave' }),
}, { title: 'RolloutWave' });

function waveView(w: WaveDetail): Static<typeof WaveView> {
  const s = w.plan.size;
  return {
    position: w.record.position, name: w.record.name, status: w.record.status, tail: w.record.tail,
    size: 'count' in s ? { count: s.count } : { percent: s.percent },
    requireApproval: w.plan.requireApproval, bakeSec: w.plan.bakeSec,
    openedAt: iso(w.record.openedAt), passedAt: iso(w.record.passedAt), approvedAt: iso(w.record.approvedAt),
    policy: policyView(w.plan.gate), gate: groupGateView(w.verdict.whole), profiles: w.verdict.profiles.map(groupGateView),
  };
}

export const RolloutDeviceView = Type.Object({
  deviceId: Type.String(),
  profile: Nullable(Type.String()),
  wave: int('position of the wave (rollout group) the device is in'),
  bundleId: Nullable(Type.String()),
  outcome: StringEnum(OUTCOMES, { description: 'what the device counts as now' }),
  phase: StringEnum(PHASES),
  state: Nullable(StringEnum(DEVICE_STATES, { description: 'the state the device last reported for its install' })),
  code: Nullable(Type.String({ description: 'error catalogue code of the outcome or the last failure' })),
  reason: Nullable(Type.String()),
  attempts: int(),
  late: Type.Boolean({ description: 'joined after the start (continuous membership)' }),
  previousBundle: Nullable(Type.String({ description: 'what the device ran at its first dispatch: what a fleet rollback returns it to' })),
  baselineP95Ms: Nullable(Type.Number({ description: 'p95 of its last benchmark on previousBundle' })),
  p95Ms: Nullable(Type.Number({ description: 'p95 measured on the new bundle' })),
  result: Nullable(BenchmarkResultView),
  online: Nullable(Type.Boolean()),
  activeBundle: Nullable(Type.String({ description: 'what the device runs now' })),
  dispatchedAt: Nullable(Timestamp),
  finishedAt: Nullable(Timestamp),
  rollback: Nullable(Type.Object({
    state: StringEnum(ROLLBACK_STATES), code: Nullable(Type.String()), dispatchedAt: Nullable(Timestamp), result: Nullable(BenchmarkResultView),
  }, { description: 'the fleet rollback of this device, once asked' })),
  trial: Nullable(Type.Object({
    state: StringEnum(TRIAL_STATES), code: Nullable(Type.String()), reason: Nullable(Type.String()), dispatchedAt: Nullable(Timestamp), endedAt: Nullable(Timestamp),
  }, { description: 'a device build\'s canary: this device\'s trial of its profile\'s candidates (figures under the rollout\'s choices)' })),
}, { title: 'RolloutDevice', description: 'one device\'s part in the rollout' });

function memberView(x: MemberDetail): Static<typeof RolloutDeviceView> {
  const m = x.member;
  return {
    deviceId: m.deviceId, profile: m.profile, wave: m.wave, bundleId: m.bundleId, outcome: x.category, phase: m.phase, state: m.reportState,
    code: m.code ?? m.reportCode, reason: m.reason ?? m.reportReason, attempts: m.attempts, late: m.late, previousBundle: m.previousBundle,
    baselineP95Ms: m.baselineP95Ms, p95Ms: m.p95Ms, result: x.result ? benchmarkView(x.result) : null,
    online: x.device ? x.device.online : null, activeBundle: x.device?.activeBundle ?? null,
    dispatchedAt: iso(m.dispatchedAt), finishedAt: iso(m.finishedAt),
    rollback: m.rollbackState === null ? null : {
      state: m.rollbackState, code: m.rollbackCode, dispatchedAt: iso(m.rollbackDispatchedAt), result: x.rollbackResult ? benchmarkView(x.rollbackResult) : null,
    },
    trial: m.trialState === null ? null : {
      state: m.trialState, code: m.trialCode, reason: m.trialReason, dispatchedAt: iso(m.trialAt), endedAt: iso(m.trialEndedAt),
    },
  };
}

/** A one-wave action in the same shape: its reported state says what it counts as. */
function actionView(a: ActionRecord): Static<typeof RolloutDeviceView> {
  const outcome: MemberCategory = a.state === 'active' ? 'succeeded' : a.state === 'failed' || a.state === 'rolled_back' ? 'failed' : a.state === 'pending' ? 'dispatched' : 'in_progress';
  const phase = outcome === 'succeeded' ? 'succeeded' : outcome === 'failed' ? 'failed' : 'dispatched';
  return {
    deviceId: a.deviceId, profile: null, wave: a.groupPosition, bundleId: a.bundleId, outcome, phase, state: a.state, code: a.code, reason: a.reason,
    attempts: a.state === 'pending' ? 0 : 1, late: false, previousBundle: null, baselineP95Ms: null, p95Ms: a.result?.latencyMs.p95 ?? null,
    result: a.result ? benchmarkView(a.result) : null, online: null, activeBundle: null, dispatchedAt: null,
    finishedAt: outcome === 'succeeded' || outcome === 'failed' ? a.updatedAt : null, rollback: null, trial: null,
  };
}

const PlanView = Type.Object({
  membership: StringEnum(['snapshot', 'continuous']),
  onBreach: StringEnum(['pause', 'rollback']),
  rate: Type.Object({ maxPerMinute: int(), maxInFlight: int() }),
  timeouts: Type.Object({ ackSec: int(), inProgressSec: int(), quorumSec: int() }),
  retry: Type.Object({ maxAttempts: int(), backoffSec: int(), maxBackoffSec: int(), retryOn: Type.Array(Type.String()) }),
  schedule: Type.Object({
    startAt: Nullable(Type.String()), endAt: Nullable(Type.String()), endBehavior: StringEnum(['pause', 'cancel']),
    windows: Type.Array(Type.Object({ cron: Type.String(), durationMin: int(), tz: Type.String() })),
  }),
  trial: Type.Object({ rounds: int(), timeoutSec: int(), measureAgain: Type.Boolean() }, { description: 'how a device build\'s canary trials its candidates' }),
}, { title: 'RolloutPlan', description: 'the plan as normalized (every default applied); waves and their gates are under `waves`' });

function planView(p: RolloutPlan): Static<typeof PlanView> {
  return {
    membership: p.membership, onBreach: p.onBreach,
    rate: { maxPerMinute: p.rate.maxPerMinute, maxInFlight: p.rate.maxInFlight },
    timeouts: { ackSec: p.timeouts.ackSec, inProgressSec: p.timeouts.inProgressSec, quorumSec: p.timeouts.quorumSec },
    retry: { maxAttempts: p.retry.maxAttempts, backoffSec: p.retry.backoffSec, maxBackoffSec: p.retry.maxBackoffSec, retryOn: [...p.retry.retryOn] },
    schedule: {
      startAt: p.schedule.startAt, endAt: p.schedule.endAt, endBehavior: p.schedule.endBehavior,
      windows: p.schedule.windows.map((w) => ({ cron: w.cron, durationMin: w.durationMin, tz: w.tz })),
    },
    trial: { rounds: trialPlanOf(p).rounds, timeoutSec: trialPlanOf(p).timeoutSec, measureAgain: trialPlanOf(p).measureAgain },
  };
}

const summaryFields = {
  id: Type.String(),
  buildId: Type.String(),
  stream: Nullable(Type.String({ description: 'one open rollout per device and stream (default: the build\'s model id); null for one-wave rollouts' })),
  status: StringEnum(ROLLOUT_STATUSES),
  pause: Nullable(PauseView),
  staged: Type.Boolean({ description: 'false: a one-wave rollout made before waves' }),
  target: TargetView,
  createdAt: Timestamp,
  finishedAt: Nullable(Timestamp),
};
export const RolloutSummaryView = Type.Object(summaryFields, { title: 'RolloutSummary' });

export function rolloutSummaryView(r: RolloutRecord): Static<typeof RolloutSummaryView> {
  return {
    id: r.id, buildId: r.buildId, stream: r.stream, status: r.status, pause: pauseView(r.pause), staged: r.staged,
    target: targetView(r.target), createdAt: r.createdAt, finishedAt: r.finishedAt,
  };
}

/** Devices per outcome; outcomes no device has are absent. */
const CountsView = Type.Object(Object.fromEntries(OUTCOMES.map((o) => [o, Type.Optional(Type.Integer({ minimum: 1 }))])), { title: 'RolloutCounts' });

export const RolloutView = Type.Object({
  ...summaryFields,
  startedAt: Nullable(Timestamp),
  plan: Nullable(PlanView),
  rollback: Nullable(Type.Object({
    cause: StringEnum(['command', 'breach']), at: Timestamp, breaches: Type.Optional(Type.Array(GateBreachView)),
  }, { description: 'the fleet rollback, once started' })),
  counts: CountsView,
  waves: Type.Array(WaveView),
  devices: Type.Array(RolloutDeviceView),
  selection: StringEnum(['host', 'device'], { description: 'the build\'s selection: device = the canary trials every candidate and each profile gets the devices\' pick' }),
  choices: Type.Array(VariantChoiceView, { description: 'a device build: the variant chosen per profile so far, with every device\'s figures for every candidate and the host\'s pick beside it' }),
}, { title: 'Rollout' });
export type RolloutView = Static<typeof RolloutView>;

export function rolloutView(x: RolloutDetail): RolloutView {
  const summary = rolloutSummaryView(x.summary);
  if (x.kind === 'legacy') {
    const devices = x.actions.map(actionView);
    return { ...summary, startedAt: x.summary.createdAt, plan: null, rollback: null, counts: countsOf(devices.map((d) => d.outcome)), waves: [], devices, selection: 'host', choices: [] };
  }
  const s = x.state;
  return {
    ...summary,
    // The engine's state is fresher than the row's summary columns only in ms precision; show the engine's.
    status: s.status, pause: pauseView(s.pause), finishedAt: iso(s.finishedAt),
    startedAt: iso(s.startedAt),
    plan: planView(x.plan),
    rollback: s.rollback ? { cause: s.rollback.cause, at: iso(s.rollback.at)!, ...(s.rollback.breaches ? { breaches: s.rollback.breaches.map(breachView) } : {}) } : null,
    counts: countsOf(x.members.map((m) => m.category)),
    waves: x.waves.map(waveView),
    devices: x.members.map(memberView),
    selection: x.choices ? 'device' : 'host',
    choices: (x.choices ?? []).map((c) => variantChoiceView({ rolloutId: x.summary.id, chosenAt: c.chosenAt, choice: c.choice })),
  };
}

function countsOf(outcomes: readonly MemberCategory[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return counts;
}

export const RolloutEventView = Type.Object({
  seq: Type.Integer({ description: 'increases per rollout' }),
  at: Timestamp,
  kind: Type.String({ description: 'the decision (dispatch, open-wave, pause, …) or command (command:resume, …)' }),
  deviceId: Nullable(Type.String()),
  data: Type.Record(Type.String(), Type.Unknown(), { description: 'the decision or command with the figures that caused it' }),
}, { title: 'RolloutEvent' });

export function eventView(e: RolloutEvent): Static<typeof RolloutEventView> {
  return { seq: e.seq, at: e.at, kind: e.kind, deviceId: e.deviceId, data: e.data };
}
