import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { EdgepackError, checkDeviceCredential } from '@edgepack/protocol';
import type { Store } from '../db/store.js';

/**
 * Who may call a route. Each route lists its audiences in `config.access`; one onRequest hook
 * (installAccessControl) enforces the list, so no handler checks roles itself.
 *
 * - `public`: anyone, no credential (health, enrollment, the API docs);
 * - `device`: an enrolled device, with its own signed credential; a route open to devices must
 *   still check that the resource is the device's own;
 * - a role: an API token of that role. Today the admin token is the only token (role admin);
 *   the security issue adds operator, viewer and device tokens by replacing `bearer` in the
 *   Authenticator, without touching any route.
 */
export const ROLES = ['admin', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];
export type Audience = 'public' | 'device' | Role;
export const AUDIENCES: readonly Audience[] = ['public', 'device', ...ROLES];

/** The access lists routes use, named after what they allow. `admin` may do everything. */
export const Access = {
  public: ['public'],
  /** Reading the fleet, models, builds, rollouts. */
  read: ['admin', 'operator', 'viewer'],
  /** Models, builds and rollouts: what an operator runs. */
  operate: ['admin', 'operator'],
  /** Enrollment tokens, device changes and revocation. */
  admin: ['admin'],
  /** Bundle downloads: readers, and the device the bundle is assigned to. */
  readOrDevice: ['admin', 'operator', 'viewer', 'device'],
} as const satisfies Record<string, readonly Audience[]>;

export type Caller =
  | { kind: 'token'; role: Role; tokenId: string }
  | { kind: 'device'; deviceId: string };

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call this route; every route must say (checked when the route is added). */
    access?: readonly Audience[];
  }
  interface FastifyRequest {
    /** Set by the access hook on every non-public route before the handler runs. */
    caller?: Caller;
  }
}

/** Turns credentials into callers. The security issue swaps `bearer` for a token table lookup. */
export interface Authenticator {
  /** The caller an `Authorization: Bearer <token>` stands for, or null if the token is not valid. */
  bearer(token: string): Caller | null;
  /** The device an `Authorization: Device <id>:<credential>` proves, or null. */
  device(deviceId: string, credential: string): Caller | null;
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** Today's credentials: the one admin token, and device credentials signed with the enrolled key. */
export function createAuthenticator(deps: { adminToken: string; store: Store; now: () => Date }): Authenticator {
  return {
    bearer: (token) => (sameSecret(token, deps.adminToken) ? { kind: 'token', role: 'admin', tokenId: 'admin' } : null),
    device: (deviceId, credential) => {
      const device = deps.store.getDevice(deviceId);
      if (!device || device.revokedAt) return null;
      return checkDeviceCredential(deviceId, credential, device.publicKey, deps.now(), 'http').ok ? { kind: 'device', deviceId } : null;
    },
  };
}

export function allows(access: readonly Audience[], caller: Caller): boolean {
  return caller.kind === 'device' ? access.includes('device') : access.includes(caller.role);
}

/**
 * Routes added by plugins that cannot declare access (the docs UI of @fastify/swagger-ui) are
 * public by their prefix; every other route must declare it or the app refuses to start.
 */
const PUBLIC_PREFIXES = ['/docs'];

export function installAccessControl(app: FastifyInstance, auth: Authenticator): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    const config = (route.config ?? {}) as { access?: readonly Audience[] };
    if (!config.access && PUBLIC_PREFIXES.some((p) => route.url === p || route.url.startsWith(`${p}/`))) {
      route.config = { ...config, access: Access.public };
      return;
    }
    if (!config.access?.length) throw new Error(`route ${String(route.method)} ${route.url} declares no access (config.access)`);
    const unknown = config.access.filter((a) => !AUDIENCES.includes(a));
    if (unknown.length) throw new Error(`route ${String(route.method)} ${route.url} names unknown audiences ${unknown.join(', ')}`);
  });

  // Decided on the matched route, never on the raw URL: a percent-encoded path ("/%761/...")
  // decodes to a real route but would slip past a prefix check on req.url.
  app.decorateRequest('caller', undefined);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (!req.routeOptions.url) return; // unmatched: the 404 handler answers
    const access = req.routeOptions.config.access ?? [];
    if (access.includes('public')) return;
    const header = req.headers.authorization ?? '';
    const [scheme, value] = header.split(' ', 2) as [string, string | undefined];
    let caller: Caller | null = null;
    if (scheme === 'Bearer' && value) caller = auth.bearer(value);
    // A device credential counts only where devices are let in; elsewhere it is no credential at all.
    else if (scheme === 'Device' && value && access.includes('device')) {
      const [deviceId = '', credential = ''] = value.split(':', 2);
      caller = auth.device(deviceId, credential);
    }
    if (!caller) {
      const want = access.includes('device') ? 'Bearer <token> or Device <id>:<credential>' : 'Bearer <token>';
      throw new EdgepackError('UNAUTHORIZED', header ? 'credential not accepted' : `missing Authorization header (${want})`);
    }
    if (!allows(access, caller)) {
      throw new EdgepackError('FORBIDDEN', `this route is open to ${access.join(', ')}; the credential is ${caller.kind === 'device' ? 'a device' : `role ${caller.role}`}`);
    }
    req.caller = caller;
  });
}
