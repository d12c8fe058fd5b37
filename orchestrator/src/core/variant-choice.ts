/**
 * The choice rule of issue 10, pure: given a profile's candidates (each a signed bundle the
 * build kept) and what devices measured of them in trials, which one the fleet gets.
 *
 *   - A candidate is eligible when at least one device measured it, no device that tried it
 *     reported a code for it or a failed golden check (one device's golden failure is enough:
 *     a variant that gives wrong answers on one device of the profile would on others), and the
 *     median of the devices' p95 meets the profile's latency budget (the bundle's acceptance
 *     p95, the same figure the device's own acceptance check holds an install to).
 *   - Among eligible candidates the lowest median p95 wins (devices without figures for a
 *     candidate are left out of its median: an offline canary device, a trial that timed out or
 *     failed counts for nothing, never as a slow device).
 *   - The reference (fp32) is always a candidate and wins ties: another candidate must be more
 *     than TIE_MARGIN (3%) faster than the reference's median to be chosen over it. Timing on a
 *     device is noisy, and a quantized variant that is not clearly faster buys nothing for the
 *     accuracy it may cost.
 *   - No eligible candidate (no device has figures, or none passed): the reference. It is the
 *     model as uploaded, the one variant whose accuracy needs no measurement; the host's pick is a
 *     guess about a device the build host is not (the reason this rule exists), so it is shown
 *     beside the choice but never falls back into it.
 */
import type { TrialResultRecord } from '../records.js';

/** Another candidate must be this much faster (relative to the reference's median p95) to beat it. */
export const TIE_MARGIN = 0.03;

export interface ChoiceCandidate {
  bundleId: string;
  precision: string;
  format: string;
  reference: boolean;
}

export type ChoiceCause = 'measured' | 'reused' | 'fallback';

export interface DeviceFigure {
  deviceId: string;
  rolloutId: string;
  p50Ms: number | null;
  p95Ms: number | null;
  goldenPassed: boolean | null;
  top1: number | null;
  code: string | null;
}

export interface CandidateFigures {
  bundleId: string;
  precision: string;
  format: string;
  reference: boolean;
  /** Every device that reported on the candidate. */
  devices: DeviceFigure[];
  /** Median over devices with figures; null when none has. */
  medianP95Ms: number | null;
  medianP50Ms: number | null;
  eligible: boolean;
  /** Why eligible or not. */
  reason: string;
}

export interface VariantChoice {
  profile: string;
  bundleId: string;
  precision: string;
  /** measured: this rollout's trials; reused: stored results of earlier trials; fallback: no eligible candidate. */
  cause: ChoiceCause;
  reason: string;
  tieMargin: number;
  budgetP95Ms: number | null;
  hostPick: { bundleId: string; precision: string } | null;
  candidates: CandidateFigures[];
  /** Devices whose figures count (at least one candidate measured). */
  devices: string[];
  /** Canary devices with no figures, and why (offline, timed out, trial failed). */
  leftOut: { deviceId: string; why: string }[];
}

export interface ChoiceInput {
  profile: string;
  /** In the profile's order of preference; the reference among them. */
  candidates: readonly ChoiceCandidate[];
  /** Results of the devices that count (the caller filters: this rollout's canary, or every stored one when reusing). */
  results: readonly TrialResultRecord[];
  budgetP95Ms: number | null;
  hostPick: { bundleId: string; precision: string } | null;
  /** measured or reused: what the results are (the cause becomes fallback if nothing is eligible). */
  source: 'measured' | 'reused';
  leftOut?: readonly { deviceId: string; why: string }[];
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const ms = (x: number | null) => (x === null ? '—' : `${x.toFixed(3)} ms`);

function figuresOf(c: ChoiceCandidate, results: readonly TrialResultRecord[], budget: number | null): CandidateFigures {
  // One figure per device: the newest (the store already keeps one per device; a caller's list may not).
  const byDevice = new Map<string, TrialResultRecord>();
  for (const r of results) {
    if (r.bundleId !== c.bundleId) continue;
    const prev = byDevice.get(r.deviceId);
    if (!prev || r.measuredAt >= prev.measuredAt) byDevice.set(r.deviceId, r);
  }
  const devices: DeviceFigure[] = [...byDevice.values()].sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1)).map((r) => ({
    deviceId: r.deviceId, rolloutId: r.rolloutId,
    p50Ms: r.result?.latencyMs.p50 ?? null, p95Ms: r.result?.latencyMs.p95 ?? null,
    goldenPassed: r.result ? r.result.golden.passed : null, top1: r.agreement?.top1 ?? null, code: r.code,
  }));
  const measured = devices.filter((d) => d.code === null && d.p95Ms !== null && d.goldenPassed !== false);
  const medianP95Ms = median(measured.map((d) => d.p95Ms!));
  const medianP50Ms = median(measured.map((d) => d.p50Ms!).filter((x) => x !== null));
  const refused = devices.filter((d) => d.code !== null || d.goldenPassed === false);
  let eligible = false;
  let reason: string;
  if (refused.length) {
    reason = `refused on ${refused.map((d) => `${d.deviceId} (${d.code ?? 'golden check failed'})`).join(', ')}`;
  } else if (medianP95Ms === null) {
    reason = 'no device has figures for it';
  } else if (budget !== null && medianP95Ms > budget) {
    reason = `median p95 ${ms(medianP95Ms)} over the profile's ${budget} ms budget`;
  } else {
    eligible = true;
    reason = `median p95 ${ms(medianP95Ms)} over ${measured.length} device${measured.length === 1 ? '' : 's'}`;
  }
  return { bundleId: c.bundleId, precision: c.precision, format: c.format, reference: c.reference, devices, medianP95Ms, medianP50Ms, eligible, reason };
}

export function chooseVariant(input: ChoiceInput): VariantChoice {
  const budget = input.budgetP95Ms;
  const candidates = input.candidates.map((c) => figuresOf(c, input.results, budget));
  const reference = candidates.find((c) => c.reference) ?? candidates[0]!;
  const devices = [...new Set(candidates.flatMap((c) => c.devices.filter((d) => d.p95Ms !== null).map((d) => d.deviceId)))].sort();
  const base = {
    profile: input.profile, tieMargin: TIE_MARGIN, budgetP95Ms: budget, hostPick: input.hostPick, candidates, devices,
    leftOut: [...(input.leftOut ?? [])],
  };
  let best: CandidateFigures | undefined;
  for (const c of candidates) if (c.eligible && (!best || c.medianP95Ms! < best.medianP95Ms!)) best = c;
  if (!best) {
    const why = devices.length === 0 ? 'no device has figures for any candidate' : 'no candidate passed the golden check and the latency budget';
    return { ...base, bundleId: reference.bundleId, precision: reference.precision, cause: 'fallback', reason: `${why}: the reference ${reference.precision}` };
  }
  if (best !== reference && reference.eligible && best.medianP95Ms! >= reference.medianP95Ms! * (1 - TIE_MARGIN)) {
    return {
      ...base, bundleId: reference.bundleId, precision: reference.precision, cause: input.source,
      reason: `${best.precision} (${ms(best.medianP95Ms)}) is within ${TIE_MARGIN * 100}% of ${reference.precision} (${ms(reference.medianP95Ms)}): a tie, which the reference wins`,
    };
  }
  const vs = best === reference ? 'fastest' : `vs ${reference.precision} ${ms(reference.medianP95Ms)}`;
  return { ...base, bundleId: best.bundleId, precision: best.precision, cause: input.source, reason: `lowest median p95: ${best.precision} ${ms(best.medianP95Ms)} (${vs})` };
}
