/**
 * One open rollout per device per stream. The database enforces it (a partial unique index on
 * open members); this is the rule the service applies before inserting, so a conflict is a
 * clear 409 listing the devices rather than a constraint error.
 *
 * Without supersede: any device with an open member in another rollout of the stream → 409.
 * With supersede: those not started are taken over (withdrawn from the old rollout); those
 * started finish where they are and join the new rollout as skipped (STARTED_IN_OTHER_ROLLOUT).
 */
import type { RolloutMember, RolloutStatus } from '../records.js';
import type { Decision } from './rollout-decisions.js';
import { hasStarted, isTouched } from './rollout-member.js';

/** An open member of another rollout of the same stream, as the executor reads it. */
export interface OpenMemberRef {
  rolloutId: string;
  deviceId: string;
  /** The device has reported on that rollout's bundle: it cannot be taken over. */
  started: boolean;
}

/**
 * Whether a member still holds its device's stream: waiting or dispatched; in a rollout that is
 * rolling back (or rolled back), touched and not yet returned. This is the predicate of the
 * partial unique index.
 */
export function holdsStream(m: RolloutMember, status: RolloutStatus): boolean {
  // In a rollback only the rollback counts: a touched member's install, even one still marked
  // dispatched, was overtaken by the return to its previous bundle, which ends the hold once done.
  if ((status === 'rolling_back' || status === 'rolled_back') && isTouched(m)) return m.rollbackState === null || m.rollbackState === 'dispatched';
  return m.phase === 'waiting' || m.phase === 'dispatched';
}

export function openMemberRef(m: RolloutMember, status: RolloutStatus): OpenMemberRef | null {
  if (!holdsStream(m, status)) return null;
  // In a rollback only the rollback counts: one not sent yet has started nothing the new rollout
  // would disturb, so it can be taken over; one sent is under way on the device.
  const rollingBack = status === 'rolling_back' || status === 'rolled_back';
  const started = rollingBack ? m.rollbackState === 'dispatched' : hasStarted(m);
  return { rolloutId: m.rolloutId, deviceId: m.deviceId, started };
}

export type ConflictResult =
  | { ok: true; takeOver: OpenMemberRef[]; leftOut: OpenMemberRef[] }
  | { ok: false; code: 'ROLLOUT_CONFLICT'; message: string; devices: OpenMemberRef[] };

/** The conflict rule for a new rollout of `deviceIds` against the stream's `open` members of other rollouts. */
export function resolveConflicts(deviceIds: readonly string[], open: readonly OpenMemberRef[], supersede: boolean): ConflictResult {
  const wanted = new Set(deviceIds);
  const conflicts = open.filter((o) => wanted.has(o.deviceId)).sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
  if (conflicts.length === 0) return { ok: true, takeOver: [], leftOut: [] };
  if (!supersede) {
    const list = conflicts.slice(0, 20).map((c) => `${c.deviceId} (${c.rolloutId})`).join(', ');
    return {
      ok: false, code: 'ROLLOUT_CONFLICT', devices: conflicts,
      message: `${conflicts.length} devices already have an open rollout of this stream: ${list}${conflicts.length > 20 ? ', …' : ''}; send supersede: true to take over those not started`,
    };
  }
  return { ok: true, takeOver: conflicts.filter((c) => !c.started), leftOut: conflicts.filter((c) => c.started) };
}

/** The old rollout's decisions when `byRolloutId` takes over `deviceIds` (members not started). */
export function supersedeDecisions(members: readonly RolloutMember[], status: RolloutStatus, deviceIds: ReadonlySet<string>, byRolloutId: string): Decision[] {
  const out: Decision[] = [];
  const reason = `taken over by rollout ${byRolloutId}`;
  for (const m of members) {
    if (!deviceIds.has(m.deviceId)) continue;
    const ref = openMemberRef(m, status);
    if (!ref || ref.started) continue;
    if (status === 'rolling_back' || status === 'rolled_back') out.push({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'superseded', code: 'SUPERSEDED', reason });
    else if (m.phase === 'dispatched') out.push({ kind: 'withdraw', deviceId: m.deviceId, code: 'SUPERSEDED', reason, outcome: 'cancelled', dispatchedAt: m.dispatchedAt, unreached: m.unreached });
    else if (m.phase === 'waiting') out.push({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'SUPERSEDED', reason });
  }
  return out;
}
