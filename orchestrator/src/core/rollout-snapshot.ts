/**
 * What decide() reads: plain rows, no functions, built by the executor with a handful of
 * queries (the rollout row, its waves, its members ordered by `order`, the devices they name,
 * and for continuous rollouts the target devices that are not members yet). Nothing in it is
 * derived; everything derived is computed by core/ from it, the same way on every call.
 */
import type { EpochMs, RolloutMember, RolloutState, WaveRecord } from '../records.js';

/** What the rollout needs to know of a device: presence, what it runs, and how fast it ran before. */
export interface RolloutDeviceView {
  id: string;
  profile: string;
  tags: string[];
  /** Presence (the device's own message and the broker's last will), and the cron offline sweep. */
  online: boolean;
  /** When presence last went from offline to online: a withdrawn device is tried again after it. */
  onlineSince: EpochMs | null;
  lastSeenAt: EpochMs | null;
  /** The bundle the device runs, from its newest status report or heartbeat (core/rollout-reports.ts keeps these four). */
  activeBundle: string | null;
  /** When activeBundle took its current value: a bake is counted from here, a revert is seen here. */
  activeBundleSince: EpochMs | null;
  /** Device clock of the newest report or heartbeat folded in: older heartbeats cannot undo newer reports. */
  deviceClockAt: EpochMs | null;
  lastHeartbeatAt: EpochMs | null;
  /** The device's last benchmark on its active bundle (heartbeat lastBenchmark): the baseline recorded at dispatch. */
  benchmark: { bundleId: string; p95Ms: number } | null;
  /** An operator holds the device on what it runs: skipped, never dispatched. (No pin exists yet: false.) */
  pinned: boolean;
  revoked: boolean;
  /**
   * The rollout whose desired state the device was sent last (null or absent: unknown). When it
   * is another rollout, what the device runs now is that rollout's doing: a member that sees its
   * previous bundle come back is replaced, not reverted.
   */
  desiredRolloutId?: string | null;
  /** Issue 11 hook: recent live-inference figures per bundle, newest window last. Absent = none known. */
  live?: LiveHealth[];
}

/** Issue 11: one device's live inference health on one bundle over recent telemetry windows. */
export interface LiveHealth {
  bundleId: string;
  requests: number;
  /** (invalid + timeout + rejected + error) ÷ requests. */
  errorRate: number;
  p95Ms: number | null;
  windowEnd: EpochMs;
}

export interface RolloutSnapshot {
  rollout: RolloutState;
  /** One row per planned wave, in position order, plus the tail wave once opened. */
  waves: WaveRecord[];
  /** Every member, sorted by `order` (the executor's ORDER BY; decide sorts a copy otherwise). */
  members: RolloutMember[];
  /** Every member's device and every candidate, by id. A member whose device is missing counts as revoked. */
  devices: Record<string, RolloutDeviceView>;
  /** Continuous membership: ids of devices in the target that are not members (empty otherwise). */
  candidates: string[];
  /** The build's bundle per profile (profile → bundle id), for members that join late. */
  bundles: Record<string, string>;
}
