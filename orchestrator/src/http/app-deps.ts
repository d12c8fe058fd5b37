import type { Profile } from '@edgepack/firmware-profiles';
import type { BlobStore } from '../blob-store.js';
import type { BuildQueue } from '../build/build-queue.js';
import type { ServerConfig } from '../config.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../logger.js';
import type { DeviceService } from '../services/devices.js';
import type { RolloutService } from '../services/rollouts.js';

/**
 * What the HTTP app needs from the rest of the orchestrator. In a module of its own so route
 * plugins can take it without importing app.ts (which imports them).
 */
export interface AppDeps {
  store: Store;
  blobs: BlobStore;
  profiles: readonly Profile[];
  config: Pick<ServerConfig, 'maxModelBytes' | 'heartbeatSec' | 'enrollmentTokenTtlSec' | 'publicHost'>;
  adminToken: string;
  signingPublicKey: string;
  mqttPort: () => number;
  /** Use cases the routes call (services/); a route handler only translates HTTP. */
  rollouts: RolloutService;
  devices: DeviceService;
  builds: BuildQueue;
  now: () => Date;
  /** The orchestrator's logger; Fastify logs through it (a silent one when absent, as in most tests). */
  logger?: Logger;
}

/** The options every route plugin is registered with. */
export interface RoutePluginOptions {
  deps: AppDeps;
}
