import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadProfiles, type Profile } from '@edgepack/firmware-profiles';
import { errorMessage } from '@edgepack/protocol';
import type { FastifyInstance } from 'fastify';
import { BlobStore } from './blob-store.js';
import { lockDataDir, type DataDirLock } from './data-dir-lock.js';
import { BuildQueue } from './build/build-queue.js';
import type { ServerConfig } from './config.js';
import { startCronJobs } from './cron-jobs.js';
import { openDatabase } from './db/database.js';
import { Store } from './db/store.js';
import { buildApp } from './http/app.js';
import { loadOrCreateSecrets } from './keys.js';
import { createLogger, type Logger } from './logger.js';
import { startBroker } from './mqtt/broker.js';
import { DeviceGateway } from './mqtt/device-gateway.js';
import { createServices } from './services/wiring.js';
import { loadTrustChain } from './trust-chain.js';

export interface RunningServer {
  httpPort: number;
  mqttPort: number;
  adminToken: string;
  app: FastifyInstance;
  store: Store;
  close(): Promise<void>;
}

/** Wires the adapters (SQLite, blob store, Aedes, Fastify, cron) around the core and starts listening. */
export async function startServer(config: ServerConfig, opts: { log?: Logger; profiles?: Profile[]; now?: () => Date } = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.logLevel);
  const now = opts.now ?? (() => new Date());
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  // Before anything in the data dir is read or changed: a second orchestrator must touch nothing.
  const lock = lockDataDir(config.dataDir);
  try {
    return await startLocked(config, opts, log, now, lock);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function startLocked(config: ServerConfig, opts: { profiles?: Profile[] }, log: Logger, now: () => Date, lock: DataDirLock): Promise<RunningServer> {
  const profiles = opts.profiles ?? loadProfiles();
  const secrets = await loadOrCreateSecrets(config.dataDir);
  if (secrets.created) log.info({ file: join(config.dataDir, 'admin-token') }, 'created signing key and admin token');
  const trust = await loadTrustChain({ dataDir: config.dataDir, online: secrets.signing, log, now: now() });

  const db = openDatabase(join(config.dataDir, 'edgepack.db'));
  const store = new Store(db);
  const blobs = new BlobStore(join(config.dataDir, 'blobs'));
  await blobs.init();

  // A build interrupted by a crash cannot be resumed half-way; say so instead of leaving it running forever.
  for (const id of store.listUnfinishedBuildIds()) store.setBuildStatus(id, 'failed', 'orchestrator restarted during the build; start it again', now().toISOString());

  const broker = await startBroker({ store, log, host: config.mqttHost, port: config.mqttPort, now });
  const gateway = new DeviceGateway({ aedes: broker.aedes, store, blobs, log, now });
  const { engine, rollouts, devices } = createServices({
    db, store, log, now, publisher: gateway, signingSecretKey: secrets.signing.secretKey, signingPublicKey: secrets.signing.publicKey,
    profiles, config, mqttPort: () => broker.port,
    trust: { keyId: secrets.signing.keyId, roots: () => trust.roots, latest: () => trust.latest },
    sessions: {
      clearDesired: (deviceId) => gateway.clearDesired(deviceId),
      // Drop a live session at once; the revoked device can no longer authenticate.
      disconnect: (deviceId) => (broker.aedes as unknown as { clients: Record<string, { close(): void } | undefined> }).clients[deviceId]?.close(),
    },
  });
  gateway.events = rollouts;
  const builds = new BuildQueue({ store, blobs, profiles, signing: secrets.signing, bundleTtlDays: config.bundleTtlDays, log, now });

  const app = buildApp({
    store, blobs, profiles, config, adminToken: secrets.adminToken, signingPublicKey: secrets.signing.publicKey,
    mqttPort: () => broker.port, rollouts, devices, builds, now, logger: log,
  });
  await app.listen({ host: config.httpHost, port: config.httpPort });
  const address = app.server.address();
  const httpPort = typeof address === 'object' && address ? address.port : config.httpPort;

  // Picks up where things stood: each device's latest desired state again, then a round for every rollout with work left.
  const resumed = await rollouts.resume().catch((err) => { log.error({ err }, 'resuming rollouts failed'); return null; });
  const cron = startCronJobs({ log, now, offlineAfterSec: config.offlineAfterSec, rollouts, rolloutTickSec: config.rolloutTickSec });
  log.info({ httpPort, mqttPort: broker.port, dataDir: config.dataDir, republished: resumed?.republished ?? 0, rollouts: resumed?.rollouts ?? 0, profiles: profiles.length }, 'edgepack orchestrator listening');

  let closed = false;
  return {
    httpPort,
    mqttPort: broker.port,
    adminToken: secrets.adminToken,
    app,
    store,
    async close() {
      if (closed) return;
      closed = true;
      await cron.stop();
      await engine.close();
      await app.close();
      await builds.close();
      await broker.close();
      db.close();
      lock.release();
    },
  };
}
