// The telemetry parts of AppDeps (live health and /metrics) over a test's own database, as the
// server wires them: tests that build an HTTP app by hand spread these in.
import type { Db } from '@edgepack/orchestrator/db/database.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import type { AppDeps } from '@edgepack/orchestrator/http/app-deps.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { DEFAULT_RETENTION } from '@edgepack/orchestrator/telemetry/rollups.js';
import { createTelemetry } from '@edgepack/orchestrator/telemetry/wiring.js';

export function telemetryAppDeps(db: Db, store: Store, now: () => Date): Pick<AppDeps, 'health' | 'metrics'> {
  const telemetry = createTelemetry({ db, devices: store, log: createLogger('error'), now, retention: DEFAULT_RETENTION });
  return { health: telemetry.health, metrics: telemetry.metrics };
}
