import { createHash, randomBytes } from 'node:crypto';
import { EdgepackError } from '@edgepack/protocol';
import type { Store } from './db/store.js';
import { TokenStore, type TokenRecord, type TokenRole } from './db/token-store.js';
import type { Page, PageQuery } from './db/store.js';
import { newId } from './ids.js';

/** The secret's prefix: says what the string is when it turns up in a shell history or a scanner. */
export const TOKEN_PREFIX = 'ept_';

/**
 * Secrets are 32 random bytes, so their sha256 is all that is stored: a lookup by hash needs no
 * constant-time comparison (the index reveals nothing about a secret that is not already known),
 * and a stolen database yields no usable token.
 */
export function hashToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function newTokenSecret(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** What a bearer token stands for, or why it does not. */
export type TokenCheck =
  | { ok: true; token: TokenRecord }
  | { ok: false; code: 'UNAUTHORIZED' | 'TOKEN_EXPIRED' | 'TOKEN_REVOKED'; message: string };

/** How often last_used_at is written at most, so a busy token does not write the database on every request. */
const TOUCH_EVERY_MS = 60_000;

/**
 * API tokens: created by an admin with a role, listed without their secrets, revoked. The
 * admin token the first start writes to <data-dir>/admin-token is one row among them.
 */
export class ApiTokens {
  readonly store: TokenStore;

  constructor(private readonly deps: { store: Store; now: () => Date }) {
    this.store = new TokenStore(deps.store.db);
  }

  /**
   * Makes the admin-token file's token a row (role admin, no expiry), once: a restart finds it by
   * its hash, and an admin who revoked it keeps it revoked.
   */
  registerBootstrapAdmin(secret: string): void {
    this.store.insertIfAbsent({
      id: newId('tok'), tokenHash: hashToken(secret), name: 'admin-token file', role: 'admin', deviceId: null,
      createdAt: this.deps.now().toISOString(), createdBy: null, expiresAt: null, lastUsedAt: null, revokedAt: null,
    });
  }

  /** Returns the record and the secret, which exists only in this return value and the creator's answer. */
  create(args: { name: string; role: TokenRole; deviceId?: string; ttlSec: number; createdBy: string | null }): { token: TokenRecord; secret: string } {
    if (args.role === 'device') {
      if (!args.deviceId) throw new EdgepackError('VALIDATION_FAILED', 'body is missing required field \'deviceId\': a device token speaks for one device');
      const d = this.deps.store.getDevice(args.deviceId);
      if (!d || d.revokedAt) throw new EdgepackError('DEVICE_NOT_FOUND', `device ${args.deviceId} not found`);
    } else if (args.deviceId !== undefined) {
      throw new EdgepackError('VALIDATION_FAILED', `body.deviceId is only for role device, not ${args.role}`);
    }
    const now = this.deps.now();
    const secret = newTokenSecret();
    const token: TokenRecord = {
      id: newId('tok'), tokenHash: hashToken(secret), name: args.name, role: args.role, deviceId: args.deviceId ?? null,
      createdAt: now.toISOString(), createdBy: args.createdBy, expiresAt: new Date(now.getTime() + args.ttlSec * 1000).toISOString(), lastUsedAt: null, revokedAt: null,
    };
    this.store.insert(token);
    return { token, secret };
  }

  /** Looks the secret up by its hash and checks expiry, revocation and, for a device token, its device. */
  check(secret: string): TokenCheck {
    const token = this.store.byHash(hashToken(secret));
    if (!token) return { ok: false, code: 'UNAUTHORIZED', message: 'credential not accepted' };
    const now = this.deps.now();
    if (token.revokedAt) return { ok: false, code: 'TOKEN_REVOKED', message: `token ${token.id} was revoked at ${token.revokedAt}` };
    if (token.expiresAt && Date.parse(token.expiresAt) <= now.getTime()) return { ok: false, code: 'TOKEN_EXPIRED', message: `token ${token.id} expired at ${token.expiresAt}` };
    if (token.role === 'device') {
      const d = token.deviceId ? this.deps.store.getDevice(token.deviceId) : undefined;
      if (!d || d.revokedAt) return { ok: false, code: 'TOKEN_REVOKED', message: `token ${token.id} speaks for a device that was revoked` };
    }
    if (!token.lastUsedAt || now.getTime() - Date.parse(token.lastUsedAt) >= TOUCH_EVERY_MS) {
      token.lastUsedAt = now.toISOString();
      this.store.touch(token.id, token.lastUsedAt);
    }
    return { ok: true, token };
  }

  list(filter: { role?: TokenRole; includeRevoked?: boolean }, q: PageQuery): Page<TokenRecord> {
    return this.store.page(filter, q);
  }

  /** Revokes a token; refuses to revoke the last usable admin token, which would lock every admin out. */
  revoke(id: string): TokenRecord {
    const token = this.store.get(id);
    if (!token) throw new EdgepackError('TOKEN_NOT_FOUND', `token ${id} not found`);
    if (token.revokedAt) return token;
    const at = this.deps.now().toISOString();
    if (token.role === 'admin' && this.store.countUsableAdmins(at, token.id) === 0) {
      throw new EdgepackError('LAST_ADMIN_TOKEN', `token ${id} is the last usable admin token; create another admin token first`);
    }
    this.store.revoke(id, at);
    return this.store.get(id)!;
  }
}
