import type { Profile } from '@edgepack/firmware-profiles';
import type { ApiTokens } from '../api-tokens.js';
import type { AuditLog } from '../audit-log.js';
import type { BlobStore } from '../blob-store.js';
import type { BuildQueue } from '../build/build-queue.js';
import type { ServerConfig } from '../config.js';
import type { Store } from '../db/store.js';
import type { LimitOverrides, Limits } from '../limits.js';
import type { Logger } from '../logger.js';
import type { DeviceService } from '../services/devices.js';
import type { RolloutService } from '../services/rollouts.js';
import type { HealthService } from '../telemetry/health-service.js';

/**
 * What the HTTP app needs from the rest of the orchestrator. In a module of its own so route
 * plugins can take it without importing app.ts (which imports them).
 */
export interface AppDeps {
  store: Store;
  blobs: BlobStore;
  profiles: readonly Profile[];
  config: Pick<ServerConfig, 'maxModelBytes' | 'heartbeatSec' | 'enrollmentTokenTtlSec' | 'publicHost'>;
  /** The secret of <data-dir>/admin-token: registered as an admin row of the token table. */
  adminToken: string;
  signingPublicKey: string;
  mqttPort: () => number;
  /** Use cases the routes call (services/); a route handler only translates HTTP. */
  rollouts: RolloutService;
  devices: DeviceService;
  builds: BuildQueue;
  /** Live inference health (GET /v1/devices/:id/health, /v1/fleet/health). */
  health: HealthService;
  /** The Prometheus exposition (GET /metrics). */
  metrics: { text(): Promise<string>; contentType: string };
  now: () => Date;
  /** The orchestrator's logger; Fastify logs through it (a silent one when absent, as in most tests). */
  logger?: Logger;
  /** The token table and the audit log; made over `store`'s database when absent. */
  tokens?: ApiTokens;
  audit?: AuditLog;
  /** Limits on the HTTP door, over the defaults (limits.ts). */
  limits?: LimitOverrides['http'];
}

/** AppDeps with everything buildApp fills in. */
export interface ResolvedAppDeps extends AppDeps {
  tokens: ApiTokens;
  audit: AuditLog;
  limits: Limits['http'];
}

/** The options every route plugin is registered with. */
export interface RoutePluginOptions {
  deps: ResolvedAppDeps;
}
