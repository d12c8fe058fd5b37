/**
 * The orchestrator's Prometheus metrics (GET /metrics), on a prom-client Registry the server
 * owns (never prom-client's global one), so two orchestrators in one process (tests) keep their
 * own counts.
 *
 * Fleet-level only: per-device figures stay in the JSON API (GET /v1/devices/:id/health), so a
 * fleet of 10,000 devices is not 10,000 × outcomes series. Labels are the outcome, the bundle
 * (one per build and profile) and the profile.
 *
 * `edgepack_inference_duration_seconds` is exported from the windows' own histograms, bucket by
 * bucket: its `le` bounds are protocol's TELEMETRY_BUCKET_BOUNDS_MS ÷ 1000 and every count a
 * device put in bucket k lands in le = bound[k] (cumulated, as Prometheus wants). prom-client's
 * Histogram only takes single observations, so this one is a small collector of its own,
 * registered beside the stock metrics and written out by the same Registry.
 *
 * Counters count what was committed since this process started (a restart resets them, which
 * Prometheus' rate() expects); gauges are read from the database at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { TELEMETRY_BUCKET_BOUNDS_MS, TELEMETRY_BUCKET_COUNT, TELEMETRY_OUTCOMES } from '@edgepack/protocol';
import type { Agg } from './aggregate.js';
import type { TelemetryStore } from './telemetry-store.js';

/** The `le` of each finite bucket, in seconds, written as protocol writes the ms bounds (six significant digits). */
export const DURATION_BUCKETS_SECONDS: readonly number[] = TELEMETRY_BUCKET_BOUNDS_MS.map((ms) => Number((ms / 1000).toPrecision(6)));

/** What the ingest tells the metrics after each commit. */
export interface IngestMetrics {
  /** Figures a commit added for one device's bundle (a merged window counts net of the parts it replaced). */
  committed(profile: string, bundleId: string | null, delta: Agg): void;
  /** Windows a device reported lost, once per newly recorded gap report. */
  lost(profile: string, reason: string, windows: number): void;
  windows(result: 'stored' | 'duplicate' | 'refused', n: number): void;
  /** One ingest transaction's duration and size. */
  commit(seconds: number, windows: number): void;
}

interface DurationSeries {
  labels: { bundle: string; profile: string };
  counts: number[];
  sumUs: number;
}

/**
 * A histogram fed with bucket counts instead of observations. It answers `get()` the way
 * prom-client's own Histogram does (`_bucket` values with `le`, then `_sum` and `_count`), which
 * is all Registry needs to write it out.
 */
class BucketedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, DurationSeries>();

  constructor(readonly name: string, readonly help: string) {}

  add(labels: { bundle: string; profile: string }, counts: readonly number[], sumUs: number): void {
    const key = `${labels.bundle}\u0000${labels.profile}`;
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: new Array<number>(TELEMETRY_BUCKET_COUNT).fill(0), sumUs: 0 }));
    for (let i = 0; i < TELEMETRY_BUCKET_COUNT; i++) s.counts[i]! += Math.max(0, counts[i] ?? 0);
    s.sumUs += Math.max(0, sumUs);
  }

  async get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i < DURATION_BUCKETS_SECONDS.length; i++) {
        cumulative += s.counts[i]!;
        values.push({ labels: { ...s.labels, le: DURATION_BUCKETS_SECONDS[i]! }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      cumulative += s.counts[TELEMETRY_BUCKET_COUNT - 1]!;
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: cumulative, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...s.labels }, value: s.sumUs / 1e6, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

export interface OrchestratorMetrics {
  registry: Registry;
  ingest: IngestMetrics;
  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string>;
  contentType: string;
}

export function createMetrics(deps: { telemetry: TelemetryStore; now: () => Date; processMetrics?: boolean }): OrchestratorMetrics {
  const registry = new Registry();
  if (deps.processMetrics !== false) collectDefaultMetrics({ register: registry });
  const { telemetry, now } = deps;

  new Gauge({
    name: 'edgepack_devices', help: 'Enrolled (unrevoked) devices by status and firmware profile.', labelNames: ['status', 'profile'], registers: [registry],
    collect() {
      this.reset();
      for (const r of telemetry.devicesByStatus()) this.set({ status: r.status, profile: r.profile }, r.n);
    },
  });
  const requests = new Counter({
    name: 'edgepack_inference_requests_total', help: 'On-device inference requests by outcome, from committed telemetry windows (since this orchestrator started).',
    labelNames: ['outcome', 'bundle', 'profile'], registers: [registry],
  });
  const duration = new BucketedHistogram('edgepack_inference_duration_seconds',
    'Latency of ok on-device inference requests (request received to response sent), merged exactly from the devices\' fixed-bucket window histograms.');
  registry.registerMetric(duration as unknown as Metric);
  new Gauge({
    name: 'edgepack_telemetry_lag_seconds',
    help: 'Per profile, the worst telemetry lag among online devices that send telemetry: now minus the end of the newest window stored for the device. Grows when a live device\'s telemetry stops arriving.',
    labelNames: ['profile'], registers: [registry],
    collect() {
      this.reset();
      const t = now().getTime();
      for (const r of telemetry.oldestLatestWindowByProfile()) this.set({ profile: r.profile }, Math.max(0, (t - r.oldestMs) / 1000));
    },
  });
  const dropped = new Counter({
    name: 'edgepack_telemetry_dropped_windows_total', help: 'Telemetry windows devices reported lost in gap reports (spool full, unclean stop), since this orchestrator started.',
    labelNames: ['reason', 'profile'], registers: [registry],
  });
  const windows = new Counter({
    name: 'edgepack_telemetry_windows_total', help: 'Telemetry windows received, by what the ingest did with them (stored, duplicate, refused).',
    labelNames: ['result'], registers: [registry],
  });
  const commits = new Histogram({
    name: 'edgepack_telemetry_commit_seconds', help: 'Duration of one telemetry ingest transaction (up to 1,000 windows).',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25], registers: [registry],
  });

  const ingest: IngestMetrics = {
    committed(profile, bundleId, delta) {
      const bundle = bundleId ?? 'none';
      for (const outcome of TELEMETRY_OUTCOMES) {
        const v = delta.requests[outcome];
        if (v > 0) requests.inc({ outcome, bundle, profile }, v);
      }
      if (delta.latency.some((c) => c > 0)) duration.add({ bundle, profile }, delta.latency, delta.latencySumUs);
    },
    lost(profile, reason, n) {
      if (n > 0) dropped.inc({ reason, profile }, n);
    },
    windows(result, n) {
      if (n > 0) windows.inc({ result }, n);
    },
    commit(seconds) {
      commits.observe(seconds);
    },
  };
  return { registry, ingest, text: () => registry.metrics(), contentType: registry.contentType };
}
