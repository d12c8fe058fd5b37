import type { Aedes } from 'aedes';
import type { Db } from '../db/database.js';
import type { Logger } from '../logger.js';
import { HealthService } from './health-service.js';
import { TelemetryIngest, brokerReplies, type TelemetryIngestOptions } from './ingest.js';
import { LiveHealthSource } from './live-health.js';
import { createMetrics, type OrchestratorMetrics } from './metrics.js';
import { TelemetryJobs, type TelemetryRetention } from './rollups.js';
import { TelemetryStore } from './telemetry-store.js';

export interface Telemetry {
  store: TelemetryStore;
  metrics: OrchestratorMetrics;
  health: HealthService;
  jobs: TelemetryJobs;
  /** Each rollout member's live figures, for rollout gates with `gate.live`. */
  live: LiveHealthSource;
  /** The ingest, once connected to the broker. */
  ingest?: TelemetryIngest;
  /** Starts ingesting: acks and notices go out through `aedes`. */
  connect(aedes: Aedes): TelemetryIngest;
  /** Commits and acks what is queued. */
  close(): Promise<void>;
}

/** The telemetry parts over one database and clock, as the server wires them. */
export function createTelemetry(deps: {
  db: Db;
  devices: { getDevice(id: string): { profile: string; revokedAt: string | null } | undefined };
  log: Logger;
  now: () => Date;
  retention: TelemetryRetention;
  ingest?: TelemetryIngestOptions;
}): Telemetry {
  const store = new TelemetryStore(deps.db);
  const metrics = createMetrics({ telemetry: store, now: deps.now });
  const t: Telemetry = {
    store,
    metrics,
    health: new HealthService({ telemetry: store, devices: deps.devices, now: deps.now, retention: deps.retention }),
    jobs: new TelemetryJobs({ telemetry: store, log: deps.log, now: deps.now, retention: deps.retention }),
    live: new LiveHealthSource({ telemetry: store, now: deps.now }),
    connect(aedes) {
      // The device check on every message is the telemetry store's own prepared lookup.
      t.ingest = new TelemetryIngest({ telemetry: store, devices: { getDevice: (id) => store.deviceInfo(id) }, replies: brokerReplies(aedes), log: deps.log, now: deps.now, metrics: metrics.ingest, ...deps.ingest });
      return t.ingest;
    },
    async close() {
      await t.ingest?.close();
    },
  };
  return t;
}
