/**
 * Folding what devices say into member and device rows. Reports arrive twice, late and out of
 * order (QoS 1 redelivery, reconnects, a retry racing the old attempt's last report), so
 * reports are ordered by the device's own clock (`at`): the agent stamps every report and
 * heartbeat from one clock, so a heartbeat built before the commit cannot undo the active report
 * that came after it, and a duplicate of an old attempt's failure cannot fail the new attempt.
 *
 * A device clock that jumps back further than REORDER_WINDOW_MS (a board without a battery-backed
 * clock booting before NTP) is taken as a reset, not as reordering: messages that far "behind"
 * are accepted, or the device would look silent until its clock caught up. The cost: a
 * duplicate older than that is taken as new. StatusReport carries no attempt number; if it ever
 * does (the desired state's seq), ordering should use it instead.
 *
 * These functions record facts only; what the facts mean (retry, fail, succeed) is decide()'s.
 */
import type { DeviceState, Heartbeat, StatusReport } from '@edgepack/protocol';
import type { EpochMs, RolloutMember } from '../records.js';
import type { RolloutDeviceView } from './rollout-snapshot.js';

const STATE_ORDER: Record<DeviceState, number> = {
  pending: 0, downloading: 1, verifying: 2, installing: 3, benchmarking: 4, active: 5, failed: 5, rolled_back: 5,
};

export type ReportFold =
  | { kind: 'apply'; member: Partial<RolloutMember>; device: Partial<RolloutDeviceView> }
  | { kind: 'ignore'; reason: string; device: Partial<RolloutDeviceView> };

/** Reordering by MQTT redelivery and reconnects is seconds; a bigger step back is a clock reset. */
export const REORDER_WINDOW_MS = 10 * 60_000;

/** `at` is older than `newest` by less than the reorder window: a late message, not a reset clock. */
function isStale(at: EpochMs, newest: EpochMs | null): boolean {
  return newest !== null && at < newest && newest - at < REORDER_WINDOW_MS;
}

function deviceClock(at: string, fallback: EpochMs): EpochMs {
  const t = Date.parse(at);
  return Number.isFinite(t) ? t : fallback;
}

/** What an 'active' report tells about the device, unless a newer message already told more. */
function activePatch(d: RolloutDeviceView | undefined, report: StatusReport, at: EpochMs, receivedAt: EpochMs): Partial<RolloutDeviceView> {
  if (report.state !== 'active' || !d || isStale(at, d.deviceClockAt)) return {};
  const p95 = report.result?.latencyMs.p95;
  return {
    activeBundle: report.bundleId,
    activeBundleSince: d.activeBundle === report.bundleId ? d.activeBundleSince ?? receivedAt : receivedAt,
    deviceClockAt: at,
    lastSeenAt: receivedAt,
    ...(p95 !== undefined && Number.isFinite(p95) ? { benchmark: { bundleId: report.bundleId, p95Ms: p95 } } : {}),
  };
}

/**
 * Folds a status report (already validated, from the device it names) into its member. A report
 * on the member's bundle is about the install; one on its previous bundle, while a rollback
 * was sent, is about the rollback.
 */
export function foldStatusReport(m: RolloutMember, d: RolloutDeviceView | undefined, report: StatusReport, receivedAt: EpochMs): ReportFold {
  if (report.rolloutId !== m.rolloutId) return { kind: 'ignore', reason: `report is for rollout ${report.rolloutId}`, device: {} };
  if (report.deviceId !== m.deviceId) return { kind: 'ignore', reason: `report names device ${report.deviceId}`, device: {} };
  const at = deviceClock(report.at, receivedAt);
  const device = activePatch(d, report, at, receivedAt);
  if (isStale(at, m.reportDeviceAt)) return { kind: 'ignore', reason: `stale report (${report.at}) after a newer one`, device: {} };
  const p95 = report.result?.latencyMs.p95;
  const figure = p95 !== undefined && Number.isFinite(p95) ? { p95Ms: p95 } : {};

  if (m.bundleId !== null && report.bundleId === m.bundleId) {
    if (m.phase !== 'waiting' && m.phase !== 'dispatched') {
      return { kind: 'ignore', reason: `member already ${m.phase}`, device };
    }
    // Same device time: only a later step of the same attempt (two transitions in one millisecond)
    // counts; after a new dispatch reset the attempt, it is the old attempt's report.
    if (m.reportDeviceAt === at && (m.reportState === null || STATE_ORDER[report.state] <= STATE_ORDER[m.reportState])) {
      return { kind: 'ignore', reason: 'duplicate report', device };
    }
    const patch: Partial<RolloutMember> = { reportState: report.state, reportCode: report.code ?? null, reportReason: report.reason ?? null, reportDeviceAt: at, ...figure };
    if (m.startedAt === null) {
      patch.startedAt = receivedAt;
      patch.attempts = m.attempts + 1;
    }
    if (report.state === 'active' && m.activeAt === null) patch.activeAt = receivedAt;
    if (report.state === 'failed' || report.state === 'rolled_back') patch.endedAt = receivedAt;
    // SUPERSEDED is the agent's answer for a desired state it replaced by a newer one before
    // starting it: for a withdrawn member that confirms the withdrawal, it does not revive it.
    if (m.phase === 'waiting' && report.code === 'SUPERSEDED') return { kind: 'ignore', reason: 'the device confirms the withdrawal', device };
    // Withdrawn (unanswered) or waiting for a retry, yet the device is at it: it is underway after all.
    if (m.phase === 'waiting') {
      patch.phase = 'dispatched';
      patch.retryAt = null;
    }
    return { kind: 'apply', member: patch, device };
  }

  if (m.previousBundle !== null && report.bundleId === m.previousBundle && m.rollbackState === 'dispatched') {
    const seen = { reportDeviceAt: at, rollbackReportAt: receivedAt };
    if (report.state === 'active') return { kind: 'apply', member: { ...seen, rollbackState: 'done', rollbackCode: null }, device };
    if (report.state === 'failed' || report.state === 'rolled_back') {
      return { kind: 'apply', member: { ...seen, rollbackState: 'failed', rollbackCode: report.code ?? 'ROLLBACK_FAILED' }, device };
    }
    return { kind: 'apply', member: seen, device };
  }
  return { kind: 'ignore', reason: `report is for bundle ${report.bundleId}, not this member's`, device };
}

/** Folds a heartbeat into the device row. A heartbeat older (device clock) than the newest message only proves the device is alive. */
export function foldHeartbeat(d: RolloutDeviceView, hb: Heartbeat, receivedAt: EpochMs): Partial<RolloutDeviceView> {
  const alive: Partial<RolloutDeviceView> = { lastSeenAt: receivedAt, ...(d.online ? {} : { online: true, onlineSince: receivedAt }) };
  const at = deviceClock(hb.at, receivedAt);
  if (isStale(at, d.deviceClockAt)) return alive;
  const changed = d.activeBundle !== hb.activeBundle;
  const p95 = hb.lastBenchmark?.latencyMs.p95;
  // The heartbeat does not say which bundle lastBenchmark measured; trust it only for a bundle
  // already known to be active (not one that just changed) that has no figure of its own yet.
  const benchmark = !changed && hb.activeBundle !== null && p95 !== undefined && Number.isFinite(p95) && d.benchmark?.bundleId !== hb.activeBundle
    ? { benchmark: { bundleId: hb.activeBundle, p95Ms: p95 } } : {};
  return {
    ...alive,
    lastHeartbeatAt: receivedAt,
    deviceClockAt: at,
    activeBundle: hb.activeBundle,
    activeBundleSince: changed ? receivedAt : d.activeBundleSince ?? receivedAt,
    ...benchmark,
  };
}

/** Folds presence (the device's own online message, or the broker's last will / the offline sweep). */
export function foldPresence(d: RolloutDeviceView, online: boolean, at: EpochMs): Partial<RolloutDeviceView> {
  if (online) return d.online ? { lastSeenAt: at } : { online: true, onlineSince: at, lastSeenAt: at };
  return d.online ? { online: false } : {};
}
