import { canonicalJson } from './canonical-json.js';
import { verifyDesiredSignature } from './desired-signature.js';
import type { ErrorCode } from './error-catalogue.js';
import { EdgepackError } from './errors.js';
import { ManifestInvalidError, createManifestVerifier } from './manifest-verify.js';
import type { SignedManifest } from './manifest.js';
import type { DesiredState } from './messages.js';
import { keyId, verifyCanonical } from './signing.js';
import { ROLE_NAMES, SignedRootSchema, TRUST_LIMITS, type Role, type SignedRoot, type TrustKey } from './trust-metadata.js';
import { Validator } from './validate.js';

/**
 * Every code the trust metadata can be refused with; their statuses and meanings are in the
 * error catalogue. Bundle refusals reuse manifest-verify's codes (MANIFEST_INVALID, SIGNATURE_INVALID, …).
 */
export const TRUST_ERROR_CODES = [
  'TRUST_METADATA_TOO_LARGE', 'TRUST_CHAIN_TOO_LONG', 'ROOT_INVALID', 'ROOT_THRESHOLD_NOT_MET', 'ROOT_ROLLBACK', 'ROOT_VERSION_GAP', 'ROOT_EXPIRED', 'BUNDLE_KEY_NOT_DELEGATED', 'DESIRED_SIGNATURE_INVALID', 'KEY_INVALID', 'TRUST_ONLINE_KEY_NOT_DELEGATED', 'TRUST_ROOT_FILE_MISMATCH', 'TRUST_ROOT_EXISTS',
] as const satisfies readonly ErrorCode[];
export type TrustErrorCode = (typeof TRUST_ERROR_CODES)[number];


// One error class per way trust metadata is refused (after tuf-js), each with a stable code.
export class TrustMetadataTooLargeError extends EdgepackError {
  constructor(what: string, size: number, limit: number) { super('TRUST_METADATA_TOO_LARGE', `${what} is ${size} bytes, over the ${limit}-byte limit; refused unread`, { size, limit }); }
}
export class TrustChainTooLongError extends EdgepackError {
  constructor(length: number) { super('TRUST_CHAIN_TOO_LONG', `${length} roots in one update, over the limit of ${TRUST_LIMITS.maxChainLength}; refused unread`, { length }); }
}
export class RootInvalidError extends EdgepackError {
  constructor(reason: string) { super('ROOT_INVALID', `root metadata is malformed: ${reason}`); }
}
export class RootThresholdError extends EdgepackError {
  constructor(version: number, by: 'trusted' | 'self', valid: number, threshold: number, trustedVersion: number) {
    const whose = by === 'self' ? `its own root keys (version ${version})` : `the trusted root's keys (version ${trustedVersion})`;
    super('ROOT_THRESHOLD_NOT_MET', `root version ${version} carries ${valid} valid signature(s) by ${whose}; ${threshold} needed`, { version, by, valid, threshold });
  }
}
export class RootRollbackError extends EdgepackError {
  constructor(version: number, trustedVersion: number) {
    super('ROOT_ROLLBACK', `root version ${version} is older than the trusted version ${trustedVersion}`, { version, trustedVersion });
  }
}
export class RootVersionGapError extends EdgepackError {
  constructor(version: number, trustedVersion: number) {
    super('ROOT_VERSION_GAP', `root version ${version} does not follow the trusted version ${trustedVersion}; version ${trustedVersion + 1} is needed first`, { version, trustedVersion });
  }
}
export class RootExpiredError extends EdgepackError {
  constructor(version: number, expires: string) { super('ROOT_EXPIRED', `trusted root version ${version} expired at ${expires}; the root keys must sign a newer one`, { version, expires }); }
}
export class KeyNotDelegatedError extends EdgepackError {
  constructor(what: string, keyid: string, version: number) {
    super('BUNDLE_KEY_NOT_DELEGATED', `${what} is signed by key ${keyid}, which trusted root version ${version} does not delegate bundle signing to`, { keyid, version });
  }
}
export class DesiredSignatureError extends EdgepackError {
  constructor(seq: number, version: number, keys: number) {
    super('DESIRED_SIGNATURE_INVALID', `desired state seq ${seq}: its envelope signature does not verify against any of the ${keys} bundle key(s) of trusted root version ${version}`, { seq, version });
  }
}

const NEVER = '9999-12-31T23:59:59.999Z';

/**
 * What a device enrolled before trust metadata existed trusts: the one orchestrator key it
 * pinned, as an in-memory version-0 root in which that key holds both roles. It lets such a
 * device keep verifying exactly as before, and walk to a real root version 1 if (and only if)
 * that root is signed by the pinned key as well as by its own root threshold. Never persisted,
 * never accepted from the wire (parsed roots start at version 1).
 */
export function pinnedKeyRoot(publicKey: string): SignedRoot {
  const id = keyId(publicKey);
  return {
    signed: {
      type: 'root', spec: 'edgepack.trust/1', version: 0, expires: NEVER,
      keys: { [id]: { keytype: 'ed25519', public: publicKey } },
      roles: { root: { keyids: [id], threshold: 1 }, bundles: { keyids: [id], threshold: 1 } },
    },
    signatures: [],
  };
}

export interface ChainWalk {
  /** The highest root trusted after the walk: what the device must persist. */
  root: SignedRoot;
  /** Versions adopted, in order (empty if nothing newer was valid). */
  walked: number[];
  /** Why the walk stopped before the end of the chain, if it did; `root` is still the highest valid one. */
  error?: EdgepackError;
}

function hasOwn(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

/**
 * Pure verification of edgepack trust metadata, the way TUF's client workflow §5.3 updates
 * the root: roots are walked version by version, each signed by a threshold of the previous
 * root's keys and of its own; bundles and desired states are then verified only against the
 * keys the highest trusted root delegates to. Time is passed in, never read.
 */
export class TrustVerifier {
  private readonly rootValidator = new Validator('root metadata', SignedRootSchema);
  private readonly manifestVerify = createManifestVerifier();

  /**
   * Parses one root from bytes, a string or an already-parsed value (from a capped message),
   * checking its size before anything else, then its shape and internal consistency. Does not
   * check signatures: that needs a trusted root to check them against.
   */
  parseRoot(input: unknown): SignedRoot {
    let value: unknown = input;
    if (typeof input === 'string' || input instanceof Uint8Array) {
      const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
      if (size > TRUST_LIMITS.maxRootBytes) throw new TrustMetadataTooLargeError('root metadata', size, TRUST_LIMITS.maxRootBytes);
      try {
        value = JSON.parse(typeof input === 'string' ? input : Buffer.from(input).toString('utf8'));
      } catch (err) {
        throw new RootInvalidError(`not JSON (${(err as Error).message})`);
      }
    } else {
      let size: number;
      try {
        size = Buffer.byteLength(canonicalJson(input));
      } catch (err) {
        throw new RootInvalidError((err as Error).message);
      }
      if (size > TRUST_LIMITS.maxRootBytes) throw new TrustMetadataTooLargeError('root metadata', size, TRUST_LIMITS.maxRootBytes);
    }
    const parsed = this.rootValidator.validate(value);
    if (!parsed.ok) throw new RootInvalidError(parsed.reason);
    checkConsistency(parsed.value);
    return parsed.value;
  }

  /** A root to start from (pinned at enrollment): well-formed and signed by a threshold of its own root keys. Its expiry does not matter yet (TUF §5.2). */
  verifyInitialRoot(input: unknown): SignedRoot {
    const root = this.parseRoot(input);
    const own = validSigners(root.signed.roles.root, root.signed.keys, root);
    if (own.length < root.signed.roles.root.threshold) throw new RootThresholdError(root.signed.version, 'self', own.length, root.signed.roles.root.threshold, root.signed.version);
    return root;
  }

  /**
   * One step of TUF §5.3: `candidate` becomes the trusted root if it is signed by a threshold of
   * the trusted root's root keys (arbitrary software), is exactly the next version (rollback;
   * a skipped version would let a root with keys nobody vouched for in between jump in), and
   * is signed by a threshold of its own root keys (so the new keys are held, not just named).
   * Expiry is not checked here: an intermediate root may have expired (§5.3.6); see checkFresh.
   */
  updateRoot(trusted: SignedRoot, candidate: unknown): SignedRoot {
    const next = this.parseRoot(candidate);
    const t = trusted.signed;
    const byTrusted = validSigners(t.roles.root, t.keys, next);
    if (byTrusted.length < t.roles.root.threshold) throw new RootThresholdError(next.signed.version, 'trusted', byTrusted.length, t.roles.root.threshold, t.version);
    if (next.signed.version <= t.version) throw new RootRollbackError(next.signed.version, t.version);
    if (next.signed.version !== t.version + 1) throw new RootVersionGapError(next.signed.version, t.version);
    const own = validSigners(next.signed.roles.root, next.signed.keys, next);
    if (own.length < next.signed.roles.root.threshold) throw new RootThresholdError(next.signed.version, 'self', own.length, next.signed.roles.root.threshold, t.version);
    return next;
  }

  /**
   * Walks `chain` (roots in any order, older ones included, as the orchestrator publishes
   * them) from `trusted` up, one version at a time. Roots at or below the trusted version are
   * history and skipped unread: they can never replace the trusted root. Never throws: the
   * walk stops at the first failure and reports it, keeping every version verified before it
   * (TUF §5.3.8 persists each one), so the device ends on the highest root it could verify.
   */
  walkChain(trusted: SignedRoot, chain: readonly unknown[]): ChainWalk {
    if (chain.length > TRUST_LIMITS.maxChainLength) return { root: trusted, walked: [], error: new TrustChainTooLongError(chain.length) };
    const claimed = (c: unknown): number => {
      const v = (c as { signed?: { version?: unknown } } | null)?.signed?.version;
      return typeof v === 'number' && Number.isSafeInteger(v) ? v : -1;
    };
    const newer = chain.filter((c) => claimed(c) > trusted.signed.version).sort((a, b) => claimed(a) - claimed(b));
    let root = trusted;
    const walked: number[] = [];
    while (newer.length > 0) {
      const want = root.signed.version + 1;
      const candidates = newer.filter((c) => claimed(c) === want);
      if (candidates.length === 0) return { root, walked, error: new RootVersionGapError(claimed(newer[0]), root.signed.version) };
      let error: EdgepackError | undefined;
      let next: SignedRoot | undefined;
      // Two different documents claiming one version: the first that verifies wins, so a
      // forged sibling placed first cannot block a genuine one.
      for (const c of candidates) {
        try {
          next = this.updateRoot(root, c);
          break;
        } catch (err) {
          error = err instanceof EdgepackError ? err : new RootInvalidError(String(err));
        }
      }
      if (!next) return { root, walked, error };
      root = next;
      walked.push(want);
      newer.splice(0, newer.length, ...newer.filter((c) => claimed(c) > want));
    }
    return { root, walked };
  }

  /** How far `doc` is from being trusted by `by`'s root role: which of its keys signed, and how many are needed. */
  signatureStatus(by: SignedRoot, doc: SignedRoot): { signers: string[]; threshold: number; met: boolean } {
    const role = by.signed.roles.root;
    const signers = validSigners(role, by.signed.keys, doc);
    return { signers, threshold: role.threshold, met: signers.length >= role.threshold };
  }

  /** TUF §5.3.10 (freeze attack): a trusted root past its expiry vouches for nothing. */
  checkFresh(root: SignedRoot, now: Date): void {
    if (Date.parse(root.signed.expires) <= now.getTime()) throw new RootExpiredError(root.signed.version, root.signed.expires);
  }

  /**
   * A bundle manifest is trusted only if the trusted root is fresh, the manifest names a key
   * that root delegates bundle signing to, and the signature by that key verifies; then the
   * manifest's own checks (expiry, profile, consistency) from manifest-verify.ts.
   */
  verifyBundle(root: SignedRoot, signed: unknown, o: { expectedProfile: string; now: Date }): SignedManifest {
    this.checkFresh(root, o.now);
    const kid = (signed as { manifest?: { keyId?: unknown } } | null)?.manifest?.keyId;
    if (typeof kid !== 'string') throw new ManifestInvalidError('manifest.keyId is missing');
    const key = delegatedKey(root, kid);
    if (!key) throw new KeyNotDelegatedError(`bundle ${String((signed as { manifest?: { bundleId?: unknown } }).manifest?.bundleId)}`, kid, root.signed.version);
    return this.manifestVerify(signed, { trustedPublicKey: key.public, expectedProfile: o.expectedProfile, now: o.now });
  }

  /**
   * A desired state's envelope must be signed by a key the fresh trusted root delegates to.
   * The envelope covers the carried manifest's hash, so a desired state and a manifest from
   * different moments cannot be combined (mix-and-match). Returns the key id that signed it.
   */
  verifyDesired(root: SignedRoot, desired: DesiredState, now: Date): string {
    const role = root.signed.roles.bundles;
    const signer = role.keyids.find((id) => {
      const key = delegatedKey(root, id);
      return key !== undefined && verifyDesiredSignature(desired, key.public);
    });
    if (signer === undefined) throw new DesiredSignatureError(desired.seq, root.signed.version, role.keyids.length);
    // After the signature, so ROOT_EXPIRED in a log means "genuine, but the root has expired".
    this.checkFresh(root, now);
    return signer;
  }
}

function delegatedKey(root: SignedRoot, kid: string): TrustKey | undefined {
  const { keys, roles } = root.signed;
  return roles.bundles.keyids.includes(kid) && hasOwn(keys, kid) ? keys[kid] : undefined;
}

/**
 * Key ids of `role` with a valid signature on `doc`. Each key counts once however often it
 * signed; signatures by keys the role does not list are ignored, as are ones that do not verify.
 */
function validSigners(role: Role, keys: Record<string, TrustKey>, doc: SignedRoot): string[] {
  const valid = new Set<string>();
  for (const s of doc.signatures) {
    if (valid.has(s.keyid) || !role.keyids.includes(s.keyid) || !hasOwn(keys, s.keyid)) continue;
    if (verifyCanonical(doc.signed, s.sig, keys[s.keyid].public)) valid.add(s.keyid);
  }
  return [...valid];
}

/** What the schema cannot say: ids derived from keys, roles naming known keys, reachable thresholds. */
function checkConsistency(root: SignedRoot): void {
  const { keys, roles, expires } = root.signed;
  const ids = Object.keys(keys);
  if (ids.length > TRUST_LIMITS.maxKeys) throw new RootInvalidError(`${ids.length} keys, over the limit of ${TRUST_LIMITS.maxKeys}`);
  for (const id of ids) {
    const pub = keys[id].public;
    if (Buffer.from(pub, 'base64').toString('base64') !== pub) throw new RootInvalidError(`key ${id} is not canonical base64`);
    if (keyId(pub) !== id) throw new RootInvalidError(`key id ${id} is not the id of its key (${keyId(pub)})`);
  }
  for (const name of ROLE_NAMES) {
    const role = roles[name];
    for (const id of role.keyids) if (!hasOwn(keys, id)) throw new RootInvalidError(`role ${name} names key ${id}, which the root does not list`);
    if (role.threshold > role.keyids.length) throw new RootInvalidError(`role ${name} needs ${role.threshold} signatures from ${role.keyids.length} key(s): it could never be met`);
  }
  // Manifests and desired states carry one signature each, so a higher threshold could never be met.
  if (roles.bundles.threshold !== 1) throw new RootInvalidError(`role bundles has threshold ${roles.bundles.threshold}; manifests and desired states carry one signature, so it must be 1`);
  if (Number.isNaN(Date.parse(expires))) throw new RootInvalidError(`expires ${JSON.stringify(expires)} is not a date`);
}
