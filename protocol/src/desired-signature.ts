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
  const sha = (m: unknown) => createHash('sha256').update(canonicalBytes(m)).digest('hex');
  // A trial vouches for every candidate and its order, the rounds and the reference, under a
  // kind of its own: a trial envelope can never pass for an install one, nor the reverse.
  if (d.kind === 'trial') {
    if (!d.trial) throw new Error('a trial desired state needs its trial');
    return {
      kind: 'edgepack.desired-trial/1', deviceId: d.deviceId, seq: d.seq, rolloutId: d.rolloutId, bundleId: d.bundle.manifest.bundleId,
      manifestSha256: sha(d.bundle.manifest), issuedAt: d.issuedAt, rounds: d.trial.rounds, referenceBundleId: d.trial.referenceBundleId,
      candidates: d.trial.candidates.map((c) => ({ bundleId: c.manifest.bundleId, manifestSha256: sha(c.manifest) })),
    };
  }
  // An install carries no trial; one that does is refused rather than half-vouched for.
  if (d.trial) throw new Error('an install desired state carries no trial');
  return {
    kind: 'edgepack.desired/2', deviceId: d.deviceId, seq: d.seq, rolloutId: d.rolloutId, bundleId: d.bundle.manifest.bundleId,
    manifestSha256: sha(d.bundle.manifest), issuedAt: d.issuedAt,
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
