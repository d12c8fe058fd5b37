/**
 * Every default of a rollout plan, in one place, with the reason for each. The issue fixes
 * minSuccessRatio 0.95, maxFailureRatio 0.05, maxP95Regression 0.10, maxGoldenFailures 0,
 * maxLostRatio 0.2, maxAttempts 3 and the default waves; the rest are choices made here.
 */
import { DEFAULT_RETRY_ON } from './rollout-retry.js';

export const DEFAULT_ROLLOUT = {
  gate: {
    /**
     * null = derived per group: ⌈members ÷ 2⌉. A fixed number cannot fit both a canary of 3
     * and a wave of 500; half means a wave can pass with up to half its devices offline or
     * unreached (they never count as failures) but not on the word of one device in a hundred.
     */
    minExecuted: null,
    minSuccessRatio: 0.95,
    maxFailureRatio: 0.05,
    /**
     * null = derived per group: ⌊maxFailureRatio × members⌋. More failures than that mean the
     * failure ratio must end over maxFailureRatio whatever the rest do, so the breach can be
     * called at once instead of after minExecuted have finished; it never calls one the ratio
     * would not. In a canary of 3 that is 0: the first failure breaches.
     */
    maxFailures: null,
    maxP95Regression: 0.10,
    maxGoldenFailures: 0,
    maxLostRatio: 0.2,
  },
  /**
   * The live gate (issue 11), when a plan asks for it with `gate.live`. A median device 2 points
   * worse in errors, or 20% slower at p95 (the quantile estimate itself is within 19%), on at
   * least 50 requests per bundle: below that, one failed request is already 2%.
   */
  live: { maxErrorRateIncrease: 0.02, maxP95Regression: 0.2, minRequests: 50 },
  /**
   * 120 s: eight heartbeats at the default 15 s interval, enough to see a device that commits
   * and then crashes back to its previous bundle, short enough not to slow a healthy fleet.
   */
  bakeSec: 120,
  rate: {
    /** AWS IoT Jobs' ceiling; desired states are small and signed off the event loop. */
    maxPerMinute: 1000,
    /** Bounds concurrent chunk serving (200 × a 1 MB bundle in flight is fine on 2 cores). */
    maxInFlight: 200,
  },
  timeouts: {
    /**
     * 120 s from publishing until the first report. The agent reports as soon as it starts,
     * but a reconnecting device first replays its session; two minutes covers that without
     * holding a wave long for a device that will not answer.
     */
    ackSec: 120,
    /**
     * 30 min from the first report to an end: a large bundle over a slow link plus the agent's
     * 5-minute benchmark timeout, with room to spare.
     */
    inProgressSec: 1800,
    /** 1 h from a wave's opening (or the last resume, or the window's opening) to reach minExecuted. */
    quorumSec: 3600,
  },
  retry: {
    maxAttempts: 3,
    /** 30 s, doubled per attempt (30, 60, 120 …): long enough for a broker hiccup to pass. */
    backoffSec: 30,
    /** Cap on the doubling: never wait more than 15 min between tries. */
    maxBackoffSec: 900,
    retryOn: DEFAULT_RETRY_ON,
  },
  /**
   * Trials of a device build's canary (issue 10). 5 interleaved rounds: the median of five
   * rounds shrugs off one disturbed round. 600 s from a member's trial dispatch to its end:
   * downloading every candidate and benchmarking each five times on a slow device, with room;
   * past it the device is left out of the choice, never waited for. Stored results are reused
   * unless a plan asks to measure again.
   */
  trial: { rounds: 5, timeoutSec: 600, measureAgain: false },
  /** The default canary is at least this many devices (and at least one per targeted profile). */
  canaryMinCount: 3,
  /** The default waves after the canary, in percent of the target at start; the last takes the rest. */
  wavePercents: [10, 50],
  membership: 'snapshot',
  endBehavior: 'pause',
  onBreach: 'pause',
  supersede: false,
} as const;
