import type { ArtifactRecord, DeviceRecord, RolloutTarget } from '../records.js';
import { EdgepackError } from '@edgepack/protocol';
import { matchesTarget } from './rollout-member.js';

/** One device's part in a rollout, decided before anything is sent. */
export interface PlannedAction {
  deviceId: string;
  groupPosition: number;
  bundleId: string | null;
  state: 'pending' | 'failed';
  code?: string;
  reason?: string;
}

/** The one-wave plan of the rollouts made before waves (records.ts RolloutPlan is the wave plan). */
export interface SingleWavePlan {
  groups: number[];
  actions: PlannedAction[];
}

/**
 * Plans a rollout as data; an executor then persists it and publishes desired states.
 * Target criteria narrow each other (ids ∧ all tags ∧ profile in list); an empty target is the
 * whole fleet. A device whose profile has no built artifact is planned as failed with the
 * build's reason, so the operator sees why rather than a device that never moves.
 * Everything goes in one group (wave 0). Superseded by core/rollout-waves.ts assignWaves for
 * staged rollouts; kept until the executor switches over.
 */
export function planRollout(input: { target: RolloutTarget; devices: readonly DeviceRecord[]; artifacts: readonly ArtifactRecord[] }): SingleWavePlan {
  const { target, devices, artifacts } = input;
  const live = devices.filter((d) => !d.revokedAt);
  if (target.deviceIds) {
    const known = new Set(live.map((d) => d.id));
    const unknown = target.deviceIds.filter((id) => !known.has(id));
    if (unknown.length) throw new EdgepackError('DEVICE_NOT_FOUND', `unknown or revoked device ids: ${unknown.join(', ')}`);
  }
  const selected = live.filter((d) => matchesTarget(d, target));
  if (selected.length === 0) throw new EdgepackError('ROLLOUT_NO_TARGETS', 'the target selects no devices');

  const byProfile = new Map(artifacts.map((a) => [a.profile, a]));
  const actions = selected.map((d): PlannedAction => {
    const a = byProfile.get(d.profile);
    if (a?.status === 'built' && a.bundleId) return { deviceId: d.id, groupPosition: 0, bundleId: a.bundleId, state: 'pending' };
    const why = !a ? `build has no artifact for profile ${d.profile}` : `artifact for profile ${d.profile} is ${a.status}${a.reason ? `: ${a.reason}` : ''}`;
    return { deviceId: d.id, groupPosition: 0, bundleId: null, state: 'failed', code: 'NO_ARTIFACT', reason: why };
  });
  return { groups: [0], actions };
}
