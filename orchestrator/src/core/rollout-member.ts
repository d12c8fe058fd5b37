/** Making members, and the rules that keep a device out of a rollout before anything is sent. */
import type { EpochMs, RolloutMember, RolloutTarget } from '../records.js';
import type { RolloutDeviceView } from './rollout-snapshot.js';

/** Target criteria narrow each other: listed ids ∧ every tag ∧ profile in the list. An empty target is the whole fleet. */
export function matchesTarget(device: Pick<RolloutDeviceView, 'id' | 'tags' | 'profile'>, target: RolloutTarget): boolean {
  return (!target.deviceIds || target.deviceIds.includes(device.id)) &&
    (!target.tags || target.tags.every((t) => device.tags.includes(t))) &&
    (!target.profiles || target.profiles.includes(device.profile));
}

export type SkipCode = 'NO_ARTIFACT' | 'PINNED' | 'ALREADY_ACTIVE' | 'STARTED_IN_OTHER_ROLLOUT';

/** Why a device is skipped rather than dispatched, or null if it may be dispatched. */
export function skipReason(device: RolloutDeviceView, bundleId: string | null): { code: SkipCode; reason: string } | null {
  if (bundleId === null) return { code: 'NO_ARTIFACT', reason: `the build has no bundle for profile ${device.profile}` };
  if (device.pinned) return { code: 'PINNED', reason: 'the device is pinned to what it runs' };
  if (device.activeBundle === bundleId) return { code: 'ALREADY_ACTIVE', reason: `the device already runs ${bundleId}` };
  return null;
}

/**
 * A fresh member row: waiting, untouched, or skipped with its reason (`busyIn`: the device has
 * started in that rollout of the stream). `pending`: the profile's bundle is not chosen yet (a
 * device build, issue 10): bundleId null is then no reason to skip it.
 */
export function newMember(f: {
  rolloutId: string; device: RolloutDeviceView; wave: number; order: number; bundleId: string | null; joinedAt: EpochMs; late: boolean; busyIn?: string;
  pending?: boolean;
}): RolloutMember {
  const skip = f.busyIn !== undefined
    ? { code: 'STARTED_IN_OTHER_ROLLOUT' as const, reason: `the device has started rollout ${f.busyIn} of this stream; it finishes there` }
    : f.pending && f.bundleId === null ? (f.device.pinned ? skipReason(f.device, 'pending') : null) : skipReason(f.device, f.bundleId);
  return {
    rolloutId: f.rolloutId, deviceId: f.device.id, profile: f.device.profile, wave: f.wave, order: f.order, bundleId: f.bundleId,
    step: 'install', phase: skip ? 'skipped' : 'waiting', code: skip?.code ?? null, reason: skip?.reason ?? null,
    joinedAt: f.joinedAt, late: f.late,
    attempts: 0, dispatchedAt: null, firstDispatchedAt: null, previousBundle: null, baselineP95Ms: null,
    retryAt: null, withdrawnAt: null, unreached: 0,
    reportState: null, reportCode: null, reportReason: null, reportDeviceAt: null,
    startedAt: null, activeAt: null, endedAt: null, p95Ms: null, finishedAt: skip ? f.joinedAt : null,
    rollbackState: null, rollbackDispatchedAt: null, rollbackReportAt: null, rollbackCode: null,
    trialState: null, trialAt: null, trialEndedAt: null, trialCode: null, trialReason: null,
  };
}

export const TERMINAL_PHASES: ReadonlySet<RolloutMember['phase']> = new Set(['succeeded', 'failed', 'skipped', 'cancelled', 'lost']);

export function isTerminal(m: Pick<RolloutMember, 'phase'>): boolean {
  return TERMINAL_PHASES.has(m.phase);
}

/** The member has been sent something at least once: a fleet rollback must return it. */
export function isTouched(m: Pick<RolloutMember, 'firstDispatchedAt'>): boolean {
  return m.firstDispatchedAt !== null;
}

/** The device has reported on this member's bundle: it has started, and a superseding rollout may not take it over. */
export function hasStarted(m: Pick<RolloutMember, 'startedAt' | 'activeAt' | 'phase'>): boolean {
  return m.startedAt !== null || m.activeAt !== null;
}
