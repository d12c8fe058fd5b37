import { decodeTensor, type GoldenFile } from '@edgepack/protocol';
import type { TensorValue } from './runtime/runner.js';

/** Nearest-rank percentile over sorted samples. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function latencySummary(samplesMs: readonly number[]): { p50: number; p90: number; p95: number; p99: number } {
  const s = [...samplesMs].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p95: r(percentile(s, 95)), p99: r(percentile(s, 99)) };
}

/** Largest absolute difference between two numeric tensors; Infinity when their shapes differ. */
export function maxAbsDiff(a: TensorValue, b: TensorValue): number {
  if (a.data.length !== b.data.length || a.dims.join() !== b.dims.join()) return Infinity;
  let max = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(Number(a.data[i]) - Number(b.data[i]));
    if (Number.isNaN(d)) return Infinity;
    if (d > max) max = d;
  }
  return max;
}

export function decodeGolden(golden: GoldenFile): { inputs: Record<string, TensorValue>; outputs: Record<string, TensorValue> }[] {
  const dec = (rec: Record<string, Parameters<typeof decodeTensor>[0]>) =>
    Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, decodeTensor(v) as TensorValue]));
  return golden.samples.map((s) => ({ inputs: dec(s.inputs), outputs: dec(s.outputs) }));
}
