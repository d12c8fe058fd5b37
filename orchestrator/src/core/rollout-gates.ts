/**
 * Gates: whether a wave (and each profile within it) breaches or passes, with the figures.
 *
 * A breach, at any time:
 *   failures over maxFailures; failure ratio over maxFailureRatio once minExecuted finished;
 *   golden failures over maxGoldenFailures; the median over devices of (p95 new ÷ p95 on the
 *   device's own previous bundle − 1) over maxP95Regression, once minExecuted devices have
 *   both figures; lost ratio over maxLostRatio once minExecuted finished or were lost.
 * A pass: every member settled (terminal, waiting offline, unreached or lost), minExecuted
 * finished, success ratio at least minSuccessRatio, bakes done (a baking member is not settled),
 * and no breach.
 *
 * Ratios divide by `finished` = succeeded + failed: offline, unreached and lost devices are not
 * in the divisor (hawkBit's wave that never advances because offline devices count against it).
 * Lost devices are judged by their own ratio.
 */
import type { GateBreach, GatePolicy, GroupFigures, RolloutMember } from '../records.js';
import { classify, isGoldenFailure, p95Regression, SETTLED, type MemberCategory } from './rollout-counting.js';
import type { LiveHealth, RolloutDeviceView } from './rollout-snapshot.js';

/** Running counts of one group, filled member by member (decide does one pass over all members). */
export class GroupTally {
  readonly counts: Record<MemberCategory, number> = {
    waiting: 0, waiting_offline: 0, unreached: 0, dispatched: 0, in_progress: 0, baking: 0, lost: 0, succeeded: 0, failed: 0, skipped: 0, cancelled: 0,
  };
  golden = 0;
  readonly p95: number[] = [];
  readonly liveErr: number[] = [];
  readonly liveP95: number[] = [];

  constructor(readonly wave: number, readonly profile: string | null) {}

  add(m: RolloutMember, category: MemberCategory, d: RolloutDeviceView | undefined, live: GatePolicy['live']): void {
    this.counts[category]++;
    if (isGoldenFailure(m)) this.golden++;
    if (category === 'baking' || category === 'succeeded' || category === 'failed' || category === 'lost') {
      const r = p95Regression(m);
      if (r !== null) this.p95.push(r);
    }
    if (live && d?.live && (category === 'baking' || category === 'succeeded')) {
      const now = newestFor(d.live, m.bundleId, live.minRequests);
      const before = newestFor(d.live, m.previousBundle, live.minRequests);
      if (now && before) {
        this.liveErr.push(now.errorRate - before.errorRate);
        if (now.p95Ms !== null && before.p95Ms !== null && before.p95Ms > 0) this.liveP95.push(now.p95Ms / before.p95Ms - 1);
      }
    }
  }
}

function newestFor(live: readonly LiveHealth[], bundleId: string | null, minRequests: number): LiveHealth | undefined {
  if (bundleId === null) return undefined;
  for (let i = live.length - 1; i >= 0; i--) if (live[i]!.bundleId === bundleId && live[i]!.requests >= minRequests) return live[i];
  return undefined;
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** minExecuted for a group of `members` counted members: given (capped at the group) or ⌈members ÷ 2⌉. */
export function effectiveMinExecuted(policy: GatePolicy, members: number): number {
  if (members === 0) return 0;
  return policy.minExecuted === null ? Math.max(1, Math.ceil(members / 2)) : Math.min(policy.minExecuted, members);
}

/** maxFailures for a group: given, or ⌊maxFailureRatio × members⌋ (more failures make the final ratio a breach anyway). */
export function effectiveMaxFailures(policy: GatePolicy, members: number): number {
  return policy.maxFailures ?? Math.floor(policy.maxFailureRatio * members + 1e-9);
}

/** The pass conditions, by name. */
export type PassCondition = 'settled' | 'minExecuted' | 'minSuccessRatio';

export interface GroupVerdict {
  figures: GroupFigures;
  breaches: GateBreach[];
  /** Every member settled (nothing left to wait for). */
  settled: boolean;
  pass: boolean;
  /** Pass conditions not met yet. */
  unmetConditions: PassCondition[];
  /** The same, in words (for events). */
  unmet: string[];
}

const pct = (x: number) => `${Math.round(x * 1000) / 10}%`;

/** Judges one group from its tally. */
export function judgeGroup(t: GroupTally, policy: GatePolicy): GroupVerdict {
  const c = t.counts;
  const members = Object.values(c).reduce((s, n) => s + n, 0) - c.skipped - c.cancelled;
  const finished = c.succeeded + c.failed;
  const minExecuted = effectiveMinExecuted(policy, members);
  const maxFailures = effectiveMaxFailures(policy, members);
  const failureRatio = finished ? c.failed / finished : 0;
  const successRatio = finished ? c.succeeded / finished : null;
  const lostRatio = finished + c.lost ? c.lost / (finished + c.lost) : 0;
  const p95 = median(t.p95);
  const figures: GroupFigures = {
    wave: t.wave, profile: t.profile, members,
    waiting: c.waiting, waitingOffline: c.waiting_offline, unreached: c.unreached, dispatched: c.dispatched, inProgress: c.in_progress,
    baking: c.baking, lost: c.lost, succeeded: c.succeeded, failed: c.failed, skipped: c.skipped, cancelled: c.cancelled,
    goldenFailures: t.golden, finished, minExecuted, maxFailures, failureRatio, successRatio, lostRatio,
    p95Regression: p95, p95Devices: t.p95.length,
  };
  if (policy.live) figures.live = { devices: t.liveErr.length, errorRateIncrease: median(t.liveErr), p95Regression: median(t.liveP95) };

  const where = t.profile === null ? `wave ${t.wave}` : `wave ${t.wave} profile ${t.profile}`;
  const breaches: GateBreach[] = [];
  const breach = (rule: GateBreach['rule'], value: number, limit: number, message: string) =>
    breaches.push({ wave: t.wave, profile: t.profile, rule, value, limit, message: `${where}: ${message}` });
  if (c.failed > maxFailures) breach('maxFailures', c.failed, maxFailures, `${c.failed} failed, more than the ${maxFailures} allowed`);
  if (finished >= minExecuted && finished > 0 && failureRatio > policy.maxFailureRatio) {
    breach('maxFailureRatio', failureRatio, policy.maxFailureRatio, `${c.failed} of ${finished} finished failed (${pct(failureRatio)} > ${pct(policy.maxFailureRatio)})`);
  }
  if (t.golden > policy.maxGoldenFailures) breach('maxGoldenFailures', t.golden, policy.maxGoldenFailures, `${t.golden} golden-check failures, more than the ${policy.maxGoldenFailures} allowed`);
  if (p95 !== null && t.p95.length >= Math.max(1, minExecuted) && p95 > policy.maxP95Regression) {
    breach('maxP95Regression', p95, policy.maxP95Regression, `median p95 regression ${pct(p95)} over ${t.p95.length} devices (each against its own previous bundle) exceeds ${pct(policy.maxP95Regression)}`);
  }
  if (finished + c.lost >= Math.max(1, minExecuted) && lostRatio > policy.maxLostRatio) {
    breach('maxLostRatio', lostRatio, policy.maxLostRatio, `${c.lost} of ${finished + c.lost} went silent during bake (${pct(lostRatio)} > ${pct(policy.maxLostRatio)})`);
  }
  if (policy.live && figures.live && figures.live.devices >= Math.max(1, minExecuted)) {
    const { errorRateIncrease: e, p95Regression: l } = figures.live;
    if (e !== null && e > policy.live.maxErrorRateIncrease) breach('liveErrorRate', e, policy.live.maxErrorRateIncrease, `median live error-rate increase ${pct(e)} exceeds ${pct(policy.live.maxErrorRateIncrease)}`);
    if (l !== null && l > policy.live.maxP95Regression) breach('liveP95Regression', l, policy.live.maxP95Regression, `median live p95 regression ${pct(l)} exceeds ${pct(policy.live.maxP95Regression)}`);
  }

  let settledCount = 0;
  for (const k of Object.keys(c) as MemberCategory[]) if (SETTLED.has(k)) settledCount += c[k];
  const total = members + c.skipped + c.cancelled;
  const settled = settledCount === total;
  const unmet: string[] = [];
  const unmetConditions: PassCondition[] = [];
  const miss = (c: PassCondition, words: string) => { unmetConditions.push(c); unmet.push(words); };
  if (!settled) miss('settled', `${total - settledCount} members still waiting, in flight or baking`);
  if (finished < minExecuted) miss('minExecuted', `${finished} of the ${minExecuted} needed have finished`);
  if (successRatio !== null && successRatio < policy.minSuccessRatio) miss('minSuccessRatio', `success ratio ${pct(successRatio)} is under ${pct(policy.minSuccessRatio)}`);
  return { figures, breaches, settled, pass: unmet.length === 0 && breaches.length === 0, unmetConditions, unmet };
}

export interface WaveVerdict {
  wave: number;
  whole: GroupVerdict;
  profiles: GroupVerdict[];
  breaches: GateBreach[];
  /** The wave and every profile in it pass. */
  pass: boolean;
  settled: boolean;
  /** Unmet pass conditions of the wave or any profile in it. */
  unmetConditions: PassCondition[];
  unmet: string[];
}

/** Combines a wave's own verdict with its profiles' (profiles sorted by name). */
export function judgeWave(wave: number, whole: GroupTally, profiles: readonly GroupTally[], policy: GatePolicy): WaveVerdict {
  const w = judgeGroup(whole, policy);
  const ps = [...profiles].sort((a, b) => (a.profile! < b.profile! ? -1 : 1)).map((t) => judgeGroup(t, policy));
  const breaches = [...w.breaches, ...ps.flatMap((p) => p.breaches)];
  const unmet = [...w.unmet, ...ps.flatMap((p) => p.unmet.map((u) => `${p.figures.profile}: ${u}`))];
  const unmetConditions = [...new Set([...w.unmetConditions, ...ps.flatMap((p) => p.unmetConditions)])];
  return { wave, whole: w, profiles: ps, breaches, pass: w.pass && ps.every((p) => p.pass), settled: w.settled, unmetConditions, unmet };
}

/** Tallies and judges the given members of one wave (for tests and for GET /v1/rollouts/:id). */
export function evaluateWave(wave: number, members: readonly RolloutMember[], devices: Readonly<Record<string, RolloutDeviceView>>, policy: GatePolicy): WaveVerdict {
  const whole = new GroupTally(wave, null);
  const byProfile = new Map<string, GroupTally>();
  for (const m of members) {
    if (m.wave !== wave) continue;
    const d = devices[m.deviceId];
    const cat = classify(m, d);
    whole.add(m, cat, d, policy.live);
    let t = byProfile.get(m.profile);
    if (!t) byProfile.set(m.profile, (t = new GroupTally(wave, m.profile)));
    t.add(m, cat, d, policy.live);
  }
  return judgeWave(wave, whole, [...byProfile.values()], policy);
}
