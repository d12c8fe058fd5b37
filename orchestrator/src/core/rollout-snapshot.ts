/**
 * What decide() reads: plain rows, no functions, built by the executor with a handful of
 * queries (the rollout row, its waves, its members ordered by `order`, the devices they name,
 * and for continuous rollouts the target devices that are not members yet). Nothing in it is
 * derived; everything derived is computed by core/ from it, the same way on every call.
 */
import type { EpochMs, RolloutMember, RolloutState, TrialResultRecord, WaveRecord } from '../records.js';
import type { ChoiceCandidate, VariantChoice } from './variant-choice.js';

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
  /** Issue 10: present when the build's selection is `device` (its candidates, stored trial results, the choices made). */
  trial?: TrialSnapshot;
}

/** One profile's candidates in a device build. */
export interface TrialProfile {
  /** In the profile's order of preference, the reference among them. */
  candidates: ChoiceCandidate[];
  referenceBundleId: string;
  /** What host selection would have chosen (shown beside the devices' choice). */
  hostPick: { bundleId: string; precision: string } | null;
  /** The bundles' acceptance p95 (the latency budget of the choice rule); null: none. */
  budgetP95Ms: number | null;
}

/** A choice made in this rollout, as stored. */
export interface ChosenVariant {
  choice: VariantChoice;
  chosenAt: EpochMs;
}

export interface TrialSnapshot {
  profiles: Record<string, TrialProfile>;
  /** Stored results for the build's candidate bundles, of every rollout (one per profile, bundle and device). */
  results: TrialResultRecord[];
  /** profile → the choice this rollout made. */
  choices: Record<string, ChosenVariant>;
}
