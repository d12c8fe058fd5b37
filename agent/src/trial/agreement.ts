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
 * Pure: how a candidate's outputs on the device compare with the reference candidate's on the
 * same golden inputs (sample i of one against sample i of the other: golden inputs are the same
 * seeded inputs for every variant of a build).
 *
 * - `top1`: share of samples whose top-1 class (argmax of the first output, by name order of the
 *   reference) equals the reference's.
 * - `maxAbsError`: the largest absolute difference over every output both have. An output
 *   missing from the candidate, or of another shape, cannot agree: it counts as a top-1 miss and
 *   an error of 1e308 (JSON has no Infinity).
 * - `samples`: the samples compared (the fewer of the two).
 */
export function computeAgreement(reference: readonly SampleOutputs[], candidate: readonly SampleOutputs[]): TrialAgreement {
  const n = Math.min(reference.length, candidate.length);
  let same = 0;
  let maxErr = 0;
  for (let i = 0; i < n; i++) {
    const ref = reference[i]!;
    const got = candidate[i]!;
    const names = Object.keys(ref).sort();
    let sampleAgrees = true;
    names.forEach((name, k) => {
      const a = ref[name]!;
      const b = got[name];
      const comparable = b !== undefined && a.data.length === b.data.length && a.dims.join() === b.dims.join();
      if (!comparable) {
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
    if (names.length === 0) sampleAgrees = false;
    if (sampleAgrees) same++;
  }
  return { top1: n === 0 ? 0 : same / n, maxAbsError: Number.isFinite(maxErr) ? maxErr : 1e308, samples: n };
}
