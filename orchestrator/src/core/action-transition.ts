import { TERMINAL_DEVICE_STATES, type DeviceState, type StatusReport } from '@edgepack/protocol';
import type { ActionRecord, RolloutStatus } from '../records.js';

const ORDER: Record<DeviceState, number> = {
  pending: 0, downloading: 1, verifying: 2, installing: 3, benchmarking: 4, active: 5, failed: 5, rolled_back: 5,
};

export type ActionDecision = { kind: 'apply'; next: ActionRecord } | { kind: 'ignore'; reason: string };

/**
 * Decides what a device's status report does to its action. Reports can arrive twice or out
 * of order (QoS 1 redelivery, reconnects), so only forward moves apply and a terminal state
 * is final for that action.
 */
export function applyStatusReport(action: ActionRecord, report: StatusReport, at: string): ActionDecision {
  if (report.rolloutId !== action.rolloutId) return { kind: 'ignore', reason: `report is for rollout ${report.rolloutId}` };
  if (report.bundleId !== action.bundleId) return { kind: 'ignore', reason: `report is for bundle ${report.bundleId}, action expects ${action.bundleId}` };
  if (TERMINAL_DEVICE_STATES.includes(action.state)) return { kind: 'ignore', reason: `action already ${action.state}` };
  if (ORDER[report.state] <= ORDER[action.state]) return { kind: 'ignore', reason: `stale state ${report.state} after ${action.state}` };
  return {
    kind: 'apply',
    next: {
      ...action,
      state: report.state,
      code: report.code ?? null,
      reason: report.reason ?? null,
      result: report.result ?? action.result,
      updatedAt: at,
    },
  };
}

/** A rollout runs until every action is terminal; it succeeds only if every device is active. */
export function rolloutStatus(actions: readonly Pick<ActionRecord, 'state'>[]): RolloutStatus {
  if (actions.some((a) => !TERMINAL_DEVICE_STATES.includes(a.state))) return 'running';
  return actions.every((a) => a.state === 'active') ? 'succeeded' : 'failed';
}

/**
 * Closes an action the device will never finish for us: a newer rollout replaced it, or the
 * device was revoked. Without this the rollout would show `running` forever.
 */
export function closeAction(action: ActionRecord, code: 'SUPERSEDED' | 'DEVICE_REVOKED', reason: string, at: string): ActionRecord {
  return { ...action, state: 'failed', code, reason, updatedAt: at };
}
