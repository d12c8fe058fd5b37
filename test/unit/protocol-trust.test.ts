// The trust verifier, pure: real ed25519 keys and signatures, a fixed clock, no IO. One test
// (or a few) per rule, and per item of TUF's attack list (§1.5.2) that applies to edgepack.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, ERROR_CATALOGUE, TRUST_ERROR_CODES, TRUST_LIMITS, TrustVerifier, canonicalJson, createRoot, generateKeyPair, keyId,
  pinnedKeyRoot, signCanonical, signDesired, signRoot, verifyFileIntegrity,
  type DesiredState, type KeyPair, type Manifest, type SignedManifest, type SignedRoot,
} from '@edgepack/protocol';
import { repoRoot } from '../support/paths.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const LATER = new Date('2027-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const PROFILE = 'raspberry-pi-5';
const v = new TrustVerifier();
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const ROOT_KEYS = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const NEW_ROOT_KEYS = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const ONLINE = generateKeyPair();
const ONLINE2 = generateKeyPair();
const STRANGER = generateKeyPair();

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

function root(o: { version: number; rootKeys?: KeyPair[]; threshold?: number; online?: KeyPair[]; expires?: Date }): SignedRoot {
  return createRoot({
    version: o.version, expires: o.expires ?? new Date(NOW.getTime() + 365 * DAY),
    rootKeys: (o.rootKeys ?? ROOT_KEYS).map((k) => k.publicKey), rootThreshold: o.threshold ?? 2,
    bundlesKeys: (o.online ?? [ONLINE]).map((k) => k.publicKey),
  });
}

const signWith = (r: SignedRoot, ...keys: KeyPair[]) => keys.reduce((acc, k) => signRoot(acc, k.secretKey), r);

/** The chain a real fleet would see: v1 (online ONLINE), v2 rotates the online key, v3 rotates the root keys. */
function chain() {
  const v1 = signWith(root({ version: 1 }), ROOT_KEYS[0], ROOT_KEYS[1]);
  const v2 = signWith(root({ version: 2, online: [ONLINE2] }), ROOT_KEYS[0], ROOT_KEYS[2]);
  const v3 = signWith(root({ version: 3, online: [ONLINE2], rootKeys: NEW_ROOT_KEYS }), ROOT_KEYS[1], ROOT_KEYS[2], NEW_ROOT_KEYS[0], NEW_ROOT_KEYS[1]);
  return { v1, v2, v3 };
}

function manifest(signer: KeyPair, edit: (m: Manifest) => void = () => {}): SignedManifest {
  const m: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: 'bdl_trust', model: { name: 'm', version: '1', sha256: sha('model') }, profile: PROFILE,
    format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: sha('model'), length: 1234 }, { path: 'golden.json', role: 'golden', sha256: sha('golden'), length: 99 }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: {}, createdAt: new Date(NOW.getTime() - DAY).toISOString(), expiresAt: new Date(NOW.getTime() + 30 * DAY).toISOString(),
    keyId: keyId(signer.publicKey),
  };
  edit(m);
  return { manifest: m, signature: signCanonical(m, signer.secretKey) };
}

function desired(signer: KeyPair, bundle: SignedManifest, seq = 1): DesiredState {
  return signDesired({ v: PROTOCOL_VERSION, deviceId: 'dev_1', seq, rolloutId: 'rol_1', bundle, issuedAt: NOW.toISOString() }, signer.secretKey);
}

// ------------------------------------------------------------------ format and signing

test('root metadata is deterministic: the same keys signing in any order give the same bytes, and re-signing replaces', () => {
  const r = root({ version: 1 });
  const a = signWith(r, ROOT_KEYS[0], ROOT_KEYS[1]);
  const b = signWith(r, ROOT_KEYS[1], ROOT_KEYS[0], ROOT_KEYS[1]);
  assert.equal(canonicalJson(a), canonicalJson(b));
  assert.equal(b.signatures.length, 2);
  assert.equal(r.signed.type, 'root');
  assert.deepEqual(Object.keys(r.signed.keys).sort(), [...ROOT_KEYS, ONLINE].map((k) => keyId(k.publicKey)).sort());
  assert.equal(r.signed.roles.bundles.threshold, 1);
});

test('a key file whose secret and public halves do not belong together cannot sign', () => {
  const bad = Buffer.concat([Buffer.from(ROOT_KEYS[0].secretKey, 'base64').subarray(0, 32), Buffer.from(ROOT_KEYS[1].publicKey, 'base64')]).toString('base64');
  assert.equal(codeOf(() => signRoot(root({ version: 1 }), bad)), 'KEY_INVALID');
});

test('the trust error list is exactly the codes the trust code raises, ready for the error catalogue', async () => {
  const files = ['protocol/src/trust-metadata.ts', 'protocol/src/trust-verify.ts', 'orchestrator/src/trust-chain.ts', 'orchestrator/src/commands/keys.ts'];
  const raised = new Set<string>();
  for (const f of files) {
    const text = await readFile(join(repoRoot(), f), 'utf8');
    for (const m of text.matchAll(/(?:EdgepackError\(|super\()'([A-Z][A-Z0-9_]+)'/g)) raised.add(m[1]!);
  }
  assert.deepEqual([...raised].sort(), [...TRUST_ERROR_CODES].sort());
  for (const code of TRUST_ERROR_CODES) assert.ok(ERROR_CATALOGUE[code].meaning.length > 10, code);
});

// ------------------------------------------------------------------ thresholds

test('the initial root must carry a threshold of its own root keys', () => {
  const { v1 } = chain();
  assert.equal(v.verifyInitialRoot(structuredClone(v1)).signed.version, 1);
  assert.equal(codeOf(() => v.verifyInitialRoot(signWith(root({ version: 1 }), ROOT_KEYS[0]))), 'ROOT_THRESHOLD_NOT_MET');
  assert.equal(codeOf(() => v.verifyInitialRoot(root({ version: 1 }))), 'ROOT_THRESHOLD_NOT_MET');
});

test('key compromise below the threshold: one stolen root key signing twice still counts once', () => {
  const { v1 } = chain();
  // The attacker holds ROOT_KEYS[0] and wants the fleet to trust their own online key.
  const evil = signWith(root({ version: 2, online: [STRANGER] }), ROOT_KEYS[0]);
  const doubled: SignedRoot = { ...evil, signatures: [evil.signatures[0], evil.signatures[0], { ...evil.signatures[0] }] };
  const err = (() => { try { v.updateRoot(v1, doubled); } catch (e) { return e as { code: string; details: { valid: number; threshold: number; by: string } }; } })();
  assert.equal(err?.code, 'ROOT_THRESHOLD_NOT_MET');
  assert.deepEqual([err?.details.valid, err?.details.threshold, err?.details.by], [1, 2, 'trusted']);
  // And bundles signed by the attacker's key stay refused: the fleet's root did not move.
  const walk = v.walkChain(v1, [doubled]);
  assert.equal(walk.root.signed.version, 1);
  assert.equal(codeOf(() => v.verifyBundle(walk.root, manifest(STRANGER), { expectedProfile: PROFILE, now: NOW })), 'BUNDLE_KEY_NOT_DELEGATED');
});

test('signatures by keys the role does not list are ignored, valid or not; bad signatures by listed keys do not count', () => {
  const { v1 } = chain();
  const r2 = root({ version: 2 });
  // One genuine root-key signature, plus valid signatures by the online key and a stranger, plus garbage under a listed key id.
  const withNoise = signWith(r2, ROOT_KEYS[0], ONLINE, STRANGER);
  const forged = { keyid: keyId(ROOT_KEYS[1].publicKey), sig: signCanonical({ something: 'else' }, ROOT_KEYS[1].secretKey) };
  assert.equal(codeOf(() => v.updateRoot(v1, { ...withNoise, signatures: [...withNoise.signatures, forged, { keyid: 'ffffffffffffffff', sig: 'AAAA' }] })), 'ROOT_THRESHOLD_NOT_MET');
  // With a second genuine root key it passes, noise and all.
  const ok = signWith(withNoise, ROOT_KEYS[1]);
  assert.equal(v.updateRoot(v1, { ...ok, signatures: [...ok.signatures, { keyid: 'ffffffffffffffff', sig: 'AAAA' }] }).signed.version, 2);
});

test('the online key cannot sign a root: it holds the bundles role, not the root role', () => {
  const { v1 } = chain();
  const r2 = signWith(root({ version: 2, threshold: 1, rootKeys: [ONLINE], online: [STRANGER] }), ONLINE);
  assert.equal(codeOf(() => v.updateRoot(v1, r2)), 'ROOT_THRESHOLD_NOT_MET');
});

// ------------------------------------------------------------------ malformed and endless data

test('malformed roots are refused with ROOT_INVALID, each for its own reason', () => {
  const base = root({ version: 1 });
  const cases: [string, (r: any) => void][] = [
    ['wrong type', (r) => { r.signed.type = 'targets'; }],
    ['wrong spec', (r) => { r.signed.spec = 'edgepack.trust/9'; }],
    ['version 0', (r) => { r.signed.version = 0; }],
    ['fractional version', (r) => { r.signed.version = 1.5; }],
    ['expires not a date', (r) => { r.signed.expires = 'soon'; }],
    ['key id not derived from its key', (r) => { const id = keyId(ROOT_KEYS[0].publicKey); r.signed.keys[id] = { keytype: 'ed25519', public: STRANGER.publicKey }; }],
    ['role names an unlisted key', (r) => { r.signed.roles.root.keyids.push('0123456789abcdef'); }],
    ['threshold above the number of keys', (r) => { r.signed.roles.root.threshold = 4; }],
    ['threshold zero', (r) => { r.signed.roles.root.threshold = 0; }],
    ['duplicate key id in a role', (r) => { r.signed.roles.root.keyids.push(r.signed.roles.root.keyids[0]); }],
    ['bundles threshold 2', (r) => { r.signed.roles.bundles = { keyids: r.signed.roles.root.keyids.slice(0, 2), threshold: 2 }; }],
    ['missing bundles role', (r) => { delete r.signed.roles.bundles; }],
    ['non-canonical base64 key', (r) => {
      const id = keyId(ONLINE.publicKey);
      const pub = ONLINE.publicKey;
      const last = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
      // Flip the two spare bits of the last character: same key bytes, different text.
      const i = last.indexOf(pub[42]!);
      r.signed.keys[id].public = pub.slice(0, 42) + last[i ^ 1] + '=';
    }],
    ['signatures not a list', (r) => { r.signatures = {}; }],
  ];
  for (const [what, edit] of cases) {
    const r = structuredClone(base) as any;
    edit(r);
    assert.equal(codeOf(() => v.parseRoot(r)), 'ROOT_INVALID', what);
  }
  assert.equal(codeOf(() => v.parseRoot('{not json')), 'ROOT_INVALID');
  assert.equal(codeOf(() => v.parseRoot(null)), 'ROOT_INVALID');
});

test('endless data: oversized root metadata and over-long chains are refused before they are read', () => {
  const huge = 'x'.repeat(TRUST_LIMITS.maxRootBytes + 1);
  // Not even JSON, yet TOO_LARGE and not INVALID: the size is checked first.
  assert.equal(codeOf(() => v.parseRoot(huge)), 'TRUST_METADATA_TOO_LARGE');
  assert.equal(codeOf(() => v.parseRoot(Buffer.from(huge))), 'TRUST_METADATA_TOO_LARGE');
  const padded = { ...root({ version: 2 }), padding: huge };
  assert.equal(codeOf(() => v.parseRoot(padded)), 'TRUST_METADATA_TOO_LARGE');
  const { v1 } = chain();
  const walk = v.walkChain(v1, Array.from({ length: TRUST_LIMITS.maxChainLength + 1 }, () => ({})));
  assert.equal(walk.error?.code, 'TRUST_CHAIN_TOO_LONG');
  assert.equal(walk.root, v1);
});

// ------------------------------------------------------------------ rotation, rollback, walking

test('rotating the online key: v2 signed by the root threshold delegates to the new key; the old one is refused from then on', () => {
  const { v1, v2 } = chain();
  const opts = { expectedProfile: PROFILE, now: NOW };
  assert.equal(v.verifyBundle(v1, manifest(ONLINE), opts).manifest.keyId, keyId(ONLINE.publicKey));
  assert.equal(codeOf(() => v.verifyBundle(v1, manifest(ONLINE2), opts)), 'BUNDLE_KEY_NOT_DELEGATED');
  const t2 = v.updateRoot(v1, v2);
  assert.equal(v.verifyBundle(t2, manifest(ONLINE2), opts).manifest.keyId, keyId(ONLINE2.publicKey));
  assert.equal(codeOf(() => v.verifyBundle(t2, manifest(ONLINE), opts)), 'BUNDLE_KEY_NOT_DELEGATED');
  assert.equal(v.verifyDesired(t2, desired(ONLINE2, manifest(ONLINE2)), NOW), keyId(ONLINE2.publicKey));
  assert.equal(codeOf(() => v.verifyDesired(t2, desired(ONLINE, manifest(ONLINE2)), NOW)), 'DESIRED_SIGNATURE_INVALID');
});

test('rotating the root keys: the new root needs the old threshold and its own', () => {
  const { v1, v2 } = chain();
  const t2 = v.updateRoot(v1, v2);
  const r3 = root({ version: 3, online: [ONLINE2], rootKeys: NEW_ROOT_KEYS });
  assert.equal(codeOf(() => v.updateRoot(t2, signWith(r3, NEW_ROOT_KEYS[0], NEW_ROOT_KEYS[1], NEW_ROOT_KEYS[2]))), 'ROOT_THRESHOLD_NOT_MET', 'only the new keys');
  const onlyOld = (() => { try { v.updateRoot(t2, signWith(r3, ROOT_KEYS[0], ROOT_KEYS[1])); } catch (e) { return e as { code: string; details: { by: string } }; } })();
  assert.equal(onlyOld?.code, 'ROOT_THRESHOLD_NOT_MET');
  assert.equal(onlyOld?.details.by, 'self', 'only the old keys: the new keys must prove they are held');
  const t3 = v.updateRoot(t2, signWith(r3, ROOT_KEYS[0], ROOT_KEYS[1], NEW_ROOT_KEYS[1], NEW_ROOT_KEYS[2]));
  assert.deepEqual(t3.signed.roles.root.keyids, NEW_ROOT_KEYS.map((k) => keyId(k.publicKey)).sort());
  // From v3 on, the old root keys alone sign nothing that counts.
  assert.equal(codeOf(() => v.updateRoot(t3, signWith(root({ version: 4, online: [STRANGER] }), ...ROOT_KEYS))), 'ROOT_THRESHOLD_NOT_MET');
});

test('rollback: a root older than, or as old as, the trusted one is refused; a skipped version too', () => {
  const { v1, v2 } = chain();
  const t2 = v.updateRoot(v1, v2);
  assert.equal(codeOf(() => v.updateRoot(t2, v1)), 'ROOT_ROLLBACK');
  const sibling = signWith(root({ version: 2, online: [STRANGER] }), ...ROOT_KEYS);
  assert.equal(codeOf(() => v.updateRoot(t2, sibling)), 'ROOT_ROLLBACK');
  const v3 = signWith(root({ version: 3 }), ...ROOT_KEYS);
  assert.equal(codeOf(() => v.updateRoot(v1, v3)), 'ROOT_VERSION_GAP');
  // A walk never goes down either: a chain of older roots leaves the trusted one in place.
  const walk = v.walkChain(t2, [v1, sibling]);
  assert.deepEqual([walk.root.signed.version, walk.walked, walk.error], [2, [], undefined]);
  assert.equal(walk.root.signed.roles.bundles.keyids[0], keyId(ONLINE2.publicKey));
});

test('a device offline for two versions walks v1 → v2 → v3 from a chain in any order, and keeps the highest', () => {
  const { v1, v2, v3 } = chain();
  const walk = v.walkChain(v1, [v3, v1, v2]);
  assert.deepEqual(walk.walked, [2, 3]);
  assert.equal(walk.error, undefined);
  assert.equal(walk.root.signed.version, 3);
  // Skipping v2 is not allowed: v3's signatures by old keys only count through v2.
  const gap = v.walkChain(v1, [v1, v3]);
  assert.equal(gap.error?.code, 'ROOT_VERSION_GAP');
  assert.equal(gap.root.signed.version, 1);
});

test('a walk keeps every version it verified before a bad one, and a forged sibling cannot block the genuine root', () => {
  const { v1, v2, v3 } = chain();
  const badV3 = signWith(root({ version: 3, online: [STRANGER] }), ROOT_KEYS[0]);
  const stopped = v.walkChain(v1, [v1, v2, badV3]);
  assert.deepEqual([stopped.root.signed.version, stopped.walked, stopped.error?.code], [2, [2], 'ROOT_THRESHOLD_NOT_MET']);
  const forgedV2 = signWith(root({ version: 2, online: [STRANGER] }), STRANGER);
  const walk = v.walkChain(v1, [forgedV2, v2, v3]);
  assert.deepEqual([walk.root.signed.version, walk.error], [3, undefined]);
  assert.equal(walk.root.signed.roles.bundles.keyids[0], keyId(ONLINE2.publicKey));
});

// ------------------------------------------------------------------ freeze

test('indefinite freeze: an expired trusted root vouches for nothing; expired intermediate roots may be walked through', () => {
  const expiringV1 = signWith(root({ version: 1, expires: new Date(NOW.getTime() + DAY) }), ...ROOT_KEYS);
  const opts = { expectedProfile: PROFILE, now: LATER };
  assert.equal(codeOf(() => v.verifyBundle(expiringV1, manifest(ONLINE, (m) => { m.expiresAt = new Date(LATER.getTime() + DAY).toISOString(); }), opts)), 'ROOT_EXPIRED');
  assert.equal(codeOf(() => v.verifyDesired(expiringV1, desired(ONLINE, manifest(ONLINE)), LATER)), 'ROOT_EXPIRED');
  // Exactly at the expiry instant it is expired; a millisecond before it is not.
  const at = new Date(expiringV1.signed.expires);
  assert.equal(codeOf(() => v.checkFresh(expiringV1, at)), 'ROOT_EXPIRED');
  assert.equal(codeOf(() => v.checkFresh(expiringV1, new Date(at.getTime() - 1))), undefined);
  // A device that slept past v1's expiry still walks to a fresh v2 and works again.
  const v2 = signWith(root({ version: 2, expires: new Date(LATER.getTime() + 30 * DAY) }), ROOT_KEYS[0], ROOT_KEYS[1]);
  const walk = v.walkChain(expiringV1, [v2]);
  assert.equal(walk.root.signed.version, 2);
  v.checkFresh(walk.root, LATER);
  // An expired manifest under a fresh root is refused too.
  assert.equal(codeOf(() => v.verifyBundle(walk.root, manifest(ONLINE), opts)), 'MANIFEST_EXPIRED');
});

// ------------------------------------------------------------------ bundles and desired states

test('arbitrary software: a bundle signed by a key the root never delegated to is refused, even by a root key', () => {
  const { v1 } = chain();
  const opts = { expectedProfile: PROFILE, now: NOW };
  assert.equal(codeOf(() => v.verifyBundle(v1, manifest(STRANGER), opts)), 'BUNDLE_KEY_NOT_DELEGATED');
  assert.equal(codeOf(() => v.verifyBundle(v1, manifest(ROOT_KEYS[0]), opts)), 'BUNDLE_KEY_NOT_DELEGATED', 'root keys sign roots, not bundles');
  // Claiming the delegated key id does not help a stranger's signature.
  assert.equal(codeOf(() => v.verifyBundle(v1, manifest(STRANGER, (m) => { m.keyId = keyId(ONLINE.publicKey); }), opts)), 'SIGNATURE_INVALID');
  assert.equal(codeOf(() => v.verifyBundle(v1, { manifest: { bundleId: 'x' }, signature: 'x' }, opts)), 'MANIFEST_INVALID');
});

test('extraneous dependencies: a file added to a signed manifest breaks its signature; only listed files have a place', () => {
  const { v1 } = chain();
  const good = manifest(ONLINE);
  const extra = structuredClone(good);
  extra.manifest.files.push({ path: 'postinstall.sh', role: 'other', sha256: sha('evil'), length: 10 });
  assert.equal(codeOf(() => v.verifyBundle(v1, extra, { expectedProfile: PROFILE, now: NOW })), 'SIGNATURE_INVALID');
  const swapped = structuredClone(good);
  swapped.manifest.files[1] = { path: 'golden.json', role: 'golden', sha256: sha('other golden'), length: 99 };
  assert.equal(codeOf(() => v.verifyBundle(v1, swapped, { expectedProfile: PROFILE, now: NOW })), 'SIGNATURE_INVALID');
});

test('malicious mirror: bytes from a tampered blob store do not match the hashes the signed manifest pins', () => {
  const { v1 } = chain();
  const m = v.verifyBundle(v1, manifest(ONLINE), { expectedProfile: PROFILE, now: NOW }).manifest;
  const model = m.files[0]!;
  verifyFileIntegrity(model, { length: 1234, sha256: sha('model') });
  assert.equal(codeOf(() => verifyFileIntegrity(model, { length: 1234, sha256: sha('model, tampered') })), 'FILE_HASH_MISMATCH');
  assert.equal(codeOf(() => verifyFileIntegrity(model, { length: 1235, sha256: sha('model') })), 'FILE_LENGTH_MISMATCH');
});

test('mix-and-match: a genuine envelope cannot carry another genuine manifest, nor one signed under another root', () => {
  const { v1, v2 } = chain();
  const t2 = v.updateRoot(v1, v2);
  const a = manifest(ONLINE2);
  const b = manifest(ONLINE2, (m) => { m.bundleId = 'bdl_other'; });
  const sameIdOtherContent = manifest(ONLINE2, (m) => { m.acceptance = { p95LatencyMs: 1e9 }; });
  const d = desired(ONLINE2, a);
  assert.equal(v.verifyDesired(t2, d, NOW), keyId(ONLINE2.publicKey));
  assert.equal(codeOf(() => v.verifyDesired(t2, { ...d, bundle: b }, NOW)), 'DESIRED_SIGNATURE_INVALID');
  assert.equal(codeOf(() => v.verifyDesired(t2, { ...d, bundle: sameIdOtherContent }, NOW)), 'DESIRED_SIGNATURE_INVALID');
  assert.equal(codeOf(() => v.verifyDesired(t2, { ...d, seq: d.seq + 1 }, NOW)), 'DESIRED_SIGNATURE_INVALID');
  // A current envelope around a manifest from the revoked delegation: the envelope passes, the bundle does not.
  const old = desired(ONLINE2, manifest(ONLINE));
  v.verifyDesired(t2, old, NOW);
  assert.equal(codeOf(() => v.verifyBundle(t2, old.bundle, { expectedProfile: PROFILE, now: NOW })), 'BUNDLE_KEY_NOT_DELEGATED');
  // A manifest signed by the online key of an unrelated root (another orchestrator's fleet).
  const otherFleetOnline = generateKeyPair();
  assert.equal(codeOf(() => v.verifyBundle(t2, manifest(otherFleetOnline), { expectedProfile: PROFILE, now: NOW })), 'BUNDLE_KEY_NOT_DELEGATED');
});

// ------------------------------------------------------------------ devices enrolled before roots existed

test('a pinned-key device verifies as before, and moves to a real root only if the pinned key vouches for version 1', () => {
  const pinned = pinnedKeyRoot(ONLINE.publicKey);
  assert.equal(v.verifyDesired(pinned, desired(ONLINE, manifest(ONLINE)), LATER), keyId(ONLINE.publicKey));
  assert.equal(codeOf(() => v.verifyBundle(pinned, manifest(STRANGER), { expectedProfile: PROFILE, now: NOW })), 'BUNDLE_KEY_NOT_DELEGATED');
  const { v1, v2 } = chain();
  // Without the pinned key's signature a root, however well signed by its own keys, is not adopted.
  const unvouched = v.walkChain(pinned, [v1, v2]);
  assert.deepEqual([unvouched.root.signed.version, unvouched.error?.code], [0, 'ROOT_THRESHOLD_NOT_MET']);
  const walk = v.walkChain(pinned, [signWith(v1, ONLINE), v2]);
  assert.deepEqual([walk.root.signed.version, walk.error], [2, undefined]);
  // The pinned-key root is never accepted from the wire.
  assert.equal(codeOf(() => v.parseRoot(pinned)), 'ROOT_INVALID');
});
