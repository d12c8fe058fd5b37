import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { EdgepackError, checkDeviceCredential, type ErrorCode } from '@edgepack/protocol';
import type { ApiTokens } from '../api-tokens.js';
import type { Store } from '../db/store.js';

/**
 * Who may call a route. Each route lists its audiences in `config.access`; one onRequest hook
 * (installAccessControl) enforces the list, so no handler checks roles itself.
 *
 * - `public`: anyone, no credential (health, enrollment, the API docs);
 * - `device`: an enrolled device, with its own signed credential or a device token; a route
 *   open to devices must still check that the resource is the device's own;
 * - a role: an API token of that role (the token table, api-tokens.ts). `admin` may do
 *   everything, `operator` runs models, builds and rollouts, `viewer` reads.
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
  /** Models, builds and rollouts (and the rollout commands): what an operator runs. */
  operate: ['admin', 'operator'],
  /** API tokens, the audit log, enrollment tokens, device changes and revocation. */
  admin: ['admin'],
  /** Bundle downloads and a device's own record: readers, and the device the resource belongs to. */
  readOrDevice: ['admin', 'operator', 'viewer', 'device'],
} as const satisfies Record<string, readonly Audience[]>;

export type Caller =
  | { kind: 'token'; role: Role; tokenId: string; name?: string }
  /** A device by its own credential, or by a device token (`tokenId` set). */
  | { kind: 'device'; deviceId: string; tokenId?: string; name?: string };

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call this route; every route must say (checked when the route is added). */
    access?: readonly Audience[];
    /**
     * A public route that checks a credential of its own (enrollment: the single-use token in the
     * body). Its refusals count as failed authentication, and a client blocked for failing too
     * often is refused before the credential is looked at, as on every non-public route.
     */
    checksCredential?: boolean;
  }
  interface FastifyRequest {
    /** Set by the access hook on every non-public route before the handler runs. */
    caller?: Caller;
  }
}

/** A credential that was recognised and refused (expired, revoked), with the code to answer. */
export interface AuthRefusal {
  refused: ErrorCode;
  message: string;
}

/** Turns credentials into callers. */
export interface Authenticator {
  /** The caller an `Authorization: Bearer <token>` stands for, a refusal, or null if the token is not known. */
  bearer(token: string): Caller | AuthRefusal | null;
  /** The device an `Authorization: Device <id>:<credential>` proves, or null. */
  device(deviceId: string, credential: string): Caller | null;
}

/** Bearer tokens from the token table; device credentials signed with the enrolled key. */
export function createAuthenticator(deps: { tokens: ApiTokens; store: Store; now: () => Date }): Authenticator {
  return {
    bearer: (secret) => {
      const c = deps.tokens.check(secret);
      if (!c.ok) return c.code === 'UNAUTHORIZED' ? null : { refused: c.code, message: c.message };
      const t = c.token;
      return t.role === 'device'
        ? { kind: 'device', deviceId: t.deviceId!, tokenId: t.id, name: t.name }
        : { kind: 'token', role: t.role, tokenId: t.id, name: t.name };
    },
    device: (deviceId, credential) => {
      const device = deps.store.getDevice(deviceId);
      if (!device || device.revokedAt) return null;
      return checkDeviceCredential(deviceId, credential, device.publicKey, deps.now(), 'http').ok ? { kind: 'device', deviceId } : null;
    },
  };
}

/**
 * What the access hook asks of the limits (http/request-limits.ts): whether a client may try a
 * credential at all (blocked after failing too often), and whether an accepted caller is over
 * its request rate. Either refuses by throwing a coded error.
 */
export interface AccessGuard {
  beforeAuthentication(req: FastifyRequest, reply: FastifyReply): void | Promise<void>;
  accepted(req: FastifyRequest, reply: FastifyReply, caller: Caller): void | Promise<void>;
}

export function allows(access: readonly Audience[], caller: Caller): boolean {
  return caller.kind === 'device' ? access.includes('device') : access.includes(caller.role);
}

/**
 * Routes added by plugins that cannot declare access (the docs UI of @fastify/swagger-ui) are
 * public by their prefix; every other route must declare it or the app refuses to start.
 */
const PUBLIC_PREFIXES = ['/docs'];

export function installAccessControl(app: FastifyInstance, auth: Authenticator, guard?: AccessGuard): void {
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
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (!req.routeOptions.url) return; // unmatched: the 404 handler answers
    const access = req.routeOptions.config.access ?? [];
    if (access.includes('public')) {
      if (req.routeOptions.config.checksCredential) await guard?.beforeAuthentication(req, reply);
      return;
    }
    // Before the credential is read: a client that failed too often is not even looked up.
    await guard?.beforeAuthentication(req, reply);
    const header = req.headers.authorization ?? '';
    const [scheme, value] = header.split(' ', 2) as [string, string | undefined];
    let caller: Caller | null = null;
    if (scheme === 'Bearer' && value) {
      const r = auth.bearer(value);
      if (r && 'refused' in r) throw new EdgepackError(r.refused, r.message);
      caller = r;
    }
    // A device credential counts only where devices are let in; elsewhere it is no credential at all.
    else if (scheme === 'Device' && value && access.includes('device')) {
      const [deviceId = '', credential = ''] = value.split(':', 2);
      caller = auth.device(deviceId, credential);
    }
    if (!caller) {
      const want = access.includes('device') ? 'Bearer <token> or Device <id>:<credential>' : 'Bearer <token>';
      throw new EdgepackError('UNAUTHORIZED', header ? 'credential not accepted' : `missing Authorization header (${want})`);
    }
    // Known before the role check, so a refused call is still on record as this caller's (audit-hook.ts).
    req.caller = caller;
    if (!allows(access, caller)) {
      throw new EdgepackError('FORBIDDEN', `this route is open to ${access.join(', ')}; the credential is ${caller.kind === 'device' ? 'a device' : `role ${caller.role}`}`);
    }
    await guard?.accepted(req, reply, caller);
  });
}
