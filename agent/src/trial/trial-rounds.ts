import type { BenchmarkResult } from '@edgepack/protocol';

/**
 * Pure: the order a trial measures its candidates in — `rounds` rounds, each running every
 * candidate once in the order given (A B C, A B C, …), so whatever the device is doing at the
 * time (thermal throttling, another process, a cache warming up) hits every candidate alike
 * instead of all landing on the one measured last.
 */
export function roundSchedule<T>(candidates: readonly T[], rounds: number): { round: number; candidate: T }[] {
  const out: { round: number; candidate: T }[] = [];
  for (let round = 1; round <= rounds; round++) for (const candidate of candidates) out.push({ round, candidate });
  return out;
}

/** The median (the mean of the two middle values for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Pure: one candidate's figures from its rounds, in the install benchmark's shape. Time figures
 * (load, each latency percentile, throughput) are the median over rounds of each round's
 * figure, so one disturbed round moves nothing; peak RSS is the highest (it is a peak); the
 * golden check passes only if it passed in every round, with the largest error seen; `runs` is
 * the timed runs of all rounds together.
 */
export function combineRounds(rounds: readonly BenchmarkResult[]): BenchmarkResult {
  const first = rounds[0];
  if (!first) throw new Error('combineRounds needs at least one round');
  const m = (f: (r: BenchmarkResult) => number) => r3(median(rounds.map(f)));
  return {
    runtime: first.runtime,
    providers: [...first.providers],
    loadMs: m((r) => r.loadMs),
    warmupRuns: first.warmupRuns,
    runs: rounds.reduce((n, r) => n + r.runs, 0),
    latencyMs: { p50: m((r) => r.latencyMs.p50), p90: m((r) => r.latencyMs.p90), p95: m((r) => r.latencyMs.p95), p99: m((r) => r.latencyMs.p99) },
    throughputPerSec: Math.round(median(rounds.map((r) => r.throughputPerSec)) * 100) / 100,
    peakRssBytes: Math.max(...rounds.map((r) => r.peakRssBytes)),
    golden: {
      passed: rounds.every((r) => r.golden.passed),
      maxAbsError: Math.max(...rounds.map((r) => r.golden.maxAbsError)),
      samples: first.golden.samples,
    },
  };
}
