import type { TrialAgreement } from '@edgepack/protocol';

/** A tensor as the agreement check needs it: shape and numbers (any typed array). */
export interface OutputTensor {
  dims: readonly number[];
  data: ArrayLike<number | bigint>;
}

/** One golden sample's outputs, by output name. */
export type SampleOutputs = Record<string, OutputTensor>;

/** Index of the largest value (the first one on ties); -1 for an empty or all-NaN tensor. */
export function argmax(data: ArrayLike<number | bigint>): number {
  let best = -1;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = Number(data[i]);
    if (v > max) { max = v; best = i; }
  }
  return best;
}

/**
 * Which candidate output answers each reference output: by name when the candidate has every
 * name, else by position (a TFLite conversion renames outputs, `output` becoming
 * `StatefulPartitionedCall:0`, and keeps their order). Null where there is nothing to pair.
 */
function pairOutputs(ref: SampleOutputs, got: SampleOutputs): [OutputTensor, OutputTensor | undefined][] {
  const names = Object.keys(ref);
  if (names.every((n) => n in got)) return names.map((n) => [ref[n]!, got[n]]);
  const theirs = Object.values(got);
  return names.map((n, i) => [ref[n]!, theirs[i]]);
}

/**
 * Pure: how a candidate's outputs on the device compare with the reference candidate's on the
 * same golden inputs (sample i of one against sample i of the other: golden inputs are the same
 * seeded inputs for every variant of a build, in each variant's own layout).
 *
 * - `top1`: share of samples whose top-1 class (argmax of the first output, in the model's
 *   order) equals the reference's.
 * - `maxAbsError`: the largest absolute difference over every output. An output missing from
 *   the candidate, or of another size, cannot agree: a top-1 miss when it is the first, and an
 *   error of 1e308 (JSON has no Infinity). Shapes are compared by element count, so a layout
 *   that only differs in its dims ([1,10] against [10]) still compares.
 * - `samples`: the samples compared (the fewer of the two).
 */
export function computeAgreement(reference: readonly SampleOutputs[], candidate: readonly SampleOutputs[]): TrialAgreement {
  const n = Math.min(reference.length, candidate.length);
  let same = 0;
  let maxErr = 0;
  for (let i = 0; i < n; i++) {
    const pairs = pairOutputs(reference[i]!, candidate[i]!);
    let sampleAgrees = pairs.length > 0;
    pairs.forEach(([a, b], k) => {
      if (b === undefined || a.data.length !== b.data.length) {
        maxErr = Infinity;
        if (k === 0) sampleAgrees = false;
        return;
      }
      for (let j = 0; j < a.data.length; j++) {
        const d = Math.abs(Number(a.data[j]) - Number(b.data[j]));
        if (Number.isNaN(d)) maxErr = Infinity;
        else if (d > maxErr) maxErr = d;
      }
      if (k === 0 && argmax(a.data) !== argmax(b.data)) sampleAgrees = false;
    });
    if (sampleAgrees) same++;
  }
  return { top1: n === 0 ? 0 : same / n, maxAbsError: Number.isFinite(maxErr) ? maxErr : 1e308, samples: n };
}
