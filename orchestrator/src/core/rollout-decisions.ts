/**
 * Decisions: what decide() and handleCommand() ask the executor to do, as data. Each one is
 * also the rollout's event (GET /v1/rollouts/:id/events), so each carries the figures that
 * caused it. `patchOf` says exactly which stored fields a decision changes, so the executor
 * and the in-memory test executor apply them the same way:
 *
 *   for each decision, in order:
 *     1. write patchOf(d, now) and the event in one transaction;
 *     2. then do the IO: `dispatch` and `rollback-dispatch` publish a signed desired state
 *        (a new seq), `withdraw` replaces the device's desired state so it will not start.
 *
 * Writing before publishing means a crash in between leaves a member marked dispatched that
 * got nothing: it then looks unreached after ackSec and is dispatched again. Never the other
 * way round (a device working on something the database does not know about).
 */
import type { EpochMs, GateBreach, GateOverride, GroupFigures, PauseReason, RolloutMember, RolloutState, WaveRecord } from '../records.js';
import type { WaveVerdict } from './rollout-gates.js';
import type { RolloutSnapshot } from './rollout-snapshot.js';
import type { VariantChoice } from './variant-choice.js';

/** A wave's figures for events: the wave's own and each profile's. */
export interface WaveFigures {
  whole: GroupFigures;
  profiles: GroupFigures[];
  unmet: string[];
}

export function waveFigures(v: WaveVerdict): WaveFigures {
  return { whole: v.whole.figures, profiles: v.profiles.map((p) => p.figures), unmet: v.unmet };
}

export type MemberOutcome = 'succeeded' | 'failed' | 'skipped' | 'cancelled' | 'lost';

export type Decision =
  /** scheduled → running (startAt reached, or no startAt). */
  | { kind: 'start'; startAt: string | null }
  /** A wave opens: its members may be dispatched. `cause` says why now. */
  | { kind: 'open-wave'; wave: number; name: string; cause: 'start' | 'previous-passed' | 'approved' | 'tail'; tail: boolean; members: number }
  /** A wave passed its gate (for the wave and every profile in it). */
  | { kind: 'wave-passed'; wave: number; figures: WaveFigures }
  /** The next wave needs an operator's approval: the rollout pauses with AWAITING_APPROVAL. */
  | { kind: 'await-approval'; wave: number; name: string }
  | { kind: 'pause'; reason: PauseReason }
  /**
   * paused → running (or back to scheduled before startAt). `forcedPast`: the breaches that held
   * and were resumed past with force; `overrides`: the rollout's whole override list afterwards.
   */
  | { kind: 'resume'; forced: boolean; forcedPast: GateBreach[]; overrides: GateOverride[]; to: 'running' | 'scheduled' }
  /** The operator approved `wave` (decide then opens it); force as for resume. */
  | { kind: 'approve'; wave: number; forced: boolean; forcedPast: GateBreach[]; overrides: GateOverride[] }
  | { kind: 'finish'; status: 'succeeded' | 'cancelled' | 'rolled_back'; message: string; figures: Record<string, number> }
  /** Fleet rollback starts: status rolling_back. */
  | { kind: 'start-rollback'; cause: 'command' | 'breach'; breaches: GateBreach[] }
  /** Publish the member's bundle to its device. Record previousBundle and baselineP95Ms on the first dispatch (they are already in the member otherwise). */
  | {
    kind: 'dispatch'; deviceId: string; wave: number; bundleId: string; attempt: number; cause: 'first' | 'retry' | 'redispatch';
    previousBundle: string | null; baselineP95Ms: number | null;
  }
  /**
   * Take back a dispatch the device has not started. `outcome` waiting: it may be dispatched
   * again (`unreached` is the member's new count of unanswered dispatches); cancelled: it leaves
   * the rollout. Every field a patch writes is an absolute value, so applying a decision twice
   * changes nothing the second time.
   */
  | {
    kind: 'withdraw'; deviceId: string; code: 'ACK_TIMEOUT' | 'CANCELLED' | 'SUPERSEDED' | 'ROLLED_BACK' | 'DEVICE_REVOKED'; reason: string;
    outcome: 'waiting' | 'cancelled'; dispatchedAt: EpochMs | null; unreached: number;
  }
  /** A retryable failure: back to waiting until retryAt. */
  | { kind: 'retry-later'; deviceId: string; code: string; attemptsDone: number; nextAttempt: number; retryAt: EpochMs; backoffSec: number }
  | { kind: 'mark-member'; deviceId: string; outcome: MemberOutcome; code: string | null; reason: string }
  /** A device joins (continuous membership); the executor inserts this row. */
  | { kind: 'add-member'; member: RolloutMember }
  /** Publish the member's previous bundle to its device. */
  | { kind: 'rollback-dispatch'; deviceId: string; bundleId: string; fromBundle: string | null }
  /** A rollback ended for a member (done / failed / impossible / superseded), or its dispatch went unanswered (resend: back to to-send). */
  | { kind: 'mark-rollback'; deviceId: string; outcome: 'done' | 'failed' | 'impossible' | 'superseded' | 'resend'; code: string | null; reason: string }
  /**
   * Issue 10: publish a signed desired state of kind trial to a canary member's device: every
   * candidate of its profile (the reference among them), measured in `rounds` interleaved rounds.
   * The active model is not touched; the member stays waiting for its install.
   */
  | { kind: 'trial-dispatch'; deviceId: string; profile: string; candidates: string[]; referenceBundleId: string; rounds: number }
  /** A trial with no end within the plan's trial.timeoutSec: the member is left out of its profile's choice. */
  | { kind: 'trial-timeout'; deviceId: string; profile: string; state: 'dispatched' | 'running'; reason: string }
  /**
   * The profile's variant is chosen (core/variant-choice.ts), with every device's figures for
   * every candidate and the host's pick beside it: the profile's members without a bundle get it.
   */
  | { kind: 'choose-variant'; profile: string; choice: VariantChoice };

export type DecisionKind = Decision['kind'];

/** Which stored fields a decision changes. */
export interface DecisionPatch {
  rollout?: Partial<RolloutState>;
  wave?: { position: number; patch: Partial<WaveRecord>; insert?: WaveRecord };
  member?: { deviceId: string; patch: Partial<RolloutMember> };
  insertMember?: RolloutMember;
  /** Every member of `profile` still without a bundle (and not terminal) gets `bundleId`; the choice is kept. */
  choice?: { profile: string; bundleId: string; choice: VariantChoice };
}

/** Applies a choice to members (shared by the working copy, applyDecisions and the store). */
export function takesChoice(m: RolloutMember, profile: string): boolean {
  return m.profile === profile && m.bundleId === null && m.phase === 'waiting';
}

/** The stored changes of one decision taken at `now`. */
export function patchOf(d: Decision, now: EpochMs): DecisionPatch {
  switch (d.kind) {
    case 'start':
      return { rollout: { status: 'running', startedAt: now } };
    case 'open-wave': {
      const patch: Partial<WaveRecord> = { status: 'open', openedAt: now };
      return d.tail
        ? { wave: { position: d.wave, patch, insert: { position: d.wave, name: d.name, status: 'open', openedAt: now, passedAt: null, approvedAt: null, tail: true } } }
        : { wave: { position: d.wave, patch } };
    }
    case 'wave-passed':
      return { wave: { position: d.wave, patch: { status: 'passed', passedAt: now } } };
    case 'await-approval':
      return { rollout: { status: 'paused', pause: { code: 'AWAITING_APPROVAL', message: `wave ${d.wave} (${d.name}) waits for approval`, wave: d.wave, at: now } } };
    case 'pause':
      return { rollout: { status: 'paused', pause: d.reason } };
    case 'resume':
      return { rollout: { status: d.to, pause: null, resumedAt: now, overrides: d.overrides } };
    case 'approve':
      return { rollout: { status: 'running', pause: null, resumedAt: now, overrides: d.overrides }, wave: { position: d.wave, patch: { approvedAt: now } } };
    case 'finish':
      return { rollout: { status: d.status, pause: null, finishedAt: now } };
    case 'start-rollback':
      return { rollout: { status: 'rolling_back', pause: null, finishedAt: null, rollback: { cause: d.cause, at: now, ...(d.breaches.length ? { breaches: d.breaches } : {}) } } };
    case 'dispatch':
      return {
        member: {
          deviceId: d.deviceId,
          patch: {
            phase: 'dispatched', dispatchedAt: now, retryAt: null,
            // A new attempt: its facts start empty (reportDeviceAt stays, so late reports of the old one are dropped).
            reportState: null, reportCode: null, reportReason: null, startedAt: null, activeAt: null, endedAt: null, p95Ms: null,
            ...(d.cause === 'first' ? { firstDispatchedAt: now, previousBundle: d.previousBundle, baselineP95Ms: d.baselineP95Ms } : {}),
          },
        },
      };
    case 'withdraw':
      return {
        member: {
          deviceId: d.deviceId,
          patch: d.outcome === 'waiting'
            ? { phase: 'waiting', withdrawnAt: now, unreached: d.unreached }
            : { phase: 'cancelled', withdrawnAt: now, unreached: d.unreached, code: d.code, reason: d.reason, finishedAt: now },
        },
      };
    case 'retry-later':
      return { member: { deviceId: d.deviceId, patch: { phase: 'waiting', retryAt: d.retryAt, code: d.code } } };
    case 'mark-member':
      return { member: { deviceId: d.deviceId, patch: { phase: d.outcome, code: d.code, reason: d.reason, finishedAt: now, retryAt: null } } };
    case 'add-member':
      return { insertMember: d.member };
    case 'rollback-dispatch':
      return { member: { deviceId: d.deviceId, patch: { rollbackState: 'dispatched', rollbackDispatchedAt: now, rollbackCode: null } } };
    case 'trial-dispatch':
      return { member: { deviceId: d.deviceId, patch: { trialState: 'dispatched', trialAt: now, trialEndedAt: null, trialCode: null, trialReason: null } } };
    case 'trial-timeout':
      return { member: { deviceId: d.deviceId, patch: { trialState: 'timeout', trialEndedAt: now, trialCode: 'TRIAL_TIMEOUT', trialReason: d.reason } } };
    case 'choose-variant':
      return { choice: { profile: d.profile, bundleId: d.choice.bundleId, choice: d.choice } };
    case 'mark-rollback':
      return {
        member: {
          deviceId: d.deviceId,
          patch: d.outcome === 'resend' ? { rollbackState: null, rollbackCode: d.code } : { rollbackState: d.outcome, rollbackCode: d.code },
        },
      };
  }
}

/**
 * Applies decisions to a snapshot in memory and returns the new snapshot (inputs untouched):
 * what the executor's database holds after it has carried them out.
 */
export function applyDecisions(s: RolloutSnapshot, decisions: readonly Decision[], now: EpochMs): RolloutSnapshot {
  let rollout = s.rollout;
  const waves = s.waves.slice();
  const members = s.members.slice();
  const index = new Map(members.map((m, i) => [m.deviceId, i]));
  let trial = s.trial;
  for (const d of decisions) {
    const p = patchOf(d, now);
    if (p.rollout) rollout = { ...rollout, ...p.rollout };
    if (p.wave) {
      const i = waves.findIndex((w) => w.position === p.wave!.position);
      if (i >= 0) waves[i] = { ...waves[i]!, ...p.wave.patch };
      else if (p.wave.insert) waves.push(p.wave.insert);
    }
    if (p.member) {
      const i = index.get(p.member.deviceId);
      if (i !== undefined) members[i] = { ...members[i]!, ...p.member.patch };
    }
    if (p.insertMember && !index.has(p.insertMember.deviceId)) {
      index.set(p.insertMember.deviceId, members.length);
      members.push(p.insertMember);
    }
    if (p.choice) {
      for (let i = 0; i < members.length; i++) if (takesChoice(members[i]!, p.choice.profile)) members[i] = { ...members[i]!, bundleId: p.choice.bundleId };
      if (trial) trial = { ...trial, choices: { ...trial.choices, [p.choice.profile]: { choice: p.choice.choice, chosenAt: now } } };
    }
  }
  return { ...s, rollout, waves, members, ...(trial ? { trial } : {}) };
}
