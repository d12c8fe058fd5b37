// Telemetry windows and batches as a device makes them, from protocol's own pieces
// (emptyHistogram, observe, mergeWindows): latencies are observed one by one into the fixed
// buckets, so sums and counts hold exactly what a real agent would send.
import {
  PROTOCOL_VERSION, emptyHistogram, mergeWindows, observe,
  type TelemetryBatch, type TelemetryGap, type TelemetryRequests, type TelemetrySystem, type TelemetryWindow,
} from '@edgepack/protocol';

export interface WindowSpec {
  /** Window start, epoch ms (whole seconds). */
  startMs: number;
  lenSec?: number;
  bundleId?: string | null;
  /** Latencies of the ok requests, ms; queue time is a quarter of each. */
  latencies?: number[];
  /** Non-ok outcomes. */
  failed?: Partial<Omit<TelemetryRequests, 'ok'>>;
  system?: Partial<TelemetrySystem>;
  itemsPerRequest?: number;
}

export function makeWindow(deviceId: string, seq: number, spec: WindowSpec): TelemetryWindow {
  const latencyMs = emptyHistogram();
  const queueMs = emptyHistogram();
  const lat = spec.latencies ?? [];
  for (const ms of lat) { observe(latencyMs, ms); observe(queueMs, ms / 4); }
  const len = (spec.lenSec ?? 60) * 1000;
  return {
    v: PROTOCOL_VERSION, deviceId, seq,
    start: new Date(spec.startMs).toISOString(), end: new Date(spec.startMs + len).toISOString(),
    bundleId: spec.bundleId === undefined ? 'bdl_a' : spec.bundleId, modelName: spec.bundleId === null ? null : 'fashion',
    requests: { ok: lat.length, invalid: 0, timeout: 0, rejected: 0, error: 0, ...spec.failed },
    items: lat.length * (spec.itemsPerRequest ?? 1), latencyMs, queueMs,
    system: { cpuPercent: 20, rssBytes: 100 * 2 ** 20, memAvailableBytes: 2 ** 30, diskFreeBytes: 10 * 2 ** 30, temperatureC: 45, ...spec.system },
  };
}

/** Consecutive windows of one device from `firstSeq`, each `lenSec` long, back to back from `startMs`. */
export function windowRun(deviceId: string, firstSeq: number, count: number, spec: WindowSpec & { latenciesOf?: (i: number) => number[] }): TelemetryWindow[] {
  const len = (spec.lenSec ?? 60) * 1000;
  return Array.from({ length: count }, (_, i) => makeWindow(deviceId, firstSeq + i, { ...spec, startMs: spec.startMs + i * len, latencies: spec.latenciesOf ? spec.latenciesOf(i) : spec.latencies }));
}

/** What the agent's spool does under pressure: consecutive windows merged into one. */
export function mergeAll(windows: readonly TelemetryWindow[]): TelemetryWindow {
  return windows.slice(1).reduce((a, b) => mergeWindows(a, b), windows[0]!);
}

export function makeBatch(deviceId: string, windows: readonly TelemetryWindow[], gaps: readonly TelemetryGap[] = [], sentAtMs = Date.now()): TelemetryBatch {
  return { v: PROTOCOL_VERSION, deviceId, sentAt: new Date(Math.floor(sentAtMs / 1000) * 1000).toISOString(), windows: [...windows], gaps: [...gaps] };
}

/** A seeded generator (LCG), so the data of a test is the same on every run. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** `n` log-uniform latencies between `lo` and `hi` ms. */
export function latencies(n: number, seed: number, lo = 0.5, hi = 200): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => lo * (hi / lo) ** r());
}
