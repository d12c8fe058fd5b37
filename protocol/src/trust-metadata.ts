import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError } from './errors.js';
import { keyId, signCanonical, verifyCanonical } from './signing.js';

/**
 * TUF-style trust metadata (after the TUF specification's root role, written for edgepack).
 *
 * One document, the root, names every key a device trusts and what each may do:
 *   - `roles.root`: the offline root keys and how many of them must sign the next root;
 *   - `roles.bundles`: the online key(s) the orchestrator signs bundle manifests and
 *     desired-state envelopes with (TUF's targets-like role, delegated directly by the root).
 * The delegation lives in the root itself rather than in a second document, so there is one
 * chain to walk, one version counter and one expiry; rotating the online key is a new root
 * version, signed by the root threshold like any other.
 *
 * Signatures are ed25519 over the canonical JSON of `signed` (canonical-json.ts). A key id is
 * `keyId(publicKey)` (signing.ts), the same id a manifest's `keyId` carries, and it is derived,
 * never chosen: a root whose key ids do not match their keys is refused, so one key cannot be
 * listed twice under two ids to have its signature counted twice.
 */
export const ROOT_TYPE = 'root';
export const TRUST_SPEC = 'edgepack.trust/1';
export const ROLE_NAMES = ['root', 'bundles'] as const;
export type RoleName = (typeof ROLE_NAMES)[number];

/** Caps checked before anything is parsed or verified (TUF: "endless data"). */
export const TRUST_LIMITS = {
  /** One root document as bytes (TUF suggests "tens of kilobytes"). */
  maxRootBytes: 64 * 1024,
  /** Roots walked in one update (TUF's Y): more than this in one message is refused unread. */
  maxChainLength: 64,
  /** Keys in one root, key ids in one role, signatures on one document. */
  maxKeys: 32,
  maxSignatures: 32,
} as const;

export const KEY_ID_PATTERN = '^[0-9a-f]{16}$';
const PUBLIC_KEY_PATTERN = '^[A-Za-z0-9+/]{43}=$';

export const TrustKeySchema = Type.Object({
  keytype: Type.Literal('ed25519'),
  /** 32 raw bytes, canonical base64 (checked beyond the pattern: no spare bits set). */
  public: Type.String({ pattern: PUBLIC_KEY_PATTERN }),
});
export type TrustKey = Static<typeof TrustKeySchema>;

export const RoleSchema = Type.Object({
  keyids: Type.Array(Type.String({ pattern: KEY_ID_PATTERN }), { minItems: 1, maxItems: TRUST_LIMITS.maxKeys, uniqueItems: true }),
  threshold: Type.Integer({ minimum: 1, maximum: TRUST_LIMITS.maxKeys }),
});
export type Role = Static<typeof RoleSchema>;

export const RootSignedSchema = Type.Object({
  type: Type.Literal(ROOT_TYPE),
  spec: Type.Literal(TRUST_SPEC),
  version: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  /** ISO 8601 UTC, e.g. 2026-01-01T00:00:00.000Z; after it the root (and so every delegation in it) is dead. */
  expires: Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,3})?Z$' }),
  keys: Type.Record(Type.String({ pattern: KEY_ID_PATTERN }), TrustKeySchema),
  roles: Type.Object({ root: RoleSchema, bundles: RoleSchema }),
});
export type RootSigned = Static<typeof RootSignedSchema>;

export const TrustSignatureSchema = Type.Object({
  keyid: Type.String({ pattern: KEY_ID_PATTERN }),
  sig: Type.String({ minLength: 1, maxLength: 128 }),
});
export type TrustSignature = Static<typeof TrustSignatureSchema>;

export const SignedRootSchema = Type.Object({
  signed: RootSignedSchema,
  signatures: Type.Array(TrustSignatureSchema, { maxItems: TRUST_LIMITS.maxSignatures }),
});
export type SignedRoot = Static<typeof SignedRootSchema>;

export interface RootSpec {
  version: number;
  expires: Date;
  rootKeys: string[];
  rootThreshold: number;
  bundlesKeys: string[];
  bundlesThreshold?: number;
}

/** Pure: an unsigned root listing exactly the given public keys. */
export function createRoot(spec: RootSpec): SignedRoot {
  const keys: Record<string, TrustKey> = {};
  for (const pub of [...spec.rootKeys, ...spec.bundlesKeys]) keys[keyId(pub)] = { keytype: 'ed25519', public: pub };
  const ids = (list: string[]) => [...new Set(list.map((k) => keyId(k)))].sort();
  return {
    signed: {
      type: ROOT_TYPE,
      spec: TRUST_SPEC,
      version: spec.version,
      expires: spec.expires.toISOString(),
      keys,
      roles: {
        root: { keyids: ids(spec.rootKeys), threshold: spec.rootThreshold },
        bundles: { keyids: ids(spec.bundlesKeys), threshold: spec.bundlesThreshold ?? 1 },
      },
    },
    signatures: [],
  };
}

/** The public half of a secret key in protocol's layout (seed ‖ public key, base64). */
export function publicKeyOf(secretKey: string): string {
  const bytes = Buffer.from(secretKey, 'base64');
  if (bytes.length !== 64) throw new EdgepackError('KEY_INVALID', `a secret key is 64 bytes, this one is ${bytes.length}`);
  return bytes.subarray(32).toString('base64');
}

/**
 * Pure: `root` with a signature by `secretKey` added, replacing an earlier one by the same key.
 * Signatures stay sorted by key id, so signing in any order gives the same bytes.
 */
export function signRoot(root: SignedRoot, secretKey: string): SignedRoot {
  const publicKey = publicKeyOf(secretKey);
  const keyid = keyId(publicKey);
  const sig = signCanonical(root.signed, secretKey);
  // A key file whose halves do not belong together would add a signature nobody can use.
  if (!verifyCanonical(root.signed, sig, publicKey)) throw new EdgepackError('KEY_INVALID', `secret key ${keyid} does not match its own public key`);
  const signatures = [...root.signatures.filter((s) => s.keyid !== keyid), { keyid, sig }].sort((a, b) => (a.keyid < b.keyid ? -1 : a.keyid > b.keyid ? 1 : 0));
  return { signed: root.signed, signatures };
}

/** The file name a root is kept under, on the orchestrator and in `edgepack keys` output. */
export function rootFileName(version: number): string {
  return `root-${version}.json`;
}
