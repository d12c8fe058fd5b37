import { EdgepackError } from './errors.js';
import { SignedManifestSchema, type BundleFile, type Manifest, type SignedManifest } from './manifest.js';
import { verifyCanonical } from './signing.js';
import { Validator } from './validate.js';

// One error class per way a bundle can be refused (after tuf-js's store.ts), each with a
// stable code the agent reports upstream.
export class ManifestInvalidError extends EdgepackError {
  constructor(reason: string) { super('MANIFEST_INVALID', `manifest is malformed: ${reason}`); }
}
export class BadSignatureError extends EdgepackError {
  constructor(bundleId: string) { super('SIGNATURE_INVALID', `signature on bundle ${bundleId} does not verify against the key its manifest names`); }
}
export class ExpiredManifestError extends EdgepackError {
  constructor(bundleId: string, expiresAt: string) { super('MANIFEST_EXPIRED', `bundle ${bundleId} expired at ${expiresAt}`); }
}
export class ProfileMismatchError extends EdgepackError {
  constructor(bundleId: string, bundleProfile: string, deviceProfile: string) {
    super('PROFILE_MISMATCH', `bundle ${bundleId} is built for profile ${bundleProfile}, this device is ${deviceProfile}`);
  }
}
export class LengthOrHashMismatchError extends EdgepackError {
  constructor(file: string, what: 'length' | 'sha256', expected: string | number, actual: string | number) {
    super(what === 'length' ? 'FILE_LENGTH_MISMATCH' : 'FILE_HASH_MISMATCH', `bundle file ${file}: ${what} is ${actual}, manifest says ${expected}`);
  }
}

export interface VerifyOptions {
  trustedPublicKey: string;
  expectedProfile: string;
  now: Date;
}

/**
 * Pure check of a signed manifest: shape, signature, expiry, profile, internal consistency.
 * Order matters: the signature is checked before anything in the manifest is believed.
 */
export function createManifestVerifier(): (signed: unknown, options: VerifyOptions) => SignedManifest {
  const validator = new Validator('signed manifest', SignedManifestSchema);
  return (signed, { trustedPublicKey, expectedProfile, now }) => {
    const parsed = validator.validate(signed);
    if (!parsed.ok) throw new ManifestInvalidError(parsed.reason);
    const { manifest, signature } = parsed.value;
    if (!verifyCanonical(manifest, signature, trustedPublicKey)) throw new BadSignatureError(manifest.bundleId);
    const expires = Date.parse(manifest.expiresAt);
    if (Number.isNaN(expires)) throw new ManifestInvalidError(`expiresAt ${JSON.stringify(manifest.expiresAt)} is not a date`);
    if (expires <= now.getTime()) throw new ExpiredManifestError(manifest.bundleId, manifest.expiresAt);
    if (manifest.profile !== expectedProfile) throw new ProfileMismatchError(manifest.bundleId, manifest.profile, expectedProfile);
    checkConsistency(manifest);
    return parsed.value;
  };
}

function checkConsistency(manifest: Manifest): void {
  const paths = new Set<string>();
  for (const f of manifest.files) {
    if (paths.has(f.path)) throw new ManifestInvalidError(`file ${f.path} is listed twice`);
    paths.add(f.path);
  }
  if (manifest.files.filter((f) => f.role === 'model').length !== 1) throw new ManifestInvalidError('a bundle holds exactly one model file');
  if (!paths.has(manifest.golden.file)) throw new ManifestInvalidError(`golden file ${manifest.golden.file} is not among the bundle files`);
}

export function modelFile(manifest: Manifest): BundleFile {
  return manifest.files.find((f) => f.role === 'model')!;
}

/** Pure comparison of what was received against what the manifest promises. */
export function verifyFileIntegrity(entry: BundleFile, actual: { length: number; sha256: string }): void {
  if (actual.length !== entry.length) throw new LengthOrHashMismatchError(entry.path, 'length', entry.length, actual.length);
  if (actual.sha256 !== entry.sha256) throw new LengthOrHashMismatchError(entry.path, 'sha256', entry.sha256, actual.sha256);
}
