/**
 * The orchestrator's record types, one per noun (after hawkBit: Device, Model, Build, Artifact,
 * Bundle, Rollout, RolloutGroup, Action). Plain data, no behaviour: core/ decides over these,
 * db/ stores them, http/ renders views of them. This module imports nothing but wire types
 * from protocol/, so the core can depend on it without reaching the database.
 */
import type { BenchmarkResult, DeviceFacts, DeviceState, Heartbeat, Manifest, TensorSpec, TrialAgreement } from '@edgepack/protocol';

export interface DeviceRecord {
  id: string;
  name: string;
  profile: string;
  publicKey: string;
  tags: string[];
  facts: DeviceFacts;
  status: 'online' | 'offline';
  activeBundle: string | null;
  lastSeen: string | null;
  lastHeartbeat: Heartbeat | null;
  desiredSeq: number;
  createdAt: string;
  revokedAt: string | null;
}

export interface ModelRecord {
  id: string;
  name: string;
  version: string;
  sha256: string;
  sizeBytes: number;
  format: 'onnx' | 'tflite';
  opset: number | null;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  details: Record<string, unknown>;
  createdAt: string;
}

export type BuildStatus = 'queued' | 'running' | 'succeeded' | 'failed';
export type ArtifactStatus = 'pending' | 'built' | 'skipped' | 'failed';

export interface ArtifactRecord {
  profile: string;
  status: ArtifactStatus;
  format: string | null;
  precision: string | null;
  bundleId: string | null;
  sizeBytes: number | null;
  reason: string | null;
  details: Record<string, unknown>;
}

/** Per-build choices an operator can make; absent fields fall back to the profile's. */
export interface BuildOptions {
  acceptance?: { p95LatencyMs?: number };
  /** Dataset ids used for calibration and evaluation. */
  datasets?: { calibration?: string; evaluation?: string; labels?: string };
}

export type DatasetKind = 'calibration' | 'evaluation' | 'labels';

export interface DatasetRecord {
  id: string;
  modelId: string;
  kind: DatasetKind;
  sha256: string;
  sizeBytes: number;
  dtype: string;
  shape: number[];
  createdAt: string;
}

export interface BuildProgress {
  step: string;
  done: number;
  total: number;
}

/**
 * How a build chooses each profile's variant: `host` picks one on the build host (the first
 * candidate in the profile's order that meets every budget, host latency included); `device`
 * keeps every candidate that meets the host's accuracy, size and RAM budgets as a bundle of its
 * own, and a rollout's canary devices measure them to choose (issue 10).
 */
export type BuildSelection = 'host' | 'device';

export interface BuildRecord {
  id: string;
  modelId: string;
  options: BuildOptions;
  selection: BuildSelection;
  status: BuildStatus;
  profiles: string[];
  error: string | null;
  progress: BuildProgress | null;
  createdAt: string;
  finishedAt: string | null;
  artifacts: ArtifactRecord[];
}

/** One candidate variant a `device` build kept for a profile: a signed bundle of its own, with the host's figures. */
export interface BuildCandidateRecord {
  buildId: string;
  profile: string;
  /** The profile's order of preference (0 first). */
  position: number;
  bundleId: string;
  format: string;
  precision: string;
  /** What host selection would have chosen for the profile. */
  hostPick: boolean;
  /** The reference of the trial (fp32; outputs of the others are compared with its outputs). */
  reference: boolean;
  reason: string;
  /** The host's figures (variant-selection.ts CandidateMetrics), as stored. */
  metrics: Record<string, unknown>;
}

/** What one device measured of one candidate in a trial (kept per profile, bundle and device; the newest measurement wins). */
export interface TrialResultRecord {
  profile: string;
  bundleId: string;
  deviceId: string;
  /** The rollout whose trial measured it. */
  rolloutId: string;
  precision: string;
  result: BenchmarkResult | null;
  agreement: TrialAgreement | null;
  /** Set when the candidate was not measured or failed its golden check on the device. */
  code: string | null;
  reason: string | null;
  measuredAt: EpochMs;
}

export interface BundleRecord {
  id: string;
  buildId: string;
  profile: string;
  manifest: Manifest;
  signature: string;
  createdAt: string;
}

/**
 * scheduled → running ⇄ paused → succeeded | cancelled, and from any of them rolling_back →
 * rolled_back. `failed` is the status of the one-wave rollouts made before waves existed
 * (core/action-transition.ts); the wave engine (core/rollout-decide.ts) never sets it.
 */
export type RolloutStatus = 'scheduled' | 'running' | 'paused' | 'succeeded' | 'cancelled' | 'rolling_back' | 'rolled_back' | 'failed';

export interface RolloutTarget {
  deviceIds?: string[];
  tags?: string[];
  profiles?: string[];
}

export interface RolloutRecord {
  id: string;
  buildId: string;
  status: RolloutStatus;
  target: RolloutTarget;
  createdAt: string;
  finishedAt: string | null;
  /** Staged rollouts: the stream (one open rollout per device and stream) and the pause reason while paused. Null for one-wave rollouts. */
  stream: string | null;
  pause: PauseReason | null;
  /** false: a one-wave rollout made before waves (no plan, actions instead of members). */
  staged: boolean;
}

export interface ActionRecord {
  rolloutId: string;
  deviceId: string;
  groupPosition: number;
  bundleId: string | null;
  state: DeviceState;
  code: string | null;
  reason: string | null;
  result: BenchmarkResult | null;
  updatedAt: string;
}

// ---------------------------------------------------------------------------------------------
// Staged rollouts (waves, gates, rollback). The engine is core/rollout-decide.ts; these are the
// rows it decides over and the figures it explains itself with. Times the engine compares are
// EpochMs (milliseconds since 1970, orchestrator clock) so that a decide() over 1,000 members
// parses no dates; store them as INTEGER columns.
// ---------------------------------------------------------------------------------------------

export type EpochMs = number;

export type RolloutMembership = 'snapshot' | 'continuous';

/** Exactly one of the two: a fixed number of devices, or a percentage of the target at start. */
export type WaveSize = { count: number } | { percent: number };

/** Thresholds a wave (and each profile within it) is judged by. See core/rollout-gates.ts. */
export interface GatePolicy {
  /**
   * Members that must have finished (succeeded or failed) before ratios are judged and before
   * the wave can pass. null: half of the group's counted members, rounded up (at least 1).
   * A number larger than the group is capped at the group's size.
   */
  minExecuted: number | null;
  minSuccessRatio: number;
  maxFailureRatio: number;
  /** Failures tolerated at any time. null: ⌊maxFailureRatio × counted members⌋. */
  maxFailures: number | null;
  /** Median over devices of (p95 new ÷ p95 on its previous bundle − 1). */
  maxP95Regression: number;
  maxGoldenFailures: number;
  maxLostRatio: number;
  /**
   * Issue 11: live health during bake, when the plan asks for it (`gate.live` in the request):
   * the gate also checks each device's live figures against its own live figures on its
   * previous bundle (telemetry/live-health.ts fills RolloutDeviceView.live).
   */
  live?: LiveGatePolicy;
}

export interface LiveGatePolicy {
  /** Median over devices of (live error rate new − live error rate previous). */
  maxErrorRateIncrease: number;
  /** Median over devices of (live p95 new ÷ live p95 previous − 1). */
  maxP95Regression: number;
  /** Requests a device's window must hold before its live figures count. */
  minRequests: number;
}

/** One wave of the plan, with every default applied and the rollout's gate merged in. */
export interface WavePlan {
  name: string;
  size: WaveSize;
  requireApproval: boolean;
  bakeSec: number;
  gate: GatePolicy;
}

export interface RolloutWindow {
  /** Five or six-field cron (seconds optional), matched by cron-parser in `tz`. */
  cron: string;
  /** Elapsed minutes after each fire time during which first dispatches may start. */
  durationMin: number;
  /** IANA time zone name, e.g. Europe/Berlin. */
  tz: string;
}

export interface RolloutSchedule {
  /** ISO 8601 with offset, as given; null = start at once. */
  startAt: string | null;
  endAt: string | null;
  endBehavior: 'pause' | 'cancel';
  /** Empty = no window: first dispatches may start at any time. */
  windows: RolloutWindow[];
}

/** The rollout plan: POST /v1/rollouts after core/rollout-plan-normalize.ts. Stored as JSON on the rollout. */
export interface RolloutPlan {
  buildId: string;
  /** Conflicts are per device and stream: one open rollout per (device, stream). Default: the build's model id. */
  stream: string;
  target: RolloutTarget;
  membership: RolloutMembership;
  waves: WavePlan[];
  /** The rollout-wide gate as given (each wave's own gate is already merged into `waves[i].gate`). */
  gate: GatePolicy;
  rate: { maxPerMinute: number; maxInFlight: number };
  timeouts: { ackSec: number; inProgressSec: number; quorumSec: number };
  retry: { maxAttempts: number; backoffSec: number; maxBackoffSec: number; retryOn: string[] };
  schedule: RolloutSchedule;
  onBreach: 'pause' | 'rollback';
  supersede: boolean;
  /** Trials of a device build's canary (absent in plans stored before issue 10: the defaults apply). */
  trial?: TrialPlan;
}

export type PauseCode = 'OPERATOR' | 'BREACH' | 'QUORUM' | 'GATE_UNMET' | 'AWAITING_APPROVAL' | 'SCHEDULE_ENDED';

export interface PauseReason {
  code: PauseCode;
  message: string;
  /** The wave concerned (AWAITING_APPROVAL: the wave waiting to open). */
  wave: number | null;
  at: EpochMs;
  breaches?: GateBreach[];
  figures?: GroupFigures;
}

/** A breach an operator resumed past with force; the same breach holds it no longer unless it grows. */
export interface GateOverride {
  wave: number;
  profile: string | null;
  rule: GateRule;
  value: number;
  at: EpochMs;
}

/** The rollout's own row, as far as the engine reads and writes it (the rest stays in RolloutRecord). */
export interface RolloutState {
  id: string;
  status: RolloutStatus;
  /** Set exactly while status is paused. */
  pause: PauseReason | null;
  createdAt: EpochMs;
  startedAt: EpochMs | null;
  /** Last resume or approve: quorum is measured from here as well as from the wave's opening. */
  resumedAt: EpochMs | null;
  finishedAt: EpochMs | null;
  overrides: GateOverride[];
  rollback: { cause: 'command' | 'breach'; at: EpochMs; breaches?: GateBreach[] } | null;
}

export type WaveStatus = 'pending' | 'open' | 'passed';

/** One wave's row (hawkBit's RolloutGroup; the rollout_groups table). */
export interface WaveRecord {
  position: number;
  name: string;
  status: WaveStatus;
  openedAt: EpochMs | null;
  passedAt: EpochMs | null;
  approvedAt: EpochMs | null;
  /** The wave after the last planned one, opened for late joiners of a continuous rollout. */
  tail: boolean;
}

/**
 * Stored progress of a member. `dispatched` covers everything from publishing the desired state
 * until the outcome is decided; whether it is in progress, baking or lost follows from the
 * timestamps and presence (core/rollout-counting.ts). Terminal: succeeded, failed, skipped,
 * cancelled, and lost (a member still silent during its bake when the rollout finished or was
 * cancelled: closed so that it no longer holds the device's stream).
 */
export type MemberPhase = 'waiting' | 'dispatched' | 'succeeded' | 'failed' | 'skipped' | 'cancelled' | 'lost';

/**
 * What the member does for the rollout: 'install'. A canary member of a device-selection build
 * (issue 10) first trials its profile's candidates (trialState, apart from the install's phase);
 * until the profile's winner is chosen it has bundleId null and is never dispatched an install.
 */
export type MemberStep = 'install';

/**
 * A canary member's trial of its profile's candidates (device builds only): dispatched (the
 * trial desired state was sent), running (the device said it started), done (figures stored),
 * failed (the device stopped it: TRIAL_INTERRUPTED, TRIAL_SUPERSEDED, …), timeout (no end within
 * the plan's trial.timeoutSec). null: no trial (not canary, offline when the choice was made, or
 * stored results were reused).
 */
export type TrialState = 'dispatched' | 'running' | 'done' | 'failed' | 'timeout';

/** Trials of a rollout plan (used when the build's selection is `device`). */
export interface TrialPlan {
  /** Interleaved rounds each device runs (one benchmark per candidate per round). */
  rounds: number;
  /** From a member's trial dispatch to its end; after it the member is left out of the choice. */
  timeoutSec: number;
  /** true: measure on the canary even when stored results of these bundles exist. */
  measureAgain: boolean;
}

/**
 * dispatched: the previous bundle was sent; done: the device runs it again; failed: the device
 * refused it; impossible: it ran nothing before; superseded: a newer rollout took the device
 * over before the rollback reached it.
 */
export type RollbackState = 'dispatched' | 'done' | 'failed' | 'impossible' | 'superseded';

/**
 * One device's part in a rollout (hawkBit's Action). One row per (rollout, device), whatever the
 * number of attempts: counting counts devices, never attempts.
 */
export interface RolloutMember {
  rolloutId: string;
  deviceId: string;
  profile: string;
  /** Wave position (index into plan.waves; plan.waves.length is the tail wave). */
  wave: number;
  /** Dispatch order across the rollout (wave-major, profiles interleaved); unique per rollout. */
  order: number;
  /** The bundle built for the device's profile; null if none (skipped NO_ARTIFACT) or not chosen yet (issue 10). */
  bundleId: string | null;
  step: MemberStep;
  phase: MemberPhase;
  /** Outcome code once terminal (GOLDEN_MISMATCH, IN_PROGRESS_TIMEOUT, ALREADY_ACTIVE, …), else the last failure's code. */
  code: string | null;
  reason: string | null;
  joinedAt: EpochMs;
  /** Joined after the start (continuous membership). */
  late: boolean;

  /** Attempts the device started (a report arrived for them). */
  attempts: number;
  /** Latest dispatch (a desired state published for this member). */
  dispatchedAt: EpochMs | null;
  /** First dispatch: the member has been touched (fleet rollback returns it). */
  firstDispatchedAt: EpochMs | null;
  /** The device's active bundle at first dispatch: what a rollback returns it to. */
  previousBundle: string | null;
  /** p95 of the device's last benchmark on previousBundle, recorded at first dispatch: its own baseline. */
  baselineP95Ms: number | null;
  /** Waiting for a retry: not dispatched before this time. */
  retryAt: EpochMs | null;
  /** Last withdrawal (unreached, cancel, supersede). */
  withdrawnAt: EpochMs | null;
  /** Times it was withdrawn as unreached. */
  unreached: number;

  /** Facts of the current attempt, folded from status reports by core/rollout-reports.ts. */
  reportState: DeviceState | null;
  reportCode: string | null;
  reportReason: string | null;
  /** Device clock of the newest report folded (any attempt): orders reports, drops duplicates. */
  reportDeviceAt: EpochMs | null;
  startedAt: EpochMs | null;
  activeAt: EpochMs | null;
  endedAt: EpochMs | null;
  /** p95 measured on the new bundle in this attempt (from the report's benchmark result). */
  p95Ms: number | null;
  finishedAt: EpochMs | null;

  /** Fleet rollback of this member; null = not asked (or, while the rollout rolls back, still to send). */
  rollbackState: RollbackState | null;
  rollbackDispatchedAt: EpochMs | null;
  /** Receipt time of the newest report on the previous bundle after a rollback was sent. */
  rollbackReportAt: EpochMs | null;
  rollbackCode: string | null;

  /** Issue 10: the member's trial (canary of a device build); see TrialState. */
  trialState: TrialState | null;
  /** Dispatch of the trial. */
  trialAt: EpochMs | null;
  trialEndedAt: EpochMs | null;
  trialCode: string | null;
  trialReason: string | null;
}

export type GateRule = 'maxFailures' | 'maxFailureRatio' | 'maxGoldenFailures' | 'maxP95Regression' | 'maxLostRatio' | 'liveErrorRate' | 'liveP95Regression';

/** Counts of one group (a wave, or one profile within a wave), with the ratios derived from them. */
export interface GroupFigures {
  wave: number;
  /** null: the whole wave. */
  profile: string | null;
  /** Members that count: all but skipped and cancelled. */
  members: number;
  waiting: number;
  waitingOffline: number;
  unreached: number;
  dispatched: number;
  inProgress: number;
  baking: number;
  lost: number;
  succeeded: number;
  failed: number;
  skipped: number;
  cancelled: number;
  goldenFailures: number;
  /** succeeded + failed. */
  finished: number;
  minExecuted: number;
  maxFailures: number;
  /** failed ÷ finished (0 when nothing finished). */
  failureRatio: number;
  /** succeeded ÷ finished (null when nothing finished). */
  successRatio: number | null;
  /** lost ÷ (finished + lost). */
  lostRatio: number;
  /** Median of (p95 new ÷ p95 baseline − 1) over `p95Devices` devices; null without any. */
  p95Regression: number | null;
  p95Devices: number;
  /** Issue 11: medians of the live figures, when the gate has a live policy. */
  live?: { devices: number; errorRateIncrease: number | null; p95Regression: number | null };
}

export interface GateBreach {
  wave: number;
  profile: string | null;
  rule: GateRule;
  value: number;
  limit: number;
  message: string;
}

/** One entry of GET /v1/rollouts/:id/events: a command or a decision, with the figures that caused it. */
export interface RolloutEvent {
  rolloutId: string;
  /** Increases per rollout. */
  seq: number;
  at: string;
  /** The decision's or command's kind (dispatch, pause, command:resume, …). */
  kind: string;
  deviceId: string | null;
  /** The decision itself (JSON). */
  data: Record<string, unknown>;
}
