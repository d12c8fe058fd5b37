/**
 * One shape for "some inference telemetry added up": a raw window, a 10-minute or 1-hour
 * roll-up row, a chart bucket, a whole fleet over a range. Everything in it adds exactly:
 * request counts, items and histogram buckets are integers, latency sums are integer
 * microseconds, and system figures are kept as (sum, min, max, samples) so that a mean over any
 * grouping is the mean over the raw samples, whatever order they were added in.
 *
 * System figures are samples, not sums (a device reports its CPU, RSS, free memory and disk
 * once per window), so they never add across devices or windows: a roll-up keeps their mean
 * (Σ sample ÷ samples), the max of CPU, RSS and temperature and the min of free memory and disk.
 * A window the device merged from n raw windows is n samples of its (already merged) figures.
 *
 * Pure: no IO, no clock.
 */
import {
  TELEMETRY_BUCKET_COUNT, TELEMETRY_OUTCOMES, histogramQuantile, windowCount,
  type TelemetryOutcome, type TelemetryWindow,
} from '@edgepack/protocol';

export interface SystemAgg {
  /** Raw windows the figures stand for (a merged window counts as its parts). */
  samples: number;
  cpuSum: number;
  cpuMax: number;
  rssSum: number;
  rssMax: number;
  memSum: number;
  memMin: number;
  diskSum: number;
  diskMin: number;
  tempSamples: number;
  tempSum: number;
  tempMax: number;
}

export interface Agg {
  /** Raw windows added in. */
  windows: number;
  requests: Record<TelemetryOutcome, number>;
  items: number;
  /** Dense bucket counts over TELEMETRY_BUCKET_BOUNDS_MS (+ overflow). */
  latency: number[];
  latencySumUs: number;
  queue: number[];
  queueSumUs: number;
  system: SystemAgg;
  swaps: { count: number; held: number; heldRequests: number; maxHoldMs: number };
  /** Longest single window (or roll-up row) added, seconds: what a rate divides by at least. */
  longestSec: number;
}

export function emptySystem(): SystemAgg {
  return { samples: 0, cpuSum: 0, cpuMax: -Infinity, rssSum: 0, rssMax: -Infinity, memSum: 0, memMin: Infinity, diskSum: 0, diskMin: Infinity, tempSamples: 0, tempSum: 0, tempMax: -Infinity };
}

export function emptyAgg(): Agg {
  return {
    windows: 0, requests: { ok: 0, invalid: 0, timeout: 0, rejected: 0, error: 0 }, items: 0,
    latency: new Array<number>(TELEMETRY_BUCKET_COUNT).fill(0), latencySumUs: 0,
    queue: new Array<number>(TELEMETRY_BUCKET_COUNT).fill(0), queueSumUs: 0,
    system: emptySystem(), swaps: { count: 0, held: 0, heldRequests: 0, maxHoldMs: 0 }, longestSec: 0,
  };
}

export function totalOf(r: Record<TelemetryOutcome, number>): number {
  return r.ok + r.invalid + r.timeout + r.rejected + r.error;
}

/** A validated window as an Agg (its system sample counts once per raw window it stands for). */
export function aggOfWindow(w: TelemetryWindow): Agg {
  const n = windowCount(w);
  const s = w.system;
  const temp = s.temperatureC;
  return {
    windows: n,
    requests: { ok: w.requests.ok, invalid: w.requests.invalid, timeout: w.requests.timeout, rejected: w.requests.rejected, error: w.requests.error },
    items: w.items,
    latency: [...w.latencyMs.counts], latencySumUs: w.latencyMs.sumUs,
    queue: [...w.queueMs.counts], queueSumUs: w.queueMs.sumUs,
    system: {
      samples: n, cpuSum: s.cpuPercent * n, cpuMax: s.cpuPercent, rssSum: s.rssBytes * n, rssMax: s.rssBytes,
      memSum: s.memAvailableBytes * n, memMin: s.memAvailableBytes, diskSum: s.diskFreeBytes * n, diskMin: s.diskFreeBytes,
      tempSamples: temp === undefined ? 0 : n, tempSum: temp === undefined ? 0 : temp * n, tempMax: temp === undefined ? -Infinity : temp,
    },
    swaps: { count: w.swaps?.count ?? 0, held: w.swaps?.held ?? 0, heldRequests: w.swaps?.heldRequests ?? 0, maxHoldMs: w.swaps?.maxHoldMs ?? 0 },
    longestSec: (Date.parse(w.end) - Date.parse(w.start)) / 1000,
  };
}

/** Adds a window's requests and histograms into `a` without building an Agg for it (the ingest's hot path feeds the metrics this way). */
export function addWindowCounts(a: Agg, w: TelemetryWindow): void {
  a.windows += windowCount(w);
  for (const k of TELEMETRY_OUTCOMES) a.requests[k] += w.requests[k];
  a.items += w.items;
  const lat = w.latencyMs.counts;
  for (let i = 0; i < TELEMETRY_BUCKET_COUNT; i++) a.latency[i]! += lat[i]!;
  a.latencySumUs += w.latencyMs.sumUs;
}

/**
 * Adds `b` into `a` (in place) with `sign` +1, or takes it out with −1 (a window a merged one
 * supersedes). Taking out is exact for counts, histograms and sums; min and max cannot be
 * taken back and stay as they were, which is harmless here because a merged window's min and
 * max are those of its parts.
 */
export function addInto(a: Agg, b: Agg, sign: 1 | -1 = 1): Agg {
  a.windows += sign * b.windows;
  for (const k of TELEMETRY_OUTCOMES) a.requests[k] += sign * b.requests[k];
  a.items += sign * b.items;
  for (let i = 0; i < TELEMETRY_BUCKET_COUNT; i++) {
    a.latency[i]! += sign * (b.latency[i] ?? 0);
    a.queue[i]! += sign * (b.queue[i] ?? 0);
  }
  a.latencySumUs += sign * b.latencySumUs;
  a.queueSumUs += sign * b.queueSumUs;
  const x = a.system;
  const y = b.system;
  x.samples += sign * y.samples;
  x.cpuSum += sign * y.cpuSum;
  x.rssSum += sign * y.rssSum;
  x.memSum += sign * y.memSum;
  x.diskSum += sign * y.diskSum;
  x.tempSamples += sign * y.tempSamples;
  x.tempSum += sign * y.tempSum;
  a.swaps.count += sign * b.swaps.count;
  a.swaps.held += sign * b.swaps.held;
  a.swaps.heldRequests += sign * b.swaps.heldRequests;
  if (sign === 1) {
    x.cpuMax = Math.max(x.cpuMax, y.cpuMax);
    x.rssMax = Math.max(x.rssMax, y.rssMax);
    x.memMin = Math.min(x.memMin, y.memMin);
    x.diskMin = Math.min(x.diskMin, y.diskMin);
    x.tempMax = Math.max(x.tempMax, y.tempMax);
    a.swaps.maxHoldMs = Math.max(a.swaps.maxHoldMs, b.swaps.maxHoldMs);
    a.longestSec = Math.max(a.longestSec, b.longestSec);
  }
  return a;
}

// ------------------------------------------------------------------ compact histogram text

/**
 * Histogram counts as stored: a JSON array `[first, c_first, …, c_last]` holding only the
 * buckets from the first to the last non-empty one, led by the index of the first; `[]` for an
 * empty histogram. A window's latencies sit in a handful of neighbouring buckets, so this is
 * tens of bytes instead of 43 numbers, and JSON.parse reads it faster than any hand-written
 * decoder.
 */
export function encodeCounts(counts: readonly number[]): string {
  let first = -1;
  let last = -1;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] !== 0) {
      if (first < 0) first = i;
      last = i;
    }
  }
  if (first < 0) return '[]';
  let s = `[${first}`;
  for (let i = first; i <= last; i++) s += `,${counts[i]}`;
  return `${s}]`;
}

/** Adds stored counts (see encodeCounts) into a dense array, times `sign`. */
export function addEncodedCounts(into: number[], text: string, sign: 1 | -1 = 1): void {
  if (text === '[]') return;
  const a = JSON.parse(text) as number[];
  const first = a[0]!;
  for (let j = 1; j < a.length; j++) into[first + j - 1]! += sign * a[j]!;
}

export function decodeCounts(text: string): number[] {
  const out = new Array<number>(TELEMETRY_BUCKET_COUNT).fill(0);
  addEncodedCounts(out, text);
  return out;
}

// ------------------------------------------------------------------ figures

export interface Quantiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  mean: number | null;
}

function quantiles(counts: number[], sumUs: number): Quantiles {
  let count = 0;
  for (const c of counts) count += c;
  const h = { counts, count, sumUs };
  const q = (p: number) => {
    const v = histogramQuantile(h, p);
    return v === null ? null : Math.round(v * 1000) / 1000;
  };
  return { p50: q(0.5), p95: q(0.95), p99: q(0.99), mean: count ? Math.round(sumUs / count) / 1000 : null };
}

export interface Figures {
  windows: number;
  requests: Record<TelemetryOutcome, number> & { total: number };
  requestsPerSec: number;
  /** Non-ok ÷ all requests; null without requests. */
  errorRate: number | null;
  /** Each non-ok outcome ÷ all requests. */
  errorRates: { invalid: number; timeout: number; rejected: number; error: number } | null;
  items: number;
  latencyMs: Quantiles;
  queueMs: Quantiles;
  system: {
    cpuPercent: { mean: number; max: number };
    rssBytes: { mean: number; max: number };
    memAvailableBytes: { mean: number; min: number };
    diskFreeBytes: { mean: number; min: number };
    temperatureC: { mean: number; max: number } | null;
  } | null;
  swaps: { count: number; held: number; heldRequests: number; maxHoldMs: number };
}

const round = (x: number, digits = 4) => Math.round(x * 10 ** digits) / 10 ** digits;

/**
 * The figures of an Agg over `seconds` of wall time: rates divide by the longer of `seconds`
 * and the longest window in it (a 60 s window in a 15 s bucket is a rate over 60 s, not 15).
 */
export function figuresOf(a: Agg, seconds: number): Figures {
  const total = totalOf(a.requests);
  const s = a.system;
  return {
    windows: a.windows,
    requests: { ...a.requests, total },
    requestsPerSec: round(total / Math.max(seconds, a.longestSec, 1e-9)),
    errorRate: total ? round((total - a.requests.ok) / total, 6) : null,
    errorRates: total
      ? { invalid: round(a.requests.invalid / total, 6), timeout: round(a.requests.timeout / total, 6), rejected: round(a.requests.rejected / total, 6), error: round(a.requests.error / total, 6) }
      : null,
    items: a.items,
    latencyMs: quantiles(a.latency, a.latencySumUs),
    queueMs: quantiles(a.queue, a.queueSumUs),
    system: s.samples > 0 ? {
      cpuPercent: { mean: round(s.cpuSum / s.samples, 2), max: s.cpuMax },
      rssBytes: { mean: Math.round(s.rssSum / s.samples), max: s.rssMax },
      memAvailableBytes: { mean: Math.round(s.memSum / s.samples), min: s.memMin },
      diskFreeBytes: { mean: Math.round(s.diskSum / s.samples), min: s.diskMin },
      temperatureC: s.tempSamples > 0 ? { mean: round(s.tempSum / s.tempSamples, 2), max: s.tempMax } : null,
    } : null,
    swaps: { ...a.swaps },
  };
}
