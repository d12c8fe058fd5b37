import { signCanonical, verifyCanonical } from './signing.js';
import type { DesiredState } from './messages.js';

/** The fields of a desired state the orchestrator vouches for, beyond the bundle's own signature. */
export function desiredEnvelope(d: Omit<DesiredState, 'signature'>): Record<string, unknown> {
  return { kind: 'edgepack.desired/1', deviceId: d.deviceId, seq: d.seq, rolloutId: d.rolloutId, bundleId: d.bundle.manifest.bundleId, issuedAt: d.issuedAt };
}

export function signDesired(d: Omit<DesiredState, 'signature'>, secretKey: string): DesiredState {
  return { ...d, signature: signCanonical(desiredEnvelope(d), secretKey) };
}

/** Never throws; a desired state whose envelope does not verify must be ignored entirely. */
export function verifyDesiredSignature(d: DesiredState, publicKey: string): boolean {
  return verifyCanonical(desiredEnvelope(d), d.signature, publicKey);
}
