/**
 * Live figures for rollout gates (issue 11 with the fleet-rollouts issue): per member device,
 * its live inference health on the new bundle since the new bundle became active, and on its
 * previous bundle in the hour before the rollout first touched it. core/rollout-gates.ts
 * compares the two, device by device (each against its own baseline, so a busy device and an
 * idle one are never mixed), as core/rollout-snapshot.ts LiveHealth rows.
 *
 * One scan of the raw windows covers every member (the time index over the range, filtered to
 * the members' devices), and answers are kept for a few seconds: a rollout round runs on every
 * report and tick, while the figures move once per telemetry window.
 */
import { TELEMETRY_LIMITS, histogramQuantile } from '@edgepack/protocol';
import { addInto, emptyAgg, totalOf, type Agg } from './aggregate.js';
import type { TelemetryStore } from './telemetry-store.js';

/** What a member's live figures are asked for. */
export interface LiveQuery {
  deviceId: string;
  /** The bundle the rollout installs. */
  bundleId: string;
  /** The bundle it replaces on this device (its own baseline); null: no baseline. */
  previousBundle: string | null;
  /** When the new bundle became active (orchestrator clock); null: not yet. */
  activeAt: number | null;
  /** When the rollout first touched the device: the baseline ends here. */
  firstDispatchedAt: number | null;
}

/** core/rollout-snapshot.ts LiveHealth, restated here so telemetry/ does not import core/. */
export interface LiveFigure {
  bundleId: string;
  requests: number;
  errorRate: number;
  p95Ms: number | null;
  windowEnd: number;
}

export interface LiveHealthOptions {
  /** How far before the first dispatch the baseline reaches (default 1 h). */
  baselineSec?: number;
  /** How long an answer is reused (default 5 s). */
  cacheMs?: number;
}

const MAX_RAW_WINDOW_MS = TELEMETRY_LIMITS.maxRawWindowSec * 1000;

function figure(bundleId: string, a: Agg, end: number): LiveFigure {
  const requests = totalOf(a.requests);
  let count = 0;
  for (const c of a.latency) count += c;
  return {
    bundleId, requests, errorRate: requests ? (requests - a.requests.ok) / requests : 0,
    p95Ms: histogramQuantile({ counts: a.latency, count, sumUs: a.latencySumUs }, 0.95), windowEnd: end,
  };
}

export class LiveHealthSource {
  private cache = new Map<string, { at: number; value: Map<string, LiveFigure[]> }>();

  constructor(private readonly deps: { telemetry: TelemetryStore; now: () => Date } & LiveHealthOptions) {}

  /**
   * Per device: [figures on the previous bundle, figures on the new one], each present only
   * when it has windows (oldest first, as LiveHealth wants the newest last). `key` names the
   * caller's set of queries for the cache (the rollout id).
   */
  figures(key: string, queries: readonly LiveQuery[]): Map<string, LiveFigure[]> {
    const now = this.deps.now().getTime();
    const hit = this.cache.get(key);
    if (hit && now - hit.at < (this.deps.cacheMs ?? 5000)) return hit.value;
    const value = this.compute(queries, now);
    this.cache.set(key, { at: now, value });
    if (this.cache.size > 1000) this.cache = new Map([[key, { at: now, value }]]);
    return value;
  }

  private compute(queries: readonly LiveQuery[], now: number): Map<string, LiveFigure[]> {
    const baseline = (this.deps.baselineSec ?? 3600) * 1000;
    const byDevice = new Map<string, { q: LiveQuery; prev: Agg; next: Agg; prevEnd: number; nextEnd: number }>();
    let from = Infinity;
    for (const q of queries) {
      if (q.activeAt === null && q.firstDispatchedAt === null) continue;
      byDevice.set(q.deviceId, { q, prev: emptyAgg(), next: emptyAgg(), prevEnd: 0, nextEnd: 0 });
      // The new bundle's first window starts at its period's boundary, before the switch; raw windows are at most an hour long.
      const start = Math.min(q.firstDispatchedAt !== null ? q.firstDispatchedAt - baseline : Infinity, q.activeAt !== null ? q.activeAt - MAX_RAW_WINDOW_MS : Infinity);
      from = Math.min(from, start);
    }
    const out = new Map<string, LiveFigure[]>();
    if (byDevice.size === 0) return out;
    const ids = [...byDevice.keys()];
    // In chunks, under SQLite's limit on bound parameters.
    for (let i = 0; i < ids.length; i += 5000) this.scan(ids.slice(i, i + 5000), byDevice, from, now, baseline);
    for (const [id, d] of byDevice) {
      const list: LiveFigure[] = [];
      if (d.prev.windows > 0 && d.q.previousBundle !== null) list.push(figure(d.q.previousBundle, d.prev, d.prevEnd));
      if (d.next.windows > 0) list.push(figure(d.q.bundleId, d.next, d.nextEnd));
      if (list.length) out.set(id, list);
    }
    return out;
  }

  private scan(ids: string[], byDevice: Map<string, { q: LiveQuery; prev: Agg; next: Agg; prevEnd: number; nextEnd: number }>, from: number, now: number, baseline: number): void {
    for (const row of this.deps.telemetry.scan('raw', { deviceIds: ids }, from, now + 1)) {
      const d = byDevice.get(row.deviceId);
      if (!d || row.bundleId === null) continue;
      const end = row.t + row.agg.longestSec * 1000;
      // Windows are per bundle, so a window of the new bundle that ends after the switch holds only requests it served.
      if (row.bundleId === d.q.bundleId && d.q.activeAt !== null && end > d.q.activeAt) {
        addInto(d.next, row.agg);
        d.nextEnd = Math.max(d.nextEnd, end);
      } else if (row.bundleId === d.q.previousBundle && d.q.firstDispatchedAt !== null && row.t >= d.q.firstDispatchedAt - baseline && row.t < d.q.firstDispatchedAt) {
        addInto(d.prev, row.agg);
        d.prevEnd = Math.max(d.prevEnd, end);
      }
    }
  }
}
