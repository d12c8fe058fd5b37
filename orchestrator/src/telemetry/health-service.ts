/**
 * Reading live inference health: one device's, or the fleet's (by profile, tag, bundle), over
 * time. The use case behind GET /v1/devices/:id/health and GET /v1/fleet/health, and the live
 * figures rollout gates compare (liveHealth).
 *
 * Every figure comes from Aggs added up exactly (aggregate.ts); percentiles come from the
 * merged fixed-bucket histograms through protocol's histogramQuantile, never from averaged
 * percentiles.
 */
import { EdgepackError, histogramQuantile } from '@edgepack/protocol';
import { addInto, emptyAgg, figuresOf, totalOf, type Agg, type Figures } from './aggregate.js';
import { resolveRange, type RangeQuery, type ResolvedRange } from './health-range.js';
import type { TelemetryRetention } from './rollups.js';
import type { DeviceScope, GapRow, Source, TelemetryStore } from './telemetry-store.js';

export interface HealthPoint extends Figures {
  /** Bucket start. */
  t: string;
}

export interface BundleFigures extends Figures {
  bundleId: string | null;
}

export interface HealthSeries {
  from: string;
  to: string;
  step: number;
  source: Source;
  /** Devices that sent windows in the range. */
  reportingDevices: number;
  summary: Figures;
  bundles: BundleFigures[];
  points: HealthPoint[];
}

export interface GapView {
  seq: number;
  lastSeq: number;
  windows: number;
  lostWindows: number;
  from: string;
  to: string;
  reason: string;
  requests: { ok: number; invalid: number; timeout: number; rejected: number; error: number } | null;
}

export interface DeviceHealth extends HealthSeries {
  deviceId: string;
  gaps: GapView[];
}

export interface FleetHealth extends HealthSeries {
  filter: { profile: string | null; tag: string | null; bundle: string | null };
  /** Unrevoked devices matching profile and tag. */
  devices: number;
  gapReports: number;
  lostWindows: number;
}

/** One device's live figures on one bundle (what core/rollout-snapshot.ts LiveHealth holds). */
export interface LiveFigures {
  bundleId: string;
  requests: number;
  errorRate: number;
  p95Ms: number | null;
  windowEnd: number;
}

const iso = (ms: number) => new Date(ms).toISOString();
const MAX_GAPS = 100;

export class HealthService {
  constructor(private readonly deps: {
    telemetry: TelemetryStore;
    devices: { getDevice(id: string): { revokedAt: string | null } | undefined };
    now: () => Date;
    retention: TelemetryRetention;
  }) {}

  private series(scope: DeviceScope, q: RangeQuery, bundle: string | undefined): { range: ResolvedRange; series: HealthSeries } {
    const range = resolveRange(q, this.deps.now().getTime(), this.deps.retention);
    const stepMs = range.stepSec * 1000;
    const buckets = new Map<number, Agg>();
    const bundles = new Map<string | null, Agg>();
    const total = emptyAgg();
    const devices = new Set<string>();
    for (const row of this.deps.telemetry.scan(range.source, scope, range.fromMs, range.toMs, bundle)) {
      const t = Math.floor(row.t / stepMs) * stepMs;
      let b = buckets.get(t);
      if (!b) buckets.set(t, (b = emptyAgg()));
      addInto(b, row.agg);
      let g = bundles.get(row.bundleId);
      if (!g) bundles.set(row.bundleId, (g = emptyAgg()));
      addInto(g, row.agg);
      addInto(total, row.agg);
      devices.add(row.deviceId);
    }
    const seconds = (range.toMs - range.fromMs) / 1000;
    return {
      range,
      series: {
        from: iso(range.fromMs), to: iso(range.toMs), step: range.stepSec, source: range.source, reportingDevices: devices.size,
        summary: figuresOf(total, seconds),
        bundles: [...bundles].sort(([, a], [, b]) => totalOf(b.requests) - totalOf(a.requests)).map(([bundleId, a]) => ({ bundleId, ...figuresOf(a, seconds) })),
        points: [...buckets].sort(([a], [b]) => a - b).map(([t, a]) => ({ t: iso(t), ...figuresOf(a, range.stepSec) })),
      },
    };
  }

  device(deviceId: string, q: RangeQuery): DeviceHealth {
    const d = this.deps.devices.getDevice(deviceId);
    if (!d || d.revokedAt) throw new EdgepackError('DEVICE_NOT_FOUND', `device ${deviceId} not found`);
    const scope = { deviceId };
    const { range, series } = this.series(scope, q, undefined);
    return { deviceId, ...series, gaps: this.deps.telemetry.gaps(scope, range.fromMs, range.toMs, MAX_GAPS).map(gapView) };
  }

  fleet(filter: { profile?: string; tag?: string; bundle?: string }, q: RangeQuery): FleetHealth {
    const scope = { ...(filter.profile !== undefined ? { profile: filter.profile } : {}), ...(filter.tag !== undefined ? { tag: filter.tag } : {}) };
    const { range, series } = this.series(scope, q, filter.bundle);
    const gaps = this.deps.telemetry.gapTotals(scope, range.fromMs, range.toMs);
    return {
      filter: { profile: filter.profile ?? null, tag: filter.tag ?? null, bundle: filter.bundle ?? null },
      devices: this.deps.telemetry.countDevices(scope),
      ...series,
      gapReports: gaps.reports,
      lostWindows: gaps.lostWindows,
    };
  }

  /**
   * A device's live figures on `bundleId` from the raw windows starting in [fromMs, toMs): its
   * requests, error rate (non-ok ÷ all) and p95 of the merged latency histogram.
   */
  liveFigures(deviceId: string, bundleId: string, fromMs: number, toMs: number): LiveFigures | null {
    const a = emptyAgg();
    let end = 0;
    for (const row of this.deps.telemetry.scan('raw', { deviceId }, fromMs, toMs, bundleId)) {
      addInto(a, row.agg);
      end = Math.max(end, row.t + row.agg.longestSec * 1000);
    }
    if (a.windows === 0) return null;
    const requests = totalOf(a.requests);
    return {
      bundleId, requests, errorRate: requests ? (requests - a.requests.ok) / requests : 0,
      p95Ms: histogramQuantile({ counts: a.latency, count: a.latency.reduce((x, y) => x + y, 0), sumUs: a.latencySumUs }, 0.95), windowEnd: end,
    };
  }
}

function gapView(g: GapRow): GapView {
  return { seq: g.seq, lastSeq: g.lastSeq, windows: g.windows, lostWindows: g.lostWindows, from: iso(g.fromMs), to: iso(g.toMs), reason: g.reason, requests: g.requests ? { ...g.requests } : null };
}
