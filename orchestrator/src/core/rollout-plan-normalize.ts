/**
 * POST /v1/rollouts body → the full rollout plan, every default applied, or one coded error
 * naming the field in the operator's own terms (`waves[1].size.percent`).
 */
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { GatePolicy, LiveGatePolicy, RolloutPlan, RolloutWindow, WavePlan, WaveSize } from '../records.js';
import { DEFAULT_ROLLOUT } from './rollout-defaults.js';
import { RolloutRequestSchema, type GateRequest, type RolloutRequest } from './rollout-request.js';
import { NEVER_RETRY_CODES } from './rollout-retry.js';
import { checkWindow, parseInstant } from './rollout-schedule.js';

export interface PlanContext {
  /** The build's model id: the default stream. */
  modelId: string;
  /** Distinct profiles among the targeted devices that have a built artifact (sizes the default canary). */
  targetProfiles: readonly string[];
  now: Date;
}

export type PlanResult =
  | { ok: true; plan: RolloutPlan }
  | { ok: false; code: 'ROLLOUT_PLAN_INVALID'; field: string; message: string };

/** `/waves/1/size/percent` → `waves[1].size.percent` (JSON pointer unescaped). */
export function fieldName(pointer: string): string {
  const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || '(body)';
}

function invalid(field: string, message: string): PlanResult {
  return { ok: false, code: 'ROLLOUT_PLAN_INVALID', field, message: `${field}: ${message}` };
}

/** Compiles the request schema once; reuse one instance per process (no module-level cache). */
export class PlanNormalizer {
  private readonly check: TypeCheck<typeof RolloutRequestSchema> = TypeCompiler.Compile(RolloutRequestSchema);

  normalize(body: unknown, ctx: PlanContext): PlanResult {
    if (!this.check.Check(body)) {
      const first = this.check.Errors(body).First();
      return invalid(fieldName(first?.path ?? ''), first?.message ?? 'is invalid');
    }
    return normalizeChecked(body, ctx);
  }
}

/** Convenience for one-off callers; compiles the schema each call. */
export function normalizePlan(body: unknown, ctx: PlanContext): PlanResult {
  return new PlanNormalizer().normalize(body, ctx);
}

function gateOf(base: GatePolicy, g: GateRequest | undefined): GatePolicy {
  return {
    minExecuted: g?.minExecuted ?? base.minExecuted,
    minSuccessRatio: g?.minSuccessRatio ?? base.minSuccessRatio,
    maxFailureRatio: g?.maxFailureRatio ?? base.maxFailureRatio,
    maxFailures: g?.maxFailures ?? base.maxFailures,
    maxP95Regression: g?.maxP95Regression ?? base.maxP95Regression,
    maxGoldenFailures: g?.maxGoldenFailures ?? base.maxGoldenFailures,
    maxLostRatio: g?.maxLostRatio ?? base.maxLostRatio,
    // A wave's own live gate is filled from the rollout's (or the defaults) field by field, like the rest.
    ...(g?.live ? { live: liveOf(base.live, g.live) } : base.live ? { live: base.live } : {}),
  };
}

function liveOf(base: LiveGatePolicy | undefined, g: NonNullable<GateRequest['live']>): LiveGatePolicy {
  const d = base ?? DEFAULT_ROLLOUT.live;
  return {
    maxErrorRateIncrease: g.maxErrorRateIncrease ?? d.maxErrorRateIncrease,
    maxP95Regression: g.maxP95Regression ?? d.maxP95Regression,
    minRequests: g.minRequests ?? d.minRequests,
  };
}

function normalizeChecked(body: RolloutRequest, ctx: PlanContext): PlanResult {
  const D = DEFAULT_ROLLOUT;
  const gate = gateOf({ ...D.gate }, body.gate);
  const bake = D.bakeSec;

  let waves: WavePlan[];
  if (!body.waves) {
    const canary = Math.max(D.canaryMinCount, ctx.targetProfiles.length);
    waves = [
      { name: 'canary', size: { count: canary }, requireApproval: false, bakeSec: bake, gate },
      ...D.wavePercents.map((p): WavePlan => ({ name: `${p}%`, size: { percent: p }, requireApproval: false, bakeSec: bake, gate })),
      { name: 'rest', size: { percent: 100 }, requireApproval: false, bakeSec: bake, gate },
    ];
  } else {
    const seen = new Map<string, number>();
    let percentSoFar = 0;
    waves = [];
    for (let i = 0; i < body.waves.length; i++) {
      const w = body.waves[i]!;
      const name = w.name ?? `wave-${i + 1}`;
      if (seen.has(name)) return invalid(`waves[${i}].name`, `duplicates the name of waves[${seen.get(name)}]`);
      seen.set(name, i);
      const size: WaveSize = w.size.count !== undefined ? { count: w.size.count } : { percent: w.size.percent! };
      if ('percent' in size && i < body.waves.length - 1) {
        percentSoFar += size.percent;
        if (percentSoFar > 100) return invalid(`waves[${i}].size.percent`, `waves before the last already take ${percentSoFar}% of the target`);
      }
      waves.push({ name, size, requireApproval: w.requireApproval ?? false, bakeSec: w.bakeSec ?? bake, gate: gateOf(gate, w.gate) });
    }
  }

  const retryOn = body.retry?.retryOn ?? [...D.retry.retryOn];
  for (let i = 0; i < retryOn.length; i++) {
    if (NEVER_RETRY_CODES.includes(retryOn[i]!)) {
      return invalid(`retry.retryOn[${i}]`, `${retryOn[i]} is a deterministic refusal: the same bundle fails the same way again, so it is never retried`);
    }
  }

  // A canary waits for its trials before it installs: a trial timeout past the quorum timeout
  // would pause a device build's canary for want of quorum before its trials could end. Given,
  // it must be shorter; defaulted, it is 600 s or half the quorum timeout if that is shorter.
  const quorum = body.timeouts?.quorumSec ?? D.timeouts.quorumSec;
  const trialTimeout = body.trial?.timeoutSec ?? Math.min(D.trial.timeoutSec, Math.max(1, Math.floor(quorum / 2)));
  if (trialTimeout >= quorum) return invalid('trial.timeoutSec', `${trialTimeout} s is not less than timeouts.quorumSec (${quorum} s): the canary would pause for quorum before its trials could time out`);

  const s = body.schedule;
  const startAt = s?.startAt ?? null;
  const endAt = s?.endAt ?? null;
  const start = parseInstant(startAt);
  const end = parseInstant(endAt);
  if (startAt !== null && start === null) return invalid('schedule.startAt', `${JSON.stringify(startAt)} is not a valid instant`);
  if (endAt !== null && end === null) return invalid('schedule.endAt', `${JSON.stringify(endAt)} is not a valid instant`);
  if (end !== null && end <= ctx.now.getTime()) return invalid('schedule.endAt', `${endAt} is already past`);
  if (end !== null && start !== null && end <= start) return invalid('schedule.endAt', `${endAt} is not after startAt ${startAt}`);
  const windows: RolloutWindow[] = [];
  for (let i = 0; i < (s?.windows ?? []).length; i++) {
    const w = s!.windows![i]!;
    const c = checkWindow(w);
    if (!c.ok) return invalid(`schedule.windows[${i}].${c.field}`, c.message);
    windows.push({ cron: w.cron, durationMin: w.durationMin, tz: w.tz });
  }

  const plan: RolloutPlan = {
    buildId: body.buildId,
    stream: body.stream ?? ctx.modelId,
    target: {
      ...(body.target.deviceIds ? { deviceIds: [...new Set(body.target.deviceIds)] } : {}),
      ...(body.target.tags ? { tags: [...body.target.tags] } : {}),
      ...(body.target.profiles ? { profiles: [...body.target.profiles] } : {}),
    },
    membership: body.membership ?? D.membership,
    waves,
    gate,
    rate: {
      maxPerMinute: body.rate?.maxPerMinute ?? D.rate.maxPerMinute,
      maxInFlight: body.rate?.maxInFlight ?? D.rate.maxInFlight,
    },
    timeouts: {
      ackSec: body.timeouts?.ackSec ?? D.timeouts.ackSec,
      inProgressSec: body.timeouts?.inProgressSec ?? D.timeouts.inProgressSec,
      quorumSec: body.timeouts?.quorumSec ?? D.timeouts.quorumSec,
    },
    retry: {
      maxAttempts: body.retry?.maxAttempts ?? D.retry.maxAttempts,
      backoffSec: body.retry?.backoffSec ?? D.retry.backoffSec,
      maxBackoffSec: Math.max(D.retry.maxBackoffSec, body.retry?.backoffSec ?? 0),
      retryOn,
    },
    schedule: { startAt, endAt, endBehavior: s?.endBehavior ?? D.endBehavior, windows },
    onBreach: body.onBreach ?? D.onBreach,
    supersede: body.supersede ?? D.supersede,
    trial: {
      rounds: body.trial?.rounds ?? D.trial.rounds,
      timeoutSec: trialTimeout,
      measureAgain: body.trial?.measureAgain ?? D.trial.measureAgain,
    },
  };
  return { ok: true, plan };
}
