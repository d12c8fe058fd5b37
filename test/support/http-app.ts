// An orchestrator HTTP app over real parts, for tests that drive it with inject(): a SQLite file
// and a blob store in a temp dir, real builds and rollouts (the real services and rollout
// engine). Only the MQTT edge (publishDesired) records what it is given instead of publishing.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadProfiles } from '@edgepack/firmware-profiles';
import { generateKeyPair, keyId, type DesiredState } from '@edgepack/protocol';
import { openDatabase, type Db } from '@edgepack/orchestrator/db/database.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { BlobStore } from '@edgepack/orchestrator/blob-store.js';
import { BuildQueue } from '@edgepack/orchestrator/build/build-queue.js';
import { createServices, type Services } from '@edgepack/orchestrator/services/wiring.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import type { AppDeps } from '@edgepack/orchestrator/http/app-deps.js';
import { telemetryAppDeps } from './telemetry-deps.js';

export const ADMIN_TOKEN = 'ept_test-admin-token';
export const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` };

export interface TestDeps {
  deps: AppDeps;
  dir: string;
  db: Db;
  store: Store;
  builds: BuildQueue;
  /** Every desired state published, parsed; `null` for a cleared one. */
  published: { deviceId: string; desired: DesiredState | null }[];
  services: Services;
  clock: { ms: number };
  close: () => Promise<void>;
}

export async function testDeps(prefix: string): Promise<TestDeps> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `edgepack-${prefix}-`));
  const db = openDatabase(path.join(dir, 'edgepack.db'));
  const store = new Store(db);
  const blobs = new BlobStore(path.join(dir, 'blobs'));
  await blobs.init();
  const profiles = loadProfiles();
  const kp = generateKeyPair();
  const signing = { ...kp, keyId: keyId(kp.publicKey) };
  const clock = { ms: Date.parse('2026-06-01T12:00:00.000Z') };
  const now = () => new Date(clock.ms);
  const log = createLogger('error');
  const builds = new BuildQueue({ store, blobs, profiles, signing, bundleTtlDays: 30, log, now });
  const published: TestDeps['published'] = [];
  const config = { maxModelBytes: 64 << 20, heartbeatSec: 15, enrollmentTokenTtlSec: 3600, publicHost: 'orch.local' };
  const services = createServices({
    db, store, log, now, signingSecretKey: signing.secretKey, signingPublicKey: signing.publicKey, profiles, config, mqttPort: () => 18830,
    publisher: {
      async publishDesired(deviceId, desired) { published.push({ deviceId, desired: JSON.parse(desired) as DesiredState }); },
      async clearDesired(deviceId) { published.push({ deviceId, desired: null }); },
    },
  });
  const deps: AppDeps = {
    store, blobs, profiles, config, adminToken: ADMIN_TOKEN, signingPublicKey: signing.publicKey, mqttPort: () => 18830,
    rollouts: services.rollouts, devices: services.devices, builds, now,
    ...telemetryAppDeps(db, store, now),
    // Tests drive every request from one address; the failed-authentication limit has tests of its own.
    limits: { authFailures: { maxFailures: 10_000, windowMs: 60_000, blockMs: 1000, maxBlockMs: 1000 } },
  };
  return {
    deps, dir, db, store, builds, published, clock, services,
    close: async () => {
      await services.engine.close();
      await builds.idle();
      db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An AppDeps logger that keeps every line it is given, at error level and above. The one place
 * tests build an HTTP logger, so a change in how AppDeps.logger is made (options object or a
 * logger instance) is one change here.
 */
export function capturingLogger(lines: string[]): AppDeps['logger'] {
  return createLogger('error', { write: (line: string) => { lines.push(line); } });
}
