import { createHash } from 'node:crypto';
import type { BenchmarkResult, Manifest, Precision } from '@edgepack/protocol';

/** The manifest's precision names, the keys of --speed. */
export const PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'int8-dynamic', 'int8-static', 'int8'];

/** Latency of a precision as a factor of fp32's on the same device and model; a missing one is 1. */
export type SpeedFactors = Partial<Record<Precision, number>>;

export interface LatencyFigures {
  p50: number;
  p90: number;
  p95: number;
  p99: number;
}

/**
 * A number in [0, 1) that depends only on its parts: every random choice the simulator makes
 * (which bundle fails on which device, who stays offline, a device's baseline) is one of
 * these, so a run is repeatable from its seed and a restart makes the same choices.
 */
export function unitHash(...parts: string[]): number {
  const d = createHash('sha256').update(parts.join('\u0000')).digest();
  return d.readUIntBE(0, 6) / 2 ** 48;
}

const round = (x: number) => Math.round(x * 1000) / 1000;
const scale = (f: LatencyFigures, k: number): LatencyFigures => ({ p50: f.p50 * k, p90: f.p90 * k, p95: f.p95 * k, p99: f.p99 * k });

/**
 * A device's fp32 figures on its first bundle: p95 between 30% and 50% of the profile's budget
 * (so a default run passes acceptance and a p95 factor of 2–3 breaches it), or 8–16 ms when
 * the manifest states no budget. `u` is the device's own draw from unitHash.
 */
export function baselineFigures(budgetMs: number | undefined, u: number): LatencyFigures {
  const p95 = budgetMs !== undefined ? budgetMs * (0.3 + 0.2 * u) : 8 + 8 * u;
  return { p50: p95 * 0.78, p90: p95 * 0.93, p95, p99: p95 * 1.12 };
}

export interface SynthesisInput {
  manifest: Pick<Manifest, 'precision' | 'acceptance' | 'runtime' | 'golden' | 'files'>;
  /**
   * The device's fp32-equivalent figures on the model it ran before (baselineFigures on its
   * first bundle). The new bundle's fp32 figures are these × `factor`; its own are those ×
   * the speed factor of its precision.
   */
  reference: LatencyFigures;
  /** --p95-factor for a bundle the device never had active; 1 to measure a known one again. */
  factor: number;
  speed: SpeedFactors;
  /** An injected acceptance failure: golden outputs that differ, or a p95 over the budget. */
  inject?: 'GOLDEN_MISMATCH' | 'LATENCY_BUDGET_EXCEEDED';
}

/**
 * Pure: the benchmark a simulated device reports for a bundle, shaped like the agent's real
 * one (BenchmarkResultSchema). Installs and, later, trials (issue 10: one per candidate
 * precision, same reference) go through this one function. Returns the new reference too, so
 * the next bundle's figures follow from this one's.
 */
export function synthesizeBenchmark(input: SynthesisInput): { result: BenchmarkResult; reference: LatencyFigures } {
  const { manifest: m, factor, speed } = input;
  const reference = scale(input.reference, factor);
  let latency = scale(reference, speed[m.precision] ?? 1);
  const budget = m.acceptance.p95LatencyMs;
  if (input.inject === 'LATENCY_BUDGET_EXCEEDED') {
    // 1.5× the budget when there is one, else twice as slow: over the line either way.
    latency = scale(latency, budget !== undefined ? (budget * 1.5) / latency.p95 : 2);
  }
  const modelBytes = m.files.reduce((n, f) => n + f.length, 0);
  const golden = input.inject === 'GOLDEN_MISMATCH'
    ? { passed: false, maxAbsError: round(Math.max(m.golden.maxAbsError * 10, 0.5)), samples: m.golden.count }
    : { passed: true, maxAbsError: m.golden.maxAbsError / 10, samples: m.golden.count };
  const runs = m.acceptance.runs ?? 20;
  return {
    reference,
    result: {
      runtime: m.runtime.name,
      providers: [...m.runtime.executionProviders],
      loadMs: round(5 + modelBytes / 2 ** 20 * 4),
      warmupRuns: Math.min(runs, m.acceptance.warmupRuns ?? 3),
      runs,
      latencyMs: { p50: round(latency.p50), p90: round(latency.p90), p95: round(latency.p95), p99: round(latency.p99) },
      throughputPerSec: round(1000 / latency.p50),
      peakRssBytes: 40 * 2 ** 20 + 2 * modelBytes,
      golden,
    },
  };
}
