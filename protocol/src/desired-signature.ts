import { createHash } from 'node:crypto';
import { canonicalBytes } from './canonical-json.js';
import { signCanonical, verifyCanonical } from './signing.js';
import type { DesiredState } from './messages.js';

/**
 * The fields of a desired state the orchestrator vouches for, beyond the bundle's own signature.
 * `manifestSha256` binds the envelope to the exact manifest it carries, so a genuine envelope
 * cannot be paired with another genuine manifest (mix-and-match). `roots` is not covered: each
 * root carries its own threshold signatures.
 */
export function desiredEnvelope(d: Omit<DesiredState, 'signature'>): Record<string, unknown> {
  return {
    kind: 'edgepack.desired/2', deviceId: d.deviceId, seq: d.seq, rolloutId: d.rolloutId, bundleId: d.bundle.manifest.bundleId,
    manifestSha256: createHash('sha256').update(canonicalBytes(d.bundle.manifest)).digest('hex'), issuedAt: d.issuedAt,
  };
}

export function signDesired(d: Omit<DesiredState, 'signature'>, secretKey: string): DesiredState {
  return { ...d, signature: signCanonical(desiredEnvelope(d), secretKey) };
}

/** Never throws; a desired state whose envelope does not verify must be ignored entirely. */
export function verifyDesiredSignature(d: DesiredState, publicKey: string): boolean {
  let envelope: Record<string, unknown>;
  try {
    envelope = desiredEnvelope(d);
  } catch {
    return false; // a manifest canonical JSON cannot hold
  }
  return verifyCanonical(envelope, d.signature, publicKey);
}
