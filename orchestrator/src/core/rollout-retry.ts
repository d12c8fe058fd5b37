/**
 * Which failures a rollout tries again, and when. A retry is a new dispatch of the same bundle
 * to the same member (a new desired-state seq); it only makes sense where the cause can go
 * away by itself. A device that refused a bundle for what the bundle is will refuse it again.
 */

/**
 * Deterministic refusals: the same bundle on the same device gives the same answer every time.
 * A plan may not list them in retry.retryOn.
 */
export const NEVER_RETRY_CODES: readonly string[] = [
  'SIGNATURE_INVALID', // the bundle's signature does not verify against the pinned key
  'DESIRED_SIGNATURE_INVALID',
  'MANIFEST_INVALID',
  'MANIFEST_EXPIRED',
  'PROFILE_MISMATCH',
  'FILE_HASH_MISMATCH', // the stored blob is not what the manifest says: resending sends the same bytes
  'FILE_LENGTH_MISMATCH',
  'GOLDEN_MISMATCH', // the model computes something else on this device
  'LATENCY_BUDGET_EXCEEDED', // too slow on this device
  'NO_ARTIFACT',
];

/**
 * The orchestrator's own code for a dispatch that got no report within timeouts.ackSec. Listed
 * in retryOn (the default), an unreached device that still looks online is dispatched again
 * after the backoff; without it, only after it reconnects. Either way it is never a failure.
 */
export const ACK_TIMEOUT = 'ACK_TIMEOUT';

/** A start with no end (active, failed or rolled_back) within timeouts.inProgressSec: the bricked-device signal. */
export const IN_PROGRESS_TIMEOUT = 'IN_PROGRESS_TIMEOUT';

/**
 * Default retry.retryOn: transient causes only.
 * - DOWNLOAD_STALLED: the agent gave up on chunks that did not come (broker or link trouble).
 * - DOWNLOAD_TOO_SLOW: they came, but slower than the agent's floor (a poor link, or a trickle).
 * - ACK_TIMEOUT: see above.
 * - BENCHMARK_TIMEOUT: a busy or throttled device; the budget check is separate (LATENCY_BUDGET_EXCEEDED).
 * - AGENT_STOPPING: the agent was shut down mid-download.
 * Not IN_PROGRESS_TIMEOUT: a device that started and never ended may be bricked; sending it more
 * work hides that. Not BENCHMARK_CRASHED: usually the model itself (out of memory, bad op).
 */
export const DEFAULT_RETRY_ON: readonly string[] = ['DOWNLOAD_STALLED', 'DOWNLOAD_TOO_SLOW', ACK_TIMEOUT, 'BENCHMARK_TIMEOUT', 'AGENT_STOPPING'];

export interface RetryPolicy {
  maxAttempts: number;
  backoffSec: number;
  maxBackoffSec: number;
  retryOn: readonly string[];
}

/** Whether a failure with `code` is retried at all under `policy` (attempts aside). */
export function isRetryable(policy: RetryPolicy, code: string | null): boolean {
  if (!code || NEVER_RETRY_CODES.includes(code)) return false;
  return policy.retryOn.includes(code);
}

/**
 * Delay before the next try after `done` tries: backoffSec, doubled per try, capped at
 * maxBackoffSec (30 s, 60 s, 120 s … by default), so a struggling device or broker gets room.
 */
export function backoffMs(policy: RetryPolicy, done: number): number {
  const exp = Math.min(Math.max(done - 1, 0), 30);
  return Math.min(policy.backoffSec * 2 ** exp, policy.maxBackoffSec) * 1000;
}

export type RetryVerdict = { retry: true; attempt: number; delayMs: number } | { retry: false; why: 'not-retryable' | 'attempts-exhausted' };

/** After a failed attempt: try again (which attempt, after how long) or give up. */
export function retryVerdict(policy: RetryPolicy, code: string | null, attemptsDone: number): RetryVerdict {
  if (!isRetryable(policy, code)) return { retry: false, why: 'not-retryable' };
  if (attemptsDone >= policy.maxAttempts) return { retry: false, why: 'attempts-exhausted' };
  return { retry: true, attempt: attemptsDone + 1, delayMs: backoffMs(policy, attemptsDone) };
}
