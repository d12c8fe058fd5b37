/**
 * The trial step of decide() (issue 10), for rollouts of a `device` build. Per profile, until its
 * variant is chosen:
 *   1. stored results of earlier rollouts of these bundles, unless the plan asks to measure
 *      again: choose from them at once, no trial;
 *   2. otherwise each canary member (wave 0) of the profile whose device is online is sent a
 *      trial of every candidate, once; a trial with no end within trial.timeoutSec times out;
 *   3. once every canary member has an end (done, failed, timed out) or is offline without a
 *      trial, the choice is made from this rollout's figures (core/variant-choice.ts): at once if
 *      any device has figures, else once timeoutSec has passed since the canary opened (so a
 *      canary still connecting is waited for, for a while);
 *   4. the choice gives every member of the profile still without a bundle the winner, and
 *      dispatch() installs it, canary first, like any other bundle.
 * A profile with members but none in the canary chooses at once (stored results, or the
 * reference); a profile the rollout has no device of chooses nothing.
 */
import type { TrialReport } from '@edgepack/protocol';
import type { RolloutMember, TrialPlan, TrialResultRecord } from '../records.js';
import { DEFAULT_ROLLOUT } from './rollout-defaults.js';
import { isOffline } from './rollout-counting.js';
import type { RolloutWork } from './rollout-decide.js';
import type { TrialProfile } from './rollout-snapshot.js';
import { chooseVariant } from './variant-choice.js';

export function trialPlanOf(plan: { trial?: TrialPlan }): TrialPlan {
  return plan.trial ?? { ...DEFAULT_ROLLOUT.trial };
}

const ENDED = new Set(['done', 'failed', 'timeout']);

/** Members that take part in the canary's trial of a profile: wave 0, not skipped or cancelled. */
function canaryOf(w: RolloutWork, profile: string): RolloutMember[] {
  return w.members.filter((m) => m.profile === profile && m.wave === 0 && m.phase !== 'skipped' && m.phase !== 'cancelled');
}

export function trialStep(w: RolloutWork): void {
  const trial = w.snap.trial;
  if (!trial) return;
  const canary = w.waves.find((x) => x.position === 0);
  if (!canary || canary.status === 'pending') return;
  const tp = trialPlanOf(w.plan);
  const timeoutMs = tp.timeoutSec * 1000;
  let inFlight = 0;
  for (const m of w.members) if (m.trialState === 'dispatched' || m.trialState === 'running') inFlight++;
  for (const profile of Object.keys(trial.profiles).sort()) {
    if (w.choices.has(profile)) continue;
    // Only profiles the rollout has devices of (a late joiner of another profile brings its own in).
    if (!w.members.some((m) => m.profile === profile)) continue;
    const tprof = trial.profiles[profile]!;
    const bundles = new Set(tprof.candidates.map((c) => c.bundleId));
    const ours = (r: { rolloutId: string; profile: string; bundleId: string }) => r.profile === profile && bundles.has(r.bundleId);
    const stored = trial.results.filter((r) => ours(r) && r.rolloutId !== w.rollout.id);
    if (!tp.measureAgain && stored.length > 0) {
      choose(w, profile, tprof, stored, 'reused', []);
      continue;
    }
    const members = canaryOf(w, profile);
    if (members.length === 0) {
      choose(w, profile, tprof, [], 'measured', []);
      continue;
    }
    for (const m of members) {
      if ((m.trialState === 'dispatched' || m.trialState === 'running') && m.trialAt !== null && w.now - m.trialAt >= timeoutMs) {
        w.emit({ kind: 'trial-timeout', deviceId: m.deviceId, profile, state: m.trialState, reason: `no end of the trial within ${tp.timeoutSec} s of its dispatch` });
        inFlight--;
        continue;
      }
      if (m.trialState !== null || m.phase !== 'waiting') continue;
      const d = w.device(m.deviceId);
      if (!d || d.revoked || isOffline(d)) continue;
      if (inFlight >= w.plan.rate.maxInFlight || !w.window().open) continue;
      w.emit({
        kind: 'trial-dispatch', deviceId: m.deviceId, profile, candidates: tprof.candidates.map((c) => c.bundleId),
        referenceBundleId: tprof.referenceBundleId, rounds: tp.rounds,
      });
      inFlight++;
    }
    const now = canaryOf(w, profile);
    const settled = now.every((m) => (m.trialState !== null && ENDED.has(m.trialState)) || (m.trialState === null && isOffline(w.device(m.deviceId))) || m.phase !== 'waiting');
    if (!settled) continue;
    const mine = trial.results.filter((r) => ours(r) && r.rolloutId === w.rollout.id && now.some((m) => m.deviceId === r.deviceId));
    const figures = mine.some((r) => r.result !== null);
    if (!figures && w.now - (canary.openedAt ?? w.now) < timeoutMs) continue;
    const leftOut = now.filter((m) => m.trialState !== 'done' || !mine.some((r) => r.deviceId === m.deviceId && r.result !== null)).map((m) => ({
      deviceId: m.deviceId,
      why: m.trialState === null ? 'offline: no trial sent' : m.trialState === 'timeout' ? 'trial timed out' : m.trialState === 'failed' ? `trial failed (${m.trialCode ?? 'no code'})` : 'no figures',
    }));
    choose(w, profile, tprof, mine, 'measured', leftOut);
  }
}

function choose(w: RolloutWork, profile: string, t: TrialProfile, results: Parameters<typeof chooseVariant>[0]['results'], source: 'measured' | 'reused', leftOut: { deviceId: string; why: string }[]): void {
  const choice = chooseVariant({ profile, candidates: t.candidates, results, budgetP95Ms: t.budgetP95Ms, hostPick: t.hostPick, source, leftOut });
  w.emit({ kind: 'choose-variant', profile, choice });
}

export type TrialFold =
  | { kind: 'apply'; member: Partial<RolloutMember>; results: TrialResultRecord[] }
  | { kind: 'ignore'; reason: string };

/**
 * A trial report folded into its member (pure; the service writes what it returns). `running`
 * marks the trial started; `done` ends it and keeps each candidate's figures (only candidates of
 * the member's profile: `precisionOf` knows them); `failed` ends it without figures. A report for
 * a trial not under way (late, duplicate, after a timeout) is ignored.
 */
export function foldTrialReport(member: RolloutMember, report: TrialReport, precisionOf: ReadonlyMap<string, string>, at: number): TrialFold {
  if (member.trialState !== 'dispatched' && member.trialState !== 'running') return { kind: 'ignore', reason: `no trial under way (trial ${member.trialState ?? 'never sent'})` };
  if (report.state === 'running') {
    return member.trialState === 'running' ? { kind: 'ignore', reason: 'already running' } : { kind: 'apply', member: { trialState: 'running' }, results: [] };
  }
  if (report.state === 'failed') {
    return { kind: 'apply', member: { trialState: 'failed', trialEndedAt: at, trialCode: report.code ?? null, trialReason: report.reason ?? 'the device reported the trial failed' }, results: [] };
  }
  const results: TrialResultRecord[] = [];
  for (const x of report.results) {
    const precision = precisionOf.get(x.bundleId);
    if (precision === undefined) continue; // not a candidate of the device's profile: nothing to keep
    results.push({
      profile: member.profile, bundleId: x.bundleId, deviceId: member.deviceId, rolloutId: member.rolloutId, precision,
      result: x.result ?? null, agreement: x.agreement ?? null, code: x.code ?? null, reason: x.reason ?? null, measuredAt: at,
    });
  }
  return { kind: 'apply', member: { trialState: 'done', trialEndedAt: at, trialCode: null, trialReason: null }, results };
}
