import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TELEMETRY_BUCKET_BOUNDS_MS } from '@edgepack/protocol';
import type { RequestRecord, ServingObserver, SwapRecord } from './inference-service.js';

export interface ServingGauges {
  ready: () => boolean;
  inFlight: () => number;
  queued: () => number;
  /** Telemetry spool figures, when telemetry runs. */
  telemetry?: () => { spoolBytes: number; pendingEntries: number; droppedWindows: number; mergedWindows: number };
}

/** The protocol's latency buckets in seconds, so local scrapes and fleet telemetry line up. */
const BUCKETS_SEC = TELEMETRY_BUCKET_BOUNDS_MS.map((ms) => ms / 1000);

/**
 * The agent's own /metrics for local scrapers (Prometheus text format), on a registry of its
 * own rather than prom-client's global one. Labels stay few: model, bundle, outcome.
 */
export class ServingMetrics implements ServingObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'model' | 'bundle' | 'outcome'>;
  private readonly items: Counter<'model' | 'bundle'>;
  private readonly duration: Histogram<'model' | 'bundle'>;
  private readonly queue: Histogram<'model' | 'bundle'>;
  private readonly swaps: Counter<'held'>;

  constructor(gauges: ServingGauges) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'edgepack_agent_inference_requests_total', help: 'Inference requests by outcome (ok, invalid, timeout, rejected, error).', labelNames: ['model', 'bundle', 'outcome'], registers });
    this.items = new Counter({ name: 'edgepack_agent_inference_items_total', help: 'Batch items of the ok inference requests.', labelNames: ['model', 'bundle'], registers });
    this.duration = new Histogram({ name: 'edgepack_agent_inference_duration_seconds', help: 'Request received to response sent, ok requests.', labelNames: ['model', 'bundle'], buckets: BUCKETS_SEC, registers });
    this.queue = new Histogram({ name: 'edgepack_agent_inference_queue_seconds', help: 'Request received to a runner slot, ok requests.', labelNames: ['model', 'bundle'], buckets: BUCKETS_SEC, registers });
    this.swaps = new Counter({ name: 'edgepack_agent_model_swaps_total', help: 'Model switches; held="true" when memory did not allow two models and requests were held.', labelNames: ['held'], registers });
    new Gauge({ name: 'edgepack_agent_ready', help: '1 when a model is loaded, warmed and golden-checked and no switch holds requests.', registers, collect() { this.set(gauges.ready() ? 1 : 0); } });
    new Gauge({ name: 'edgepack_agent_inference_in_flight', help: 'Inference runs in progress.', registers, collect() { this.set(gauges.inFlight()); } });
    new Gauge({ name: 'edgepack_agent_inference_queued', help: 'Inference requests waiting for a runner slot.', registers, collect() { this.set(gauges.queued()); } });
    if (gauges.telemetry) {
      const t = gauges.telemetry;
      new Gauge({ name: 'edgepack_agent_telemetry_spool_bytes', help: 'Bytes of the telemetry spool file.', registers, collect() { this.set(t().spoolBytes); } });
      new Gauge({ name: 'edgepack_agent_telemetry_pending_entries', help: 'Telemetry windows and gap reports not yet acknowledged.', registers, collect() { this.set(t().pendingEntries); } });
      new Gauge({ name: 'edgepack_agent_telemetry_dropped_windows', help: 'Windows dropped since start because the spool was full (reported as gaps).', registers, collect() { this.set(t().droppedWindows); } });
      new Gauge({ name: 'edgepack_agent_telemetry_merged_windows', help: 'Window merges since start because the spool was short of room.', registers, collect() { this.set(t().mergedWindows); } });
    }
    collectDefaultMetrics({ register: this.registry, prefix: 'edgepack_agent_' });
  }

  request(r: RequestRecord): void {
    const model = r.modelName ?? '';
    const bundle = r.bundleId ?? '';
    this.requests.inc({ model, bundle, outcome: r.outcome });
    if (r.outcome !== 'ok') return;
    this.items.inc({ model, bundle }, r.items);
    this.duration.observe({ model, bundle }, r.latencyMs / 1000);
    this.queue.observe({ model, bundle }, Math.min(r.queueMs ?? 0, r.latencyMs) / 1000);
  }

  swap(s: SwapRecord): void {
    this.swaps.inc({ held: String(s.held) });
  }

  text(): Promise<string> { return this.registry.metrics(); }
  get contentType(): string { return this.registry.contentType; }
}
