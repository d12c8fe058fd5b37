import type { Profile } from '@edgepack/firmware-profiles';
import type { Db } from '../db/database.js';
import { RolloutStore } from '../db/rollout-store.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../logger.js';
import { DesiredStates, type DesiredPublisher, type DesiredTrust } from './desired-states.js';
import { DeviceService, type DeviceSessions } from './devices.js';
import { RolloutEngine, type LiveFigures } from './rollout-engine.js';
import { RolloutService } from './rollouts.js';
import { WriteBehind } from './write-behind.js';

export interface Services {
  rolloutStore: RolloutStore;
  desired: DesiredStates;
  writes: WriteBehind;
  engine: RolloutEngine;
  rollouts: RolloutService;
  devices: DeviceService;
}

/**
 * The use cases and the rollout executor over one database, one desired-state publisher (the
 * MQTT edge) and one clock: what the server wires around the broker and the HTTP app, and what
 * tests build around a publisher of their own.
 */
export function createServices(deps: {
  db: Db; store: Store; log: Logger; now: () => Date; publisher: DesiredPublisher; signingSecretKey: string; signingPublicKey: string;
  profiles: readonly Profile[]; config: { enrollmentTokenTtlSec: number; heartbeatSec: number; publicHost: string };
  mqttPort: () => number; sessions?: DeviceSessions; coalesceMs?: number;
  /** Live inference figures for rollout gates with `gate.live` (telemetry/live-health.ts). */
  live?: LiveFigures;
  /** The online key's id, the root chain sent with every desired state, and the root pinned at enrollment (trust-chain.ts). */
  trust?: DesiredTrust & { latest: () => unknown };
  /** The CA enrollment pins and the plain MQTT port (DeviceService); absent where the app runs without TLS. */
  tls?: { caCertificate: () => string; caFingerprint: () => string; plainMqttPort: () => number | null };
}): Services {
  const { db, store, log, now } = deps;
  const rolloutStore = new RolloutStore(db);
  const desired = new DesiredStates({
    store, rollouts: rolloutStore, publisher: deps.publisher, signingSecretKey: deps.signingSecretKey, now, log, ...(deps.trust ? { trust: deps.trust } : {}),
  });
  // Facts lost to a failed write (a full disk) leave the kept snapshots ahead of the database: forget them.
  const writes: WriteBehind = new WriteBehind({ rollouts: rolloutStore, log, onLost: () => engine.forget() });
  const engine: RolloutEngine = new RolloutEngine({ rollouts: rolloutStore, desired, log, now, writes, ...(deps.coalesceMs !== undefined ? { coalesceMs: deps.coalesceMs } : {}), ...(deps.live ? { live: deps.live } : {}) });
  const rollouts = new RolloutService({ store, rollouts: rolloutStore, engine, desired, log, now, writes });
  const devices = new DeviceService({
    store, profiles: deps.profiles, now, config: deps.config, signingPublicKey: deps.signingPublicKey, mqttPort: deps.mqttPort, listener: rollouts,
    ...(deps.sessions ? { sessions: deps.sessions } : {}), ...(deps.trust ? { trustedRoot: deps.trust.latest } : {}),
    ...(deps.tls ? { tls: deps.tls } : {}),
  });
  return { rolloutStore, desired, writes, engine, rollouts, devices };
}
