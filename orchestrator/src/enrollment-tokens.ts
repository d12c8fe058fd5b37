import { createHash, randomBytes } from 'node:crypto';
import { formatEnrollmentToken } from '@edgepack/protocol';
import type { Store } from './db/store.js';

/** The orchestrator keeps only a token's hash: a stolen database enrolls nothing. */
export function hashEnrollmentToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/**
 * Makes a single-use enrollment token; with a CA fingerprint it reads `enr_…#sha256:…` (see
 * protocol's enrollment-token.ts). One use case for `POST /v1/enrollment-tokens` and
 * `edgepack tokens create`.
 */
export function createEnrollmentToken(store: Store, now: Date, ttlSec: number, caFingerprint?: string): { token: string; expiresAt: string; caFingerprint?: string } {
  const secret = `enr_${randomBytes(18).toString('base64url')}`;
  const expiresAt = new Date(now.getTime() + ttlSec * 1000).toISOString();
  store.insertEnrollmentToken(hashEnrollmentToken(secret), now.toISOString(), expiresAt);
  return { token: formatEnrollmentToken(secret, caFingerprint), expiresAt, ...(caFingerprint ? { caFingerprint } : {}) };
}
