import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  CREDENTIAL_MAX_AGE_MS,
  CREDENTIAL_MAX_FUTURE_MS,
  MANIFEST_SCHEMA_ID,
  checkDeviceCredential,
  createDeviceCredential,
  createManifestVerifier,
  generateKeyPair,
  keyId,
  modelFile,
  signCanonical,
  verifyCanonical,
  verifyFileIntegrity,
  type Manifest,
} from '@edgepack/protocol';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const NOW = new Date('2026-06-01T12:00:00.000Z');
const KEYS = generateKeyPair();
const OTHER_KEYS = generateKeyPair();
const verify = createManifestVerifier();
const OPTS = { trustedPublicKey: KEYS.publicKey, expectedProfile: 'raspberry-pi-5', now: NOW };

function baseManifest(): Manifest {
  return {
    schema: MANIFEST_SCHEMA_ID,
    bundleId: 'bdl_0123456789abcdef',
    model: { name: 'fashion_cnn', version: '1.0.0', sha256: sha('model') },
    profile: 'raspberry-pi-5',
    format: 'onnx',
    precision: 'fp32',
    layout: 'NCHW',
    files: [
      { path: 'model.onnx', role: 'model', sha256: sha('model'), length: 1234 },
      { path: 'golden.json', role: 'golden', sha256: sha('golden'), length: 99 },
    ],
    io: {
      inputs: [{ name: 'input', type: 'float32', shape: ['batch', 1, 28, 28] }],
      outputs: [{ name: 'logits', type: 'float32', shape: ['batch', 10] }],
    },
    golden: { file: 'golden.json', count: 3, maxAbsError: 1e-3 },
    runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: { p95LatencyMs: 120, warmupRuns: 3, runs: 30 },
    createdAt: '2026-05-01T00:00:00.000Z',
    expiresAt: '2026-07-01T00:00:00.000Z',
    keyId: keyId(KEYS.publicKey),
  };
}

/** Applies `edit` to a fresh manifest and signs the result with `secretKey`. */
function signed(edit: (m: Manifest & Record<string, unknown>) => void = () => {}, secretKey = KEYS.secretKey) {
  const manifest = baseManifest() as Manifest & Record<string, unknown>;
  edit(manifest);
  return { manifest, signature: signCanonical(manifest, secretKey) };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('a correctly signed manifest verifies and is returned as-is', () => {
  const s = signed();
  const out = verify(structuredClone(s), OPTS);
  assert.deepEqual(out, s);
  assert.equal(modelFile(out.manifest).path, 'model.onnx');
  assert.match(keyId(KEYS.publicKey), /^[0-9a-f]{16}$/);
  assert.notEqual(keyId(KEYS.publicKey), keyId(OTHER_KEYS.publicKey));
});

test('a manifest that went through JSON (the wire) still verifies', () => {
  const s = signed();
  assert.deepEqual(verify(JSON.parse(JSON.stringify(s)), OPTS).manifest.bundleId, s.manifest.bundleId);
});

test('tampering with any signed field gives SIGNATURE_INVALID', () => {
  const edits: ((m: Manifest) => void)[] = [
    (m) => { m.precision = 'fp16'; },
    (m) => { m.files[0]!.sha256 = sha('evil'); },
    (m) => { m.files[0]!.length += 1; },
    (m) => { m.golden.maxAbsError = 10; },
    (m) => { m.acceptance.p95LatencyMs = 100000; },
    (m) => { m.expiresAt = '2099-01-01T00:00:00.000Z'; },
    (m) => { m.io.inputs[0]!.shape = [1, 1, 28, 28]; },
    (m) => { delete m.layout; },
  ];
  for (const [i, edit] of edits.entries()) {
    const s = signed();
    edit(s.manifest);
    assert.equal(codeOf(() => verify(s, OPTS)), 'SIGNATURE_INVALID', `edit #${i}`);
  }
});

test('a manifest signed with another key gives SIGNATURE_INVALID', () => {
  const s = signed(() => {}, OTHER_KEYS.secretKey);
  assert.equal(codeOf(() => verify(s, OPTS)), 'SIGNATURE_INVALID');
  // …and verifies when the other key is the trusted one
  assert.doesNotThrow(() => verify(s, { ...OPTS, trustedPublicKey: OTHER_KEYS.publicKey }));
});

test('garbage signatures and garbage trusted keys give SIGNATURE_INVALID, never a crash', () => {
  const s = signed();
  for (const signature of ['x', '!!!not base64!!!', Buffer.alloc(64).toString('base64'), s.signature.slice(0, -4)]) {
    assert.equal(codeOf(() => verify({ ...s, signature }, OPTS)), 'SIGNATURE_INVALID', signature);
  }
  assert.equal(codeOf(() => verify(s, { ...OPTS, trustedPublicKey: 'short' })), 'SIGNATURE_INVALID');
});

test('the signature is checked before expiry and profile are believed', () => {
  // Expired and for another profile, but tampered: the signature failure must win.
  const s = signed((m) => { m.expiresAt = '2000-01-01T00:00:00.000Z'; m.profile = 'esp32-s3'; });
  s.manifest.bundleId = 'bdl_tampered';
  assert.equal(codeOf(() => verify(s, OPTS)), 'SIGNATURE_INVALID');
});

test('an expired manifest gives MANIFEST_EXPIRED (expiry instant itself counts as expired)', () => {
  const past = signed((m) => { m.expiresAt = '2026-05-31T12:00:00.000Z'; });
  assert.equal(codeOf(() => verify(past, OPTS)), 'MANIFEST_EXPIRED');
  const exact = signed((m) => { m.expiresAt = NOW.toISOString(); });
  assert.equal(codeOf(() => verify(exact, OPTS)), 'MANIFEST_EXPIRED');
  const oneMsLater = signed((m) => { m.expiresAt = new Date(NOW.getTime() + 1).toISOString(); });
  assert.doesNotThrow(() => verify(oneMsLater, OPTS));
});

test('a signed expiresAt that is not a date gives MANIFEST_INVALID, not a pass', () => {
  const s = signed((m) => { m.expiresAt = 'never'; });
  assert.equal(codeOf(() => verify(s, OPTS)), 'MANIFEST_INVALID');
});

test('a manifest for another profile gives PROFILE_MISMATCH', () => {
  const s = signed((m) => { m.profile = 'raspberry-pi-4'; });
  assert.equal(codeOf(() => verify(s, OPTS)), 'PROFILE_MISMATCH');
  assert.doesNotThrow(() => verify(s, { ...OPTS, expectedProfile: 'raspberry-pi-4' }));
});

test('malformed envelopes give MANIFEST_INVALID', () => {
  const s = signed();
  const cases: unknown[] = [
    null, 42, 'manifest', [], {},
    { manifest: s.manifest },
    { signature: s.signature },
    { manifest: s.manifest, signature: '' },
    { manifest: s.manifest, signature: 7 },
  ];
  for (const c of cases) assert.equal(codeOf(() => verify(c, OPTS)), 'MANIFEST_INVALID', JSON.stringify(c)?.slice(0, 80));
});

test('a missing or mistyped required field gives MANIFEST_INVALID even when signed', () => {
  const edits: ((m: Record<string, unknown> & Manifest) => void)[] = [
    (m) => { delete (m as Partial<Manifest>).files; },
    (m) => { delete (m as Partial<Manifest>).golden; },
    (m) => { delete (m as Partial<Manifest>).expiresAt; },
    (m) => { m.schema = 'edgepack.bundle/2' as typeof MANIFEST_SCHEMA_ID; },
    (m) => { m.format = 'pt' as 'onnx'; },
    (m) => { m.precision = 'int4' as 'fp32'; },
    (m) => { m.files = []; },
    (m) => { m.files[0]!.sha256 = 'ABC'; },
    (m) => { m.files[0]!.length = -1; },
    (m) => { m.files[0]!.length = 1.5; },
    (m) => { m.files[0]!.role = 'script' as 'model'; },
    (m) => { m.bundleId = ''; },
  ];
  for (const [i, edit] of edits.entries()) {
    const s = signed(edit);
    assert.equal(codeOf(() => verify(s, OPTS)), 'MANIFEST_INVALID', `edit #${i}`);
  }
});

test('file paths that could leave the bundle directory give MANIFEST_INVALID', () => {
  for (const bad of ['../x', '..', '.', 'a/b', '/etc/passwd', '..\\x', 'sub/../../x', '', 'x'.repeat(129), 'mod el.onnx', 'modèle.onnx']) {
    const s = signed((m) => { m.files.push({ path: bad, role: 'other', sha256: sha('o'), length: 1 }); });
    assert.equal(codeOf(() => verify(s, OPTS)), 'MANIFEST_INVALID', `file path ${JSON.stringify(bad)}`);
    const g = signed((m) => { m.golden.file = bad; });
    assert.equal(codeOf(() => verify(g, OPTS)), 'MANIFEST_INVALID', `golden path ${JSON.stringify(bad)}`);
  }
  // names that merely contain dots are fine
  const ok = signed((m) => { m.files.push({ path: '..notes.txt', role: 'other', sha256: sha('o'), length: 1 }); });
  assert.doesNotThrow(() => verify(ok, OPTS));
});

test('a file listed twice gives MANIFEST_INVALID', () => {
  const s = signed((m) => { m.files.push({ path: 'golden.json', role: 'other', sha256: sha('x'), length: 5 }); });
  assert.equal(codeOf(() => verify(s, OPTS)), 'MANIFEST_INVALID');
});

test('a bundle must have exactly one model file', () => {
  const none = signed((m) => { m.files[0]!.role = 'other'; });
  assert.equal(codeOf(() => verify(none, OPTS)), 'MANIFEST_INVALID');
  const two = signed((m) => { m.files.push({ path: 'model2.onnx', role: 'model', sha256: sha('m2'), length: 5 }); });
  assert.equal(codeOf(() => verify(two, OPTS)), 'MANIFEST_INVALID');
});

test('a golden file that is not among the bundle files gives MANIFEST_INVALID', () => {
  const s = signed((m) => { m.golden.file = 'missing.json'; });
  assert.equal(codeOf(() => verify(s, OPTS)), 'MANIFEST_INVALID');
});

test('unknown extra fields are tolerated when signed, and covered by the signature', () => {
  const s = signed((m) => { m.futureField = { nested: [1, 2, 3] }; m.io.inputs[0] = { ...m.io.inputs[0]!, quant: 'x' } as never; });
  const out = verify(s, OPTS);
  assert.deepEqual((out.manifest as unknown as Record<string, unknown>).futureField, { nested: [1, 2, 3] });

  // Adding a field after signing breaks the signature …
  const added = signed();
  (added.manifest as unknown as Record<string, unknown>).injected = true;
  assert.equal(codeOf(() => verify(added, OPTS)), 'SIGNATURE_INVALID');
  // … also deep inside …
  const deep = signed();
  (deep.manifest.files[1] as unknown as Record<string, unknown>).executable = true;
  assert.equal(codeOf(() => verify(deep, OPTS)), 'SIGNATURE_INVALID');
  // … and removing a signed extra field breaks it too.
  const removed = signed((m) => { m.extra = 'x'; });
  delete (removed.manifest as unknown as Record<string, unknown>).extra;
  assert.equal(codeOf(() => verify(removed, OPTS)), 'SIGNATURE_INVALID');
});

test('an extra field that canonical JSON cannot hold is refused, not a crash', () => {
  const s = signed();
  (s.manifest as unknown as Record<string, unknown>).bad = NaN;
  assert.equal(codeOf(() => verify(s, OPTS)), 'SIGNATURE_INVALID');
  assert.equal(verifyCanonical({ a: NaN }, s.signature, KEYS.publicKey), false);
});

test('verifyFileIntegrity: match passes; length is checked before hash; each has its own code', () => {
  const entry = { path: 'model.onnx', role: 'model' as const, sha256: sha('model'), length: 1234 };
  assert.doesNotThrow(() => verifyFileIntegrity(entry, { length: 1234, sha256: sha('model') }));
  assert.equal(codeOf(() => verifyFileIntegrity(entry, { length: 1233, sha256: sha('model') })), 'FILE_LENGTH_MISMATCH');
  assert.equal(codeOf(() => verifyFileIntegrity(entry, { length: 1235, sha256: sha('other') })), 'FILE_LENGTH_MISMATCH');
  assert.equal(codeOf(() => verifyFileIntegrity(entry, { length: 1234, sha256: sha('other') })), 'FILE_HASH_MISMATCH');
  // hashes are compared exactly (uppercase hex is a different string)
  assert.equal(codeOf(() => verifyFileIntegrity(entry, { length: 1234, sha256: sha('model').toUpperCase() })), 'FILE_HASH_MISMATCH');
});

// --- device credentials ---

const DEV = generateKeyPair();

test('device credential: a fresh credential verifies', () => {
  const cred = createDeviceCredential('dev_abc', DEV.secretKey, NOW);
  assert.match(cred, /^\d+\..+$/);
  assert.deepEqual(checkDeviceCredential('dev_abc', cred, DEV.publicKey, NOW), { ok: true, issuedAtMs: NOW.getTime() });
  // within the window: up to MAX_AGE old, up to MAX_FUTURE ahead of the server clock
  assert.equal(checkDeviceCredential('dev_abc', cred, DEV.publicKey, new Date(NOW.getTime() + CREDENTIAL_MAX_AGE_MS)).ok, true);
  assert.equal(checkDeviceCredential('dev_abc', cred, DEV.publicKey, new Date(NOW.getTime() - CREDENTIAL_MAX_FUTURE_MS)).ok, true);
});

test('device credential: one minted for MQTT does not open HTTP, and the reverse', () => {
  const mqttCred = createDeviceCredential('dev_abc', DEV.secretKey, NOW, 'mqtt');
  const httpCred = createDeviceCredential('dev_abc', DEV.secretKey, NOW, 'http');
  assert.equal(checkDeviceCredential('dev_abc', mqttCred, DEV.publicKey, NOW, 'mqtt').ok, true);
  assert.equal(checkDeviceCredential('dev_abc', httpCred, DEV.publicKey, NOW, 'http').ok, true);
  const crossed = checkDeviceCredential('dev_abc', mqttCred, DEV.publicKey, NOW, 'http');
  assert.equal(crossed.ok ? 'ok' : crossed.code, 'CREDENTIAL_INVALID');
  const back = checkDeviceCredential('dev_abc', httpCred, DEV.publicKey, NOW, 'mqtt');
  assert.equal(back.ok ? 'ok' : back.code, 'CREDENTIAL_INVALID');
});

test('device credential: older or newer than the skew window is CREDENTIAL_STALE', () => {
  const cred = createDeviceCredential('dev_abc', DEV.secretKey, NOW);
  const late = checkDeviceCredential('dev_abc', cred, DEV.publicKey, new Date(NOW.getTime() + CREDENTIAL_MAX_AGE_MS + 1));
  const early = checkDeviceCredential('dev_abc', cred, DEV.publicKey, new Date(NOW.getTime() - CREDENTIAL_MAX_FUTURE_MS - 1));
  assert.equal(late.ok ? 'ok' : late.code, 'CREDENTIAL_STALE');
  assert.equal(early.ok ? 'ok' : early.code, 'CREDENTIAL_STALE');
});

test('device credential: wrong key, other device id, or edited timestamp is CREDENTIAL_INVALID', () => {
  const cred = createDeviceCredential('dev_abc', DEV.secretKey, NOW);
  const wrongKey = checkDeviceCredential('dev_abc', cred, OTHER_KEYS.publicKey, NOW);
  assert.equal(wrongKey.ok ? 'ok' : wrongKey.code, 'CREDENTIAL_INVALID');
  const otherDevice = checkDeviceCredential('dev_xyz', cred, DEV.publicKey, NOW);
  assert.equal(otherDevice.ok ? 'ok' : otherDevice.code, 'CREDENTIAL_INVALID');
  const [, sig] = cred.split('.', 2) as [string, string];
  const shifted = checkDeviceCredential('dev_abc', `${NOW.getTime() + 1000}.${sig}`, DEV.publicKey, NOW);
  assert.equal(shifted.ok ? 'ok' : shifted.code, 'CREDENTIAL_INVALID');
  const garbageSig = checkDeviceCredential('dev_abc', `${NOW.getTime()}.not-a-signature`, DEV.publicKey, NOW);
  assert.equal(garbageSig.ok ? 'ok' : garbageSig.code, 'CREDENTIAL_INVALID');
});

test('device credential: malformed strings are CREDENTIAL_MALFORMED', () => {
  for (const bad of ['', 'abc', '.sig', '12345', 'abc.sig', `${NOW.getTime()}x.sig`, `${2 ** 60}.sig`]) {
    const r = checkDeviceCredential('dev_abc', bad, DEV.publicKey, NOW);
    assert.equal(r.ok ? 'ok' : r.code, 'CREDENTIAL_MALFORMED', JSON.stringify(bad));
  }
});
