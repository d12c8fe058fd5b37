import { join } from 'node:path';
import type { ActiveRecord } from '../bundle-slots.js';
import type { DeviceLink } from '../device-link.js';
import type { Logger } from '../logger.js';
import type { RunnerOptions } from '../runtime/runner.js';
import { SystemSampler, type SystemSamplerOptions } from '../telemetry/system-figures.js';
import { TelemetryPipeline } from '../telemetry/telemetry-pipeline.js';
import { TelemetrySpool } from '../telemetry/telemetry-spool.js';
import { WindowAggregator } from '../telemetry/window-aggregator.js';
import { createServingHandler, listenServing, type ListenOptions } from './http-server.js';
import { InferenceService, type RequestRecord, type ServingObserver, type SwapRecord } from './inference-service.js';
import type { ServedModel } from './served-model.js';
import { ServingMetrics } from './serving-metrics.js';

export interface DeviceServingOptions {
  dataDir: string;
  log: Logger;
  agentVersion: string;
  /** The agent's MQTT connection, which telemetry shares. */
  link: DeviceLink;
  listen: ListenOptions;
  concurrency: number;
  maxQueued: number;
  defaultTimeoutMs: number;
  memoryFactor: number;
  maxBodyBytes?: number;
  /** Runtime settings for served models (threads, spinning). */
  runner?: RunnerOptions;
  telemetry: {
    windowSec: number;
    spoolBytes: number;
    reconnectJitterMs?: number;
    maxWindowsPerSec?: number;
    ackTimeoutMs?: number;
    mergeLevelsSec?: readonly number[];
  };
  /** Epoch ms; defaults to the wall clock. */
  now?: () => number;
  /** Where system figures come from (tests point these at files of their own). */
  system?: Omit<SystemSamplerOptions, 'dataDir'>;
  /** Overrides how the service loads a bundle (tests slow it down) and what memory it sees. */
  load?: (active: ActiveRecord) => Promise<ServedModel>;
  availableMemoryBytes?: () => number | Promise<number>;
}

export interface DeviceServing {
  url?: string;
  socketPath?: string;
  service: InferenceService;
  telemetry: TelemetryPipeline;
  spool: TelemetrySpool;
  /** Give to the agent as onActiveChanged. */
  activate(active: ActiveRecord | null): Promise<void>;
  /** Stops taking requests, lets the ones in progress finish, flushes telemetry to the spool. */
  stop(): Promise<void>;
}

/**
 * The device's inference service and its telemetry, wired together: the HTTP server answers
 * from the service, the service reports every request to the telemetry windows and /metrics,
 * and the windows travel over the agent's own MQTT connection.
 */
export async function startDeviceServing(o: DeviceServingOptions): Promise<DeviceServing> {
  const now = o.now ?? (() => Date.now());
  const sampler = new SystemSampler({ dataDir: o.dataDir, ...o.system });
  const spool = await TelemetrySpool.open({
    dir: join(o.dataDir, 'telemetry'), capBytes: o.telemetry.spoolBytes, log: o.log, now,
    ...(o.telemetry.mergeLevelsSec ? { mergeLevelsSec: o.telemetry.mergeLevelsSec } : {}),
  });
  const aggregator = new WindowAggregator(o.telemetry.windowSec, now);
  const telemetry = new TelemetryPipeline({
    link: o.link, log: o.log, spool, aggregator, sampler, now,
    ...(o.telemetry.reconnectJitterMs !== undefined ? { reconnectJitterMs: o.telemetry.reconnectJitterMs } : {}),
    ...(o.telemetry.maxWindowsPerSec !== undefined ? { maxWindowsPerSec: o.telemetry.maxWindowsPerSec } : {}),
    ...(o.telemetry.ackTimeoutMs !== undefined ? { ackTimeoutMs: o.telemetry.ackTimeoutMs } : {}),
  });
  let service: InferenceService | undefined;
  const metrics = new ServingMetrics({
    ready: () => service?.ready ?? false,
    inFlight: () => service?.model?.queue.inFlight ?? 0,
    queued: () => service?.model?.queue.depth ?? 0,
    telemetry: () => ({ spoolBytes: spool.bytesOnDisk, pendingEntries: spool.pending.length, droppedWindows: spool.stats.droppedWindows, mergedWindows: spool.stats.mergedWindows }),
  });
  const observer: ServingObserver = {
    request: (r: RequestRecord) => { telemetry.request(r); metrics.request(r); },
    swap: (s: SwapRecord) => { telemetry.swap(s); metrics.swap(s); },
  };
  service = new InferenceService({
    log: o.log, bundleDir: (id) => join(o.dataDir, 'bundles', id), concurrency: o.concurrency, maxQueued: o.maxQueued,
    defaultTimeoutMs: o.defaultTimeoutMs, memoryFactor: o.memoryFactor,
    availableMemoryBytes: o.availableMemoryBytes ?? (() => sampler.availableMemoryBytes()), observer,
    ...(o.load ? { load: o.load } : {}),
    ...(o.runner ? { runner: o.runner } : {}),
  });
  const svc = service;
  const handler = createServingHandler({ service: svc, metrics, log: o.log, agentVersion: o.agentVersion, maxBodyBytes: o.maxBodyBytes ?? 64 << 20 });
  let listener;
  try {
    listener = await listenServing(handler, o.listen);
  } catch (err) {
    await spool.close();
    throw err;
  }
  telemetry.start();
  const l = listener;
  return {
    ...(l.url ? { url: l.url } : {}),
    ...(l.socketPath ? { socketPath: l.socketPath } : {}),
    service: svc,
    telemetry,
    spool,
    async activate(active) {
      try {
        await svc.activate(active);
      } finally {
        const m = svc.model;
        aggregator.setActive(m?.bundleId ?? null, m?.name ?? null);
      }
    },
    async stop() {
      await l.close();
      await telemetry.stop();
      await svc.close();
    },
  };
}
