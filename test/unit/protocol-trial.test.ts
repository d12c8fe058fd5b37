// The trial messages of the protocol: a desired state of kind `trial` vouches for every candidate,
// their order, the rounds and the reference; it can never pass for an install, nor an install for
// it; trial reports are the device's word like status reports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  DesiredStateSchema, MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, TRIAL_LIMITS, TrialReportSchema, Validator, generateKeyPair, keyId, signCanonical, signDesired,
  signTrialReport, verifyDesiredSignature, verifyTrialReport, type DesiredState, type Manifest, type TrialReport,
} from '@edgepack/protocol';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function bundle(bundleId: string, precision: Manifest['precision']) {
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId, model: { name: 'm', version: '1', sha256: sha('m') }, profile: 'x86-64-gateway', format: 'onnx', precision,
    files: [{ path: 'model.onnx', role: 'model', sha256: sha(`model ${bundleId}`), length: 5000 }],
    io: { inputs: [], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] },
    acceptance: {}, createdAt: new Date(0).toISOString(), expiresAt: new Date(4e12).toISOString(), keyId: keyId(ORCH.publicKey),
  };
  return { manifest, signature: signCanonical(manifest, ORCH.secretKey) };
}

const fp32 = bundle('bdl_fp32', 'fp32');
const int8 = bundle('bdl_int8', 'int8-static');
const fp16 = bundle('bdl_fp16', 'fp16');

function trial(over: Partial<DesiredState> = {}): DesiredState {
  return signDesired({
    v: PROTOCOL_VERSION, deviceId: 'dev_a', seq: 7, rolloutId: 'rol_t', bundle: fp32, issuedAt: new Date(0).toISOString(),
    kind: 'trial', trial: { candidates: [fp32, int8, fp16], rounds: 3, referenceBundleId: 'bdl_fp32' }, ...over,
  }, ORCH.secretKey);
}

test('a trial desired state parses and verifies; its candidates, their order, the rounds and the reference are all vouched for', () => {
  const d = trial();
  assert.equal(new Validator('desired', DesiredStateSchema).parse(Buffer.from(JSON.stringify(d))).ok, true);
  assert.equal(verifyDesiredSignature(d, ORCH.publicKey), true);
  assert.equal(verifyDesiredSignature({ ...d, trial: { ...d.trial!, candidates: [int8, fp32, fp16] } }, ORCH.publicKey), false, 'reordered');
  assert.equal(verifyDesiredSignature({ ...d, trial: { ...d.trial!, candidates: [fp32, int8] } }, ORCH.publicKey), false, 'one left out');
  assert.equal(verifyDesiredSignature({ ...d, trial: { ...d.trial!, rounds: 1 } }, ORCH.publicKey), false, 'rounds');
  assert.equal(verifyDesiredSignature({ ...d, trial: { ...d.trial!, referenceBundleId: 'bdl_int8' } }, ORCH.publicKey), false, 'reference');
  assert.equal(verifyDesiredSignature(d, DEVICE.publicKey), false, 'another key');
});

test('a trial cannot pass for an install, nor an install for a trial', () => {
  const d = trial();
  const { kind: _k, ...asInstall } = d;
  assert.equal(verifyDesiredSignature(asInstall as DesiredState, ORCH.publicKey), false, 'the trial envelope with its kind dropped');
  const install = signDesired({ v: PROTOCOL_VERSION, deviceId: 'dev_a', seq: 8, rolloutId: 'rol_t', bundle: fp32, issuedAt: new Date(0).toISOString() }, ORCH.secretKey);
  assert.equal(verifyDesiredSignature(install, ORCH.publicKey), true);
  assert.equal(verifyDesiredSignature({ ...install, kind: 'install' }, ORCH.publicKey), true, 'an explicit install is the same install');
  assert.equal(verifyDesiredSignature({ ...install, kind: 'trial', trial: d.trial! }, ORCH.publicKey), false, 'an install relabelled a trial');
  assert.equal(verifyDesiredSignature({ ...install, trial: d.trial! }, ORCH.publicKey), false, 'an install carrying a trial');
  assert.throws(() => signDesired({ v: PROTOCOL_VERSION, deviceId: 'dev_a', seq: 9, rolloutId: 'r', bundle: fp32, issuedAt: '', kind: 'trial' }, ORCH.secretKey));
});

test('the schema bounds a trial: candidates and rounds', () => {
  const v = new Validator('desired', DesiredStateSchema);
  const many = Array.from({ length: TRIAL_LIMITS.maxCandidates + 1 }, () => fp32);
  assert.equal(v.parse(Buffer.from(JSON.stringify({ ...trial(), trial: { candidates: many, rounds: 1, referenceBundleId: 'bdl_fp32' } }))).ok, false);
  assert.equal(v.parse(Buffer.from(JSON.stringify({ ...trial(), trial: { candidates: [fp32], rounds: 0, referenceBundleId: 'bdl_fp32' } }))).ok, false);
  assert.equal(v.parse(Buffer.from(JSON.stringify({ ...trial(), kind: 'benchmark' }))).ok, false);
});

test('a trial report is signed by the device key, under its own prefix', () => {
  const r: Omit<TrialReport, 'signature'> = {
    v: PROTOCOL_VERSION, deviceId: 'dev_a', rolloutId: 'rol_t', seq: 7, state: 'done', at: new Date(0).toISOString(),
    results: [{ bundleId: 'bdl_fp32', precision: 'fp32', agreement: { top1: 1, maxAbsError: 0, samples: 8 } }, { bundleId: 'bdl_int8', precision: 'int8-static', code: 'GOLDEN_MISMATCH', reason: 'x' }],
  };
  const signed = signTrialReport(r, DEVICE.secretKey);
  assert.equal(new Validator('trial report', TrialReportSchema).parse(Buffer.from(JSON.stringify(signed))).ok, true);
  assert.equal(verifyTrialReport(signed, DEVICE.publicKey), true);
  assert.equal(verifyTrialReport({ ...signed, results: signed.results.slice(0, 1) }, DEVICE.publicKey), false);
  assert.equal(verifyTrialReport({ ...r } as TrialReport, DEVICE.publicKey), false, 'unsigned');
  assert.equal(verifyTrialReport(signed, ORCH.publicKey), false);
});
