import { EdgepackError } from './errors.js';

/**
 * An enrollment token may carry the SHA-256 fingerprint of the orchestrator's CA certificate:
 * `enr_<secret>#sha256:<64 hex>`. Given out of band (printed by `edgepack tokens create`, pasted
 * into the device's config), it authenticates the very first connection: the agent refuses to
 * send the secret to a server whose certificate chain does not hold that CA. Only the part before
 * `#` is the secret the orchestrator checks; the fragment never has to be sent.
 */
export const CA_FINGERPRINT_PATTERN = /^sha256:[0-9a-f]{64}$/;

export interface EnrollmentToken {
  /** The single-use secret, as the orchestrator stores its hash. */
  secret: string;
  /** `sha256:<hex>` of the CA certificate's DER, lowercase; absent for a plain token. */
  caFingerprint?: string;
}

export function formatEnrollmentToken(secret: string, caFingerprint?: string): string {
  return caFingerprint ? `${secret}#${caFingerprint}` : secret;
}

/** Throws CONFIG_INVALID naming what is wrong: a token is typed or pasted by hand. */
export function parseEnrollmentToken(text: string): EnrollmentToken {
  const trimmed = text.trim();
  const hash = trimmed.indexOf('#');
  const secret = hash < 0 ? trimmed : trimmed.slice(0, hash);
  if (!secret) throw new EdgepackError('CONFIG_INVALID', 'the enrollment token is empty');
  if (hash < 0) return { secret };
  // Accept the fingerprint as OpenSSL and browsers print it too (upper case, colons).
  const fp = trimmed.slice(hash + 1).replace(/^sha256:/i, '').replace(/:/g, '').toLowerCase();
  const caFingerprint = `sha256:${fp}`;
  if (!CA_FINGERPRINT_PATTERN.test(caFingerprint)) {
    throw new EdgepackError('CONFIG_INVALID', `the enrollment token's fingerprint must be #sha256:<64 hex digits>, got #${trimmed.slice(hash + 1).slice(0, 80)}`);
  }
  return { secret, caFingerprint };
}

/** `sha256:<hex>` of a certificate's DER bytes (what X509Certificate.fingerprint256 gives, normalised). */
export function normaliseFingerprint(colonHex: string): string {
  return `sha256:${colonHex.replace(/:/g, '').toLowerCase()}`;
}
