import type { Profile } from '@edgepack/firmware-profiles';

/** One way to build a model for a profile, in the profile's order of preference. */
export interface Candidate {
  format: 'onnx' | 'tflite';
  precision: 'fp32' | 'fp16' | 'int8-dynamic' | 'int8-static' | 'int8';
}

/** What evaluating a candidate against the fp32 reference measured. */
export interface CandidateMetrics {
  sizeBytes: number;
  sizeRatio: number;
  estimatedRamBytes: number;
  samples: number;
  /** Where the evaluation inputs came from: an uploaded dataset or synthetic inputs. */
  data: 'evaluation' | 'calibration' | 'synthetic';
  top1Agreement: number;
  referenceTop1?: number;
  candidateTop1?: number;
  top1DropPoints?: number;
  maxAbsError: number;
  cosineMin: number;
  /** candidate p50 / fp32 p50 on the build host, single-threaded, measured side by side. */
  latencyRatio?: number;
}

export interface CandidateDecision extends Candidate {
  accepted: boolean;
  reason: string;
  metrics?: CandidateMetrics;
  ms?: number;
}

export const DEFAULT_MAX_DROP_POINTS = 1.0;
export const MIN_AGREEMENT = 0.99;
/** Latency ratios within this margin of 1 count as "not slower": timing noise on a busy host. */
export const LATENCY_TOLERANCE = 1.05;

const ONNX_PRECISIONS = new Set(['fp32', 'fp16', 'int8-dynamic', 'int8-static']);
const TFLITE_PRECISIONS = new Set(['fp32', 'int8-dynamic', 'int8']);

/**
 * Pure: the candidates to try for a profile, in its order of preference. An ONNX upload can be
 * served as ONNX (optimizer) or as TFLite (converter); a TFLite upload only as itself.
 */
export function candidatesFor(profile: Profile, uploadFormat: 'onnx' | 'tflite'): Candidate[] {
  const out: Candidate[] = [];
  for (const precision of profile.precisions) {
    if (profile.formats.includes('onnx') && uploadFormat === 'onnx' && ONNX_PRECISIONS.has(precision)) out.push({ format: 'onnx', precision });
    else if (profile.formats.includes('tflite') && uploadFormat === 'onnx' && TFLITE_PRECISIONS.has(precision)) out.push({ format: 'tflite', precision });
  }
  return out;
}

/**
 * The CPU of the build host says something about a device's speed only when the device also
 * runs on a CPU; for a GPU or NPU profile its latency ratio is recorded but not held against it.
 */
export function latencyRuleApplies(profile: Profile): boolean {
  return profile.runtime.executionProviders[0] === 'cpu';
}

/**
 * Pure: whether a measured candidate meets the profile's budgets. fp32 is the reference
 * itself, so only its size and RAM are judged. `hostLatency: false` (a `device` build, issue
 * 10) leaves the build host's latency out: the devices measure speed themselves.
 */
export function judgeCandidate(profile: Profile, c: Candidate, m: CandidateMetrics, opts: { hostLatency?: boolean } = {}): { accepted: boolean; reason: string } {
  const b = profile.budgets;
  if (m.sizeBytes > b.maxModelBytes) return { accepted: false, reason: `model is ${m.sizeBytes} bytes, over the profile's ${b.maxModelBytes}-byte budget` };
  if (m.estimatedRamBytes > b.maxRamBytes) return { accepted: false, reason: `needs an estimated ${m.estimatedRamBytes} bytes of RAM, over the profile's ${b.maxRamBytes}-byte budget` };
  const isReference = c.format === 'onnx' && c.precision === 'fp32';
  if (!isReference) {
    const maxDrop = b.maxAccuracyDropPoints ?? DEFAULT_MAX_DROP_POINTS;
    if (m.top1DropPoints !== undefined) {
      if (m.top1DropPoints > maxDrop) return { accepted: false, reason: `top-1 drops ${m.top1DropPoints.toFixed(2)} points (${pct(m.referenceTop1)} → ${pct(m.candidateTop1)}), over the ${maxDrop}-point budget` };
    } else if (m.top1Agreement < MIN_AGREEMENT) {
      return { accepted: false, reason: `top-1 agreement with fp32 is ${pct(m.top1Agreement)} on ${m.samples} ${m.data} samples, under ${pct(MIN_AGREEMENT)}` };
    }
    if ((opts.hostLatency ?? true) && c.format === 'onnx' && m.latencyRatio !== undefined && latencyRuleApplies(profile) && m.latencyRatio > LATENCY_TOLERANCE) {
      return { accepted: false, reason: `${m.latencyRatio.toFixed(2)}× the fp32 latency on the build host: slower than fp32` };
    }
  }
  if (isReference) return { accepted: true, reason: `meets budgets: the uploaded fp32 model, ${m.sizeBytes} bytes` };
  const acc = m.top1DropPoints !== undefined ? `top-1 ${pct(m.candidateTop1)} vs ${pct(m.referenceTop1)} fp32` : `top-1 agreement ${pct(m.top1Agreement)}`;
  const speed = m.latencyRatio !== undefined ? `, ${m.latencyRatio.toFixed(2)}× fp32 latency` : '';
  return { accepted: true, reason: `meets budgets: ${m.sizeBytes} bytes (${m.sizeRatio.toFixed(2)}× fp32), ${acc}${speed}` };
}

function pct(x: number | undefined): string {
  return x === undefined ? '?' : `${(x * 100).toFixed(2)}%`;
}
