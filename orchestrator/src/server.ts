import { mkdir } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
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
import type { TelemetryIngestOptions } from './telemetry/ingest.js';
import { DEFAULT_RETENTION } from './telemetry/rollups.js';
import { createTelemetry, type Telemetry } from './telemetry/wiring.js';
import { loadTrustChain } from './trust-chain.js';
import { RENEWAL_CHECK_MS, loadTlsMaterial, renewTlsMaterial, type TlsMaterial } from './tls-material.js';

export interface RunningServer {
  /** HTTPS and MQTTS. */
  httpPort: number;
  mqttPort: number;
  /** Plain HTTP and MQTT, only with --allow-plaintext. */
  plainHttpPort?: number;
  plainMqttPort?: number;
  /** The CA devices pin (PEM) and its `sha256:` fingerprint. */
  caCertificate: string;
  caFingerprint: string;
  adminToken: string;
  app: FastifyInstance;
  store: Store;
  telemetry: Telemetry;
  close(): Promise<void>;
}

/** Wires the adapters (SQLite, blob store, Aedes, Fastify, cron) around the core and starts listening. */
export async function startServer(config: ServerConfig, opts: { log?: Logger; profiles?: Profile[]; now?: () => Date; telemetry?: TelemetryIngestOptions } = {}): Promise<RunningServer> {
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

async function startLocked(config: ServerConfig, opts: { profiles?: Profile[]; telemetry?: TelemetryIngestOptions }, log: Logger, now: () => Date, lock: DataDirLock): Promise<RunningServer> {
  const profiles = opts.profiles ?? loadProfiles();
  const secrets = await loadOrCreateSecrets(config.dataDir);
  if (secrets.created) log.info({ file: join(config.dataDir, 'admin-token') }, 'created signing key and admin token');
  const trust = await loadTrustChain({ dataDir: config.dataDir, online: secrets.signing, log, now: now() });

  const db = openDatabase(join(config.dataDir, 'edgepack.db'));
  const store = new Store(db);
  const telemetry = createTelemetry({ db, devices: store, log, now, retention: config.telemetryRetention ?? DEFAULT_RETENTION, ...(opts.telemetry ? { ingest: opts.telemetry } : {}) });
  const blobs = new BlobStore(join(config.dataDir, 'blobs'));
  await blobs.init();

  // A build interrupted by a crash cannot be resumed half-way; say so instead of leaving it running forever.
  for (const id of store.listUnfinishedBuildIds()) store.setBuildStatus(id, 'failed', 'orchestrator restarted during the build; start it again', now().toISOString());

  // HTTPS and MQTTS always; plain listeners beside them only with --allow-plaintext.
  let tls: TlsMaterial = await loadTlsMaterial({ dataDir: config.dataDir, settings: config.tls, now: now(), log });
  const broker = await startBroker({
    store, log, now, host: config.mqttHost, port: config.mqttPort, tls: { key: tls.key, cert: tls.cert },
    ...(config.allowPlaintext ? { plain: { host: config.mqttHost, port: config.plainMqttPort } } : {}),
    sessionMaxAgeMs: config.mqttSessionMaxAgeSec * 1000,
    ...(config.limits?.mqtt ? { limits: config.limits.mqtt } : {}),
  });
  const gateway = new DeviceGateway({ aedes: broker.aedes, store, blobs, log, now, limits: broker.limits });
  const { engine, rollouts, devices } = createServices({
    db, store, log, now, publisher: gateway, signingSecretKey: secrets.signing.secretKey, signingPublicKey: secrets.signing.publicKey,
    profiles, config, mqttPort: () => broker.port, live: telemetry.live,
    trust: { keyId: secrets.signing.keyId, roots: () => trust.roots, latest: () => trust.latest },
    tls: { caCertificate: () => tls.caCertificate, caFingerprint: () => tls.caFingerprint, plainMqttPort: () => broker.plainPort ?? null },
    sessions: {
      clearDesired: (deviceId) => gateway.clearDesired(deviceId),
      // Drop a live session at once; the revoked device can no longer authenticate.
      disconnect: (deviceId) => (broker.aedes as unknown as { clients: Record<string, { close(): void } | undefined> }).clients[deviceId]?.close(),
    },
  });
  gateway.events = rollouts;
  gateway.telemetry = telemetry.connect(broker.aedes);
  const builds = new BuildQueue({ store, blobs, profiles, signing: secrets.signing, bundleTtlDays: config.bundleTtlDays, log, now });

  const app = buildApp({
    store, blobs, profiles, config, adminToken: secrets.adminToken, signingPublicKey: secrets.signing.publicKey,
    mqttPort: () => broker.port, rollouts, devices, builds, now, logger: log, health: telemetry.health, metrics: telemetry.metrics, ...(config.limits?.http ? { limits: config.limits.http } : {}),
  }, { https: { key: tls.key, cert: tls.cert } });
  let plainHttp: HttpServer | undefined;
  try {
    await app.listen({ host: config.httpHost, port: config.httpPort });
    if (config.allowPlaintext) plainHttp = await listenPlainHttp(app, config.httpHost, config.plainHttpPort);
  } catch (err) {
    await app.close().catch(() => undefined);
    await engine.close();
    await builds.close();
    await broker.close();
    db.close();
    throw err;
  }
  const address = app.server.address();
  const httpPort = typeof address === 'object' && address ? address.port : config.httpPort;
  const plainAddress = plainHttp?.address();
  const plainHttpPort = typeof plainAddress === 'object' && plainAddress ? plainAddress.port : undefined;

  // A self-made server certificate is issued again before it ends; new connections get it, open ones keep theirs.
  const renewal = setInterval(() => {
    renewTlsMaterial(tls, { dataDir: config.dataDir, settings: config.tls, now: now(), log }).then((next) => {
      if (!next) return;
      (app.server as unknown as TlsServer).setSecureContext({ key: next.key, cert: next.cert });
      broker.setSecureContext(next);
      tls = next;
      log.info({ notAfter: next.serverNotAfter }, 'TLS server certificate renewed');
    }, (err) => log.error({ err }, 'TLS certificate renewal failed; the current one stays'));
  }, RENEWAL_CHECK_MS);
  renewal.unref();

  // Picks up where things stood: each device's latest desired state again, then a round for every rollout with work left.
  const resumed = await rollouts.resume().catch((err) => { log.error({ err }, 'resuming rollouts failed'); return null; });
  const cron = startCronJobs({ log, now, offlineAfterSec: config.offlineAfterSec, rollouts, rolloutTickSec: config.rolloutTickSec, telemetry: telemetry.jobs });
  log.info({
    httpPort, mqttPort: broker.port, plainHttpPort, plainMqttPort: broker.plainPort, caFingerprint: tls.caFingerprint, tls: tls.source, dataDir: config.dataDir,
    republished: resumed?.republished ?? 0, rollouts: resumed?.rollouts ?? 0, profiles: profiles.length,
  }, 'edgepack orchestrator listening');

  let closed = false;
  return {
    httpPort,
    mqttPort: broker.port,
    ...(plainHttpPort !== undefined ? { plainHttpPort } : {}),
    ...(broker.plainPort !== undefined ? { plainMqttPort: broker.plainPort } : {}),
    get caCertificate() { return tls.caCertificate; },
    get caFingerprint() { return tls.caFingerprint; },
    adminToken: secrets.adminToken,
    app,
    store,
    telemetry,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(renewal);
      await cron.stop();
      if (plainHttp) await new Promise<void>((resolve) => { plainHttp!.closeAllConnections(); plainHttp!.close(() => resolve()); });
      await engine.close();
      await app.close();
      await builds.close();
      // Before the broker: what is queued is committed and its acks go out.
      await telemetry.close();
      await broker.close();
      db.close();
      lock.release();
    },
  };
}

/**
 * Plain HTTP beside HTTPS (--allow-plaintext): the same Fastify app, reached through its router,
 * so every route, hook and limit is the same; a request can tell which it came by (req.protocol).
 */
async function listenPlainHttp(app: FastifyInstance, host: string, port: number): Promise<HttpServer> {
  const server = createHttpServer((req, res) => app.routing(req, res));
  // The same answers to malformed requests as on HTTPS (Fastify's clientError handler).
  for (const l of app.server.listeners('clientError')) server.on('clientError', l as (...args: unknown[]) => void);
  server.keepAliveTimeout = app.server.keepAliveTimeout;
  server.requestTimeout = app.server.requestTimeout;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  return server;
}
