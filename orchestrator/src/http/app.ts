import { timingSafeEqual, createHash, randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Profile } from '@edgepack/firmware-profiles';
import { checkDeviceCredential } from '@edgepack/protocol';
import type { BlobStore } from '../blob-store.js';
import type { ServerConfig } from '../config.js';
import type { Store } from '../db/store.js';
import type { RolloutService } from '../rollout-service.js';
import type { BuildQueue } from '../build/build-queue.js';
import { createLogger, type Logger } from '../logger.js';
import { HttpError, installErrorHandling } from './errors.js';
import { registerDeviceRoutes } from './routes/devices.js';
import { registerDatasetRoutes, registerModelRoutes } from './routes/models.js';
import { registerBuildRoutes } from './routes/builds.js';
import { registerRolloutRoutes } from './routes/rollouts.js';
import { registerBundleRoutes } from './routes/bundles.js';

export interface AppDeps {
  store: Store;
  blobs: BlobStore;
  profiles: readonly Profile[];
  config: Pick<ServerConfig, 'maxModelBytes' | 'heartbeatSec' | 'enrollmentTokenTtlSec' | 'publicHost'>;
  adminToken: string;
  signingPublicKey: string;
  /** The root a device pins at enrollment (trust-chain.ts); absent in tests that do not enroll through the chain. */
  trustedRoot?: () => unknown;
  mqttPort: () => number;
  rollouts: RolloutService;
  builds: BuildQueue;
  onDeviceRevoked: (deviceId: string) => Promise<void>;
  now: () => Date;
  /** The orchestrator's logger; Fastify logs through it (a silent one when absent, as in most tests). */
  logger?: Logger;
}

export type Caller = { kind: 'admin' } | { kind: 'device'; deviceId: string };

/** Per-route access, set in the route's `config`. */
export interface RouteAccess {
  public?: boolean;
  deviceAccess?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

/** What a client may send as its own request id. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * Builds the Fastify app without listening, so tests drive it with inject() and the server
 * adapter decides where it listens.
 */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger ?? createLogger('silent'),
    bodyLimit: 1 << 20,
    // A caller's own X-Request-Id is kept (so a client or proxy can correlate), if it is a
    // plain token; otherwise one is made. Every response carries it back in the same header.
    requestIdHeader: 'x-request-id',
    requestIdLogLabel: 'reqId',
    genReqId: () => `req_${randomBytes(8).toString('hex')}`,
    // One line per request (below) instead of Fastify's two.
    disableRequestLogging: true,
  }) as unknown as FastifyInstance;
  installErrorHandling(app);
  app.addHook('onRequest', async (req, reply) => {
    if (!REQUEST_ID.test(req.id)) (req as { id: string }).id = `req_${randomBytes(8).toString('hex')}`;
    reply.header('x-request-id', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({ method: req.method, url: req.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });

  // Model uploads arrive as raw bytes; hand the stream itself to the route so it goes straight
  // to the blob store with the size limit enforced as it streams.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  // Authorization is decided on the matched route, never on the raw URL: a percent-encoded
  // path ("/%761/...") decodes to a real route but would slip past a prefix check on req.url.
  // Every route needs the admin token unless its config says `public` (enroll, health) or
  // `deviceAccess` (bundle downloads, also open to the device's own signed credential).
  app.decorateRequest('caller', undefined);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const config = (req.routeOptions.config ?? {}) as RouteAccess;
    if (config.public || !req.routeOptions.url) return; // unmatched routes fall through to the 404 handler
    const header = req.headers.authorization ?? '';
    const [scheme, value] = header.split(' ', 2) as [string, string | undefined];
    if (scheme === 'Bearer' && value && sameSecret(value, deps.adminToken)) {
      req.caller = { kind: 'admin' };
      return;
    }
    if (scheme === 'Device' && value && config.deviceAccess) {
      const [deviceId = '', credential = ''] = value.split(':', 2);
      const device = deps.store.getDevice(deviceId);
      if (device && !device.revokedAt && checkDeviceCredential(deviceId, credential, device.publicKey, deps.now(), 'http').ok) {
        req.caller = { kind: 'device', deviceId };
        return;
      }
    }
    throw new HttpError(401, 'UNAUTHORIZED', header ? 'credential not accepted' : 'missing Authorization header (Bearer <admin token>)');
  });

  app.get('/v1/health', { config: { public: true } }, async () => ({ status: 'ok' }));
  registerDeviceRoutes(app, deps);
  registerModelRoutes(app, deps);
  registerDatasetRoutes(app, deps);
  registerBuildRoutes(app, deps);
  registerRolloutRoutes(app, deps);
  registerBundleRoutes(app, deps);
  return app;
}

export function requireAdmin(req: FastifyRequest): void {
  if (req.caller?.kind !== 'admin') throw new HttpError(403, 'FORBIDDEN', 'this endpoint needs the admin token');
}
