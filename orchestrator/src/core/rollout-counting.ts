/**
 * The counting rules: what each member is, right now, from its stored row, its device and the
 * clock. One function per rule. Counting counts devices, never attempts: a member is in exactly
 * one category whatever it went through.
 *
 *   waiting          not dispatched yet (or back after a retryable failure), device online
 *   waiting_offline  not dispatched, device offline (presence / last will): never dispatched while so
 *   unreached        dispatched, no report within ackSec: withdrawn, waiting for a sign of life
 *   dispatched       desired state sent, no report yet
 *   in_progress      reported, not ended
 *   baking           reported active, heartbeats have not yet shown the bundle for bakeSec
 *   lost             reported active, then went offline during the bake
 *   succeeded        active and heartbeats showed the new bundle for bakeSec
 *   failed           failed/rolled_back after the last attempt, no end within inProgressSec, or reverted after commit
 *   skipped          already on the bundle, pinned, or no bundle for its profile
 *   cancelled        withdrawn by cancel, supersede, rollback or revocation before it started; counts nowhere
 *
 * `waiting_offline`, `unreached` and `lost` are settled for the gates: a wave passes without
 * them, and they are never failures. Stored phases change only through decisions
 * (core/rollout-decisions.ts); the rest is derived here on every call.
 */
import type { EpochMs, RolloutMember, RolloutPlan } from '../records.js';
import type { RolloutDeviceView } from './rollout-snapshot.js';

export type MemberCategory =
  | 'waiting' | 'waiting_offline' | 'unreached' | 'dispatched' | 'in_progress' | 'baking' | 'lost'
  | 'succeeded' | 'failed' | 'skipped' | 'cancelled';

/** Categories a wave can pass with: nothing more will happen to them soon. */
export const SETTLED: ReadonlySet<MemberCategory> = new Set(['waiting_offline', 'unreached', 'lost', 'succeeded', 'failed', 'skipped', 'cancelled']);

/** The device cannot be reached: offline, revoked, or gone from the fleet. */
export function isOffline(d: RolloutDeviceView | undefined): boolean {
  return !d || d.revoked || !d.online;
}

/** Withdrawn as unreached after its latest dispatch and not dispatched since. */
export function isUnreached(m: RolloutMember): boolean {
  return m.phase === 'waiting' && m.unreached > 0 && m.withdrawnAt !== null && m.retryAt === null &&
    m.startedAt === null && (m.dispatchedAt === null || m.withdrawnAt >= m.dispatchedAt);
}

/** Dispatched, and no report arrived within ackSec: withdraw it, it goes back to waiting. */
export function ackExpired(m: RolloutMember, plan: Pick<RolloutPlan, 'timeouts'>, now: EpochMs): boolean {
  return m.phase === 'dispatched' && m.startedAt === null && m.dispatchedAt !== null && now - m.dispatchedAt >= plan.timeouts.ackSec * 1000;
}

/** The device reported failed or rolled_back for the current attempt. */
export function attemptFailed(m: RolloutMember): boolean {
  return m.phase === 'dispatched' && (m.reportState === 'failed' || m.reportState === 'rolled_back');
}

/** Started and neither active nor ended within inProgressSec: the bricked-device signal. */
export function inProgressExpired(m: RolloutMember, plan: Pick<RolloutPlan, 'timeouts'>, now: EpochMs): boolean {
  return m.phase === 'dispatched' && m.startedAt !== null && m.activeAt === null && !attemptFailed(m) &&
    now - m.startedAt >= plan.timeouts.inProgressSec * 1000;
}

/**
 * The device runs the member's bundle and has since it went active, and its heartbeats have
 * shown it for bakeSec (counted from the later of the active report and the start of the
 * device's current bundle). With bakeSec 0 the active report alone suffices.
 */
export function bakeDone(m: RolloutMember, d: RolloutDeviceView | undefined, bakeSec: number): boolean {
  if (m.phase !== 'dispatched' || m.activeAt === null || !d || d.activeBundle !== m.bundleId) return false;
  if (bakeSec <= 0) return true;
  const from = Math.max(m.activeAt, d.activeBundleSince ?? m.activeAt);
  return d.lastHeartbeatAt !== null && d.lastHeartbeatAt - from >= bakeSec * 1000;
}

/** Another rollout's desired state is the device's newest: the device does what that rollout asked. */
export function takenByOther(m: RolloutMember, d: RolloutDeviceView | undefined): boolean {
  return !!d && d.desiredRolloutId !== undefined && d.desiredRolloutId !== null && d.desiredRolloutId !== m.rolloutId;
}

/**
 * After going active, the device shows its previous bundle again, newer than the active report,
 * and no other rollout asked for it: it reverted after commit (a crash loop, the agent's own
 * rollback, a hand-made revert).
 */
export function revertedAfterCommit(m: RolloutMember, d: RolloutDeviceView | undefined): boolean {
  if (!d || m.activeAt === null || (m.phase !== 'dispatched' && m.phase !== 'succeeded')) return false;
  return d.activeBundle !== m.bundleId && d.activeBundle === m.previousBundle && d.activeBundleSince !== null && d.activeBundleSince > m.activeAt &&
    !takenByOther(m, d);
}

/**
 * After going active, the device runs another bundle that something else put there: neither this
 * one nor its previous one, or its previous one at another rollout's request.
 */
export function replacedAfterCommit(m: RolloutMember, d: RolloutDeviceView | undefined): boolean {
  if (!d || m.activeAt === null || m.phase !== 'dispatched') return false;
  return d.activeBundle !== m.bundleId && (d.activeBundle !== m.previousBundle || takenByOther(m, d)) && d.activeBundleSince !== null && d.activeBundleSince > m.activeAt;
}

/** Which category a member is in now. */
export function classify(m: RolloutMember, d: RolloutDeviceView | undefined): MemberCategory {
  switch (m.phase) {
    case 'succeeded': case 'failed': case 'skipped': case 'cancelled': case 'lost':
      return m.phase;
    case 'waiting':
      if (isUnreached(m)) return 'unreached';
      return isOffline(d) ? 'waiting_offline' : 'waiting';
    case 'dispatched':
      if (m.startedAt === null && m.activeAt === null) return 'dispatched';
      if (m.activeAt === null) return 'in_progress';
      return isOffline(d) ? 'lost' : 'baking';
  }
}

/** A golden failure: the device's own golden check disagreed with the reference outputs. */
export function isGoldenFailure(m: RolloutMember): boolean {
  return m.phase === 'failed' && m.code === 'GOLDEN_MISMATCH';
}

/** The member's p95 regression against its own baseline (p95 new ÷ p95 previous − 1), or null without both figures. */
export function p95Regression(m: RolloutMember): number | null {
  if (m.p95Ms === null || m.baselineP95Ms === null || !(m.baselineP95Ms > 0) || !Number.isFinite(m.p95Ms)) return null;
  return m.p95Ms / m.baselineP95Ms - 1;
}
